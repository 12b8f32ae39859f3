"""Train the FER2013 expression classifier used by the emotion-agreement metric.

``streamanon train emotion --data fer2013_48.npz --out emotion_fer2013.pt``

Designed for a CPU: a compact VGG-style net (:class:`streamanon.metrics.emotion.EmotionNet`)
on 40x40 crops, all augmentation done as one batched ``grid_sample`` (crop, shift, rotate,
scale, mirror) plus brightness/contrast jitter and random erasing, AdamW with a OneCycle
schedule, bfloat16 autocast where the CPU supports it, and ten-crop test-time averaging.
The data never leaves memory (FER2013 is 80 MB as uint8).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class EmotionTrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int = 30
    batch_size: int = 128
    max_lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    width: int = 32
    dropout: float = 0.4
    max_rotation_deg: float = 12.0
    max_scale: float = 0.12  # zoom factor drawn from 1 +- this
    max_shift_px: float = 4.0
    erase_prob: float = 0.3
    bf16: bool = True  # bfloat16 autocast (about 2x faster on CPUs with AVX512-BF16/AMX)
    threads: int = 2
    seed: int = 0
    train_splits: tuple[str, ...] = ("train",)


def load_fer(path: str | Path) -> dict[str, np.ndarray]:
    """Read the FER2013 npz (``images`` (N,48,48) uint8, ``labels``, ``split``, ``classes``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"FER2013 file not found: {path}")
    try:
        data = np.load(path)
        out = {k: data[k] for k in ("images", "labels", "split", "classes")}
    except (KeyError, ValueError, OSError) as exc:
        raise UserError(f"{path} is not a FER2013 npz with images/labels/split/classes: {exc}") from None
    if out["images"].ndim != 3 or out["images"].shape[1:] != (48, 48):
        raise UserError(f"{path}: expected 48x48 images, got {out['images'].shape[1:]}")
    return out


def _augment(x, cfg: EmotionTrainConfig, generator):
    """Random 40x40 views of a (B,1,48,48) float batch in one affine resample, then jitter/erase."""
    import torch
    from torch.nn import functional as F

    from ..metrics.emotion import CROP_SIZE, FER_SIZE

    b = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    angle = (rand(b) * 2 - 1) * math.radians(cfg.max_rotation_deg)
    scale = (1 + (rand(b) * 2 - 1) * cfg.max_scale) * (CROP_SIZE / FER_SIZE)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    shift = (rand(b, 2) * 2 - 1) * (cfg.max_shift_px / (FER_SIZE / 2))
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    # theta maps output coords to input coords (normalised [-1, 1]); flip mirrors x.
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, (b, 1, CROP_SIZE, CROP_SIZE), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * 0.25
    bright = (rand(b, 1, 1, 1) * 2 - 1) * 0.25
    out = out * contrast + bright
    # Random erasing: one rectangle (10-35 % of the side each way) zeroed in a share of images.
    erase = rand(b) < cfg.erase_prob
    if erase.any():
        n = int(erase.sum())
        side = CROP_SIZE
        hw = (rand(n, 2) * 0.25 + 0.1) * side
        y0 = rand(n) * (side - hw[:, 0])
        x0 = rand(n) * (side - hw[:, 1])
        yy = torch.arange(side).view(1, side, 1)
        xx = torch.arange(side).view(1, 1, side)
        mask = (
            (yy >= y0.view(-1, 1, 1))
            & (yy < (y0 + hw[:, 0]).view(-1, 1, 1))
            & (xx >= x0.view(-1, 1, 1))
            & (xx < (x0 + hw[:, 1]).view(-1, 1, 1))
        )
        sub = out[erase]
        sub[mask.unsqueeze(1)] = 0.0
        out[erase] = sub
    return out


def evaluate(model, images: np.ndarray, labels: np.ndarray, mean: float, std: float, tta: str) -> float:
    """Top-1 accuracy with test-time averaging ``tta`` ("flip" or "tencrop")."""
    from ..metrics.emotion import predict_logits

    if len(images) == 0:
        return float("nan")
    probs = predict_logits(model, images, mean, std, tta)
    return float((probs.argmax(1) == labels).mean())


def train_emotion(
    data_path: str | Path,
    out_path: str | Path,
    cfg: EmotionTrainConfig = EmotionTrainConfig(),
    log=print,
    limit: int | None = None,
) -> dict:
    """Train, evaluate on the validation and test splits, and write the checkpoint.

    ``limit`` keeps a random N images of each split (quick runs and tests).
    Returns the summary written into the checkpoint (accuracies, timings, config).
    """
    import torch
    from torch.nn import functional as F

    from ..metrics.emotion import EmotionNet

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    data = load_fer(data_path)
    if limit is not None:
        # A seeded random subset per split: the file is sorted by label, so a prefix is one class.
        rng = np.random.default_rng(cfg.seed)
        keep = np.zeros(len(data["labels"]), bool)
        for name in np.unique(data["split"]):
            members = np.flatnonzero(data["split"] == name)
            keep[rng.permutation(members)[:limit]] = True
        data = {k: (v[keep] if k != "classes" else v) for k, v in data.items()}
    classes = [str(c) for c in data["classes"]]
    split = data["split"]
    train_mask = np.isin(split, list(cfg.train_splits))
    x_train = data["images"][train_mask]
    y_train = data["labels"][train_mask].astype(np.int64)
    val_images, val_labels = data["images"][split == "validation"], data["labels"][split == "validation"]
    test_images, test_labels = data["images"][split == "test"], data["labels"][split == "test"]
    if len(x_train) == 0:
        raise UserError(f"no training images in splits {cfg.train_splits}")
    mean = float(x_train.mean() / 255.0)
    std = float(x_train.std() / 255.0)
    log(f"train {len(x_train)}  val {len(val_images)}  test {len(test_images)}  mean {mean:.4f} std {std:.4f}")

    model = EmotionNet(width=cfg.width, num_classes=len(classes), dropout=cfg.dropout)
    model = model.to(memory_format=torch.channels_last)
    # No weight decay on BatchNorm and bias parameters (standard AdamW practice).
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.max_lr,
    )
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.max_lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all = torch.from_numpy(x_train).unsqueeze(1)  # uint8, converted per batch to save memory
    y_all = torch.from_numpy(y_train)
    history = []
    start = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total_loss, correct, seen = 0.0, 0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x = (x_all[idx].float() / 255.0 - mean) / std
            x = _augment(x, cfg, gen).contiguous(memory_format=torch.channels_last)
            y = y_all[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        val_acc = evaluate(model, val_images, val_labels, mean, std, "flip")
        entry = {
            "epoch": epoch + 1,
            "loss": total_loss / seen,
            "train_acc": correct / seen,
            "val_acc_flip": val_acc,
            "elapsed_s": time.time() - start,
        }
        history.append(entry)
        log(json.dumps(entry))
    train_seconds = time.time() - start
    model = model.to(memory_format=torch.contiguous_format)
    result = {
        "val_accuracy_flip": evaluate(model, val_images, val_labels, mean, std, "flip"),
        "val_accuracy_tencrop": evaluate(model, val_images, val_labels, mean, std, "tencrop"),
        "test_accuracy_flip": evaluate(model, test_images, test_labels, mean, std, "flip"),
        "test_accuracy_tencrop": evaluate(model, test_images, test_labels, mean, std, "tencrop"),
    }
    # The TTA mode is chosen on validation, never on test.
    tta = "tencrop" if result["val_accuracy_tencrop"] >= result["val_accuracy_flip"] else "flip"
    summary = {
        **result,
        "tta": tta,
        "test_accuracy": result[f"test_accuracy_{tta}"],
        "train_seconds": train_seconds,
        "torch_version": torch.__version__,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "history": history,
    }
    ckpt = {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "classes": classes,
        "mean": mean,
        "std": std,
        "width": cfg.width,
        "tta": tta,
        "test_accuracy": summary["test_accuracy"],
        "summary_json": json.dumps(summary),
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".partial.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out_path)  # never leave a half-written checkpoint behind
    from ..bench.environment import cpu_model, usable_cores

    card = model_card(summary, classes, f"{cpu_model()} ({usable_cores()} cores)")
    out_path.with_suffix(".md").write_text(card, encoding="utf-8")
    log(f"wrote {out_path}: test accuracy {summary['test_accuracy']:.4f} ({tta}), {train_seconds / 60:.1f} min")
    return summary


def model_card(summary: dict, classes: list[str], hardware: str) -> str:
    """The Markdown model card of a trained checkpoint, from its summary (nothing typed by hand)."""
    cfg = summary["config"]
    last = summary["history"][-1] if summary.get("history") else {}
    lines = [
        "# emotion_fer2013.pt: FER2013 expression classifier",
        "",
        "Used by `streamanon eval` for emotion agreement (same label before and after anonymization).",
        "",
        f"- Classes: {', '.join(classes)}",
        f"- Network: `EmotionNet(width={cfg['width']})` (four VGG stages, GAP head) on 40x40 crops of 48x48 grayscale faces",
        f"- Data: FER2013 (`../shared/data/emotion/fer2013_48.npz`), trained on split(s) {', '.join(cfg['train_splits'])}; "
        "validation chose the test-time augmentation; the test split was held out",
        f"- Training: {cfg['epochs']} epochs, batch {cfg['batch_size']}, AdamW + OneCycle (peak lr {cfg['max_lr']}), "
        f"label smoothing {cfg['label_smoothing']}, seed {cfg['seed']}, {summary['train_seconds'] / 60:.0f} min on {hardware}, "
        f"torch {summary['torch_version']}",
        f"- Final epoch: train accuracy {last.get('train_acc', float('nan')):.4f} (augmented), validation {last.get('val_acc_flip', float('nan')):.4f} (flip)",
        "",
        "| split | flip (2 views) | ten-crop (10 views) |",
        "|---|---|---|",
        f"| validation (3,589) | {summary['val_accuracy_flip']:.4f} | {summary['val_accuracy_tencrop']:.4f} |",
        f"| test (3,589) | {summary['test_accuracy_flip']:.4f} | {summary['test_accuracy_tencrop']:.4f} |",
        "",
        f"Shipped test accuracy: **{summary['test_accuracy']:.4f}** ({summary['tta']}, chosen on validation).",
        "",
        "Licence: FER2013 was released for research (ICML 2013 challenge); these weights inherit its",
        "research-only terms. Reproduce with `streamanon train emotion --epochs "
        f"{cfg['epochs']}{'' if cfg['bf16'] else ' --no-bf16'} --out emotion_fer2013.pt`.",
        "",
    ]
    return "\n".join(lines)


def _default_data() -> Path:
    # The shared data folder beside the project checkout (see ../shared/data/README.md).
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "emotion" / "fer2013_48.npz"


@click.command("emotion")
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="FER2013 npz (default: ../shared/data/emotion/fer2013_48.npz).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("emotion_fer2013.pt"), show_default=True, help="Checkpoint to write.")
@click.option("--epochs", type=int, default=EmotionTrainConfig.epochs, show_default=True)
@click.option("--batch-size", type=int, default=EmotionTrainConfig.batch_size, show_default=True)
@click.option("--lr", "max_lr", type=float, default=EmotionTrainConfig.max_lr, show_default=True,
              help="Peak learning rate of the OneCycle schedule.")
@click.option("--width", type=int, default=EmotionTrainConfig.width, show_default=True,
              help="Channels of the first stage (doubled per stage).")
@click.option("--threads", type=int, default=EmotionTrainConfig.threads, show_default=True)
@click.option("--bf16/--no-bf16", default=EmotionTrainConfig.bf16, show_default=True,
              help="bfloat16 autocast on CPU.")
@click.option("--train-splits", default="train", show_default=True,
              help="Comma-separated FER2013 splits to train on (test is always held out).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="Use a random N images of each split (quick runs).")
def emotion_command(data_path, out_path, epochs, batch_size, max_lr, width, threads, bf16, train_splits, seed, limit):
    """Train the FER2013 emotion classifier used by `streamanon eval`."""
    splits = tuple(s.strip() for s in train_splits.split(",") if s.strip())
    if "test" in splits:
        raise UserError("the test split must stay held out; train on train and/or validation")
    if epochs < 1 or batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    cfg = EmotionTrainConfig(
        epochs=epochs, batch_size=batch_size, max_lr=max_lr, width=width, threads=threads, bf16=bf16,
        train_splits=splits, seed=seed,
    )
    summary = train_emotion(data_path or _default_data(), out_path, cfg, log=click.echo, limit=limit)
    click.echo(f"test accuracy {summary['test_accuracy']:.4f}")
