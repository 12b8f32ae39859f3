"""The GAN training loop: generator + conditional discriminator + landmark regressor.

One step: discriminator (logistic loss, lazy R1 every ``r1_every`` steps), landmark regressor on
real crops, generator (non-saturating loss + context L1 + landmark consistency + diversity),
EMA of the generator weights. AMP on CUDA (bfloat16 where supported: no loss scaling needed),
float32 on CPU. Batches and latents are pure functions of (seed, step), so a resumed run
continues exactly where the checkpoint left off.

Outputs in ``out``: ``checkpoint.pt`` (latest, resumable), ``generator_<res>.pt`` (EMA weights
only, what ``--weights`` takes), ``losses.csv`` + ``losses.png``, ``samples/step_XXXXXXX.png``
(rows: masked input / EMA generated / original), ``train_config.json``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..generate.condition import masked_input
from ..generate.model import (
    Discriminator,
    Generator,
    GeneratorConfig,
    LandmarkRegressor,
    compose_output,
    count_parameters,
)
from ..io.images import write_image
from . import losses
from .checkpoint import export_weights, load_checkpoint, save_checkpoint
from .dataset import FaceShardDataset, StepBatchSampler
from .report import LossLog, plot_losses, sample_grid

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("d", "r1", "g_adv", "ctx", "lm_real", "lm_fake", "div", "val_lm", "sec_per_step")


@dataclass
class TrainConfig:
    """Settings of one training run (saved next to the checkpoints)."""

    data: str
    out: str
    steps: int = 60_000  # total steps: a resumed run continues up to this number
    batch: int = 32
    device: str = "cpu"
    seed: int = 0
    lr_g: float = 0.002
    lr_d: float = 0.002
    lr_landmarks: float = 0.001
    beta1: float = 0.0
    beta2: float = 0.99
    r1_gamma: float | None = None  # None: StyleGAN2-ADA heuristic 0.0002 * res^2 / batch
    r1_every: int = 16  # lazy regularization interval
    ema_kimg: float = 10.0  # EMA half-life in thousands of images
    ema_rampup: float = 0.05  # EMA half-life ramp as a fraction of images seen so far
    lambda_ctx: float = 1.0
    lambda_landmarks: float = 2.0
    landmark_warmup: int = 2000  # steps the regressor learns alone before it judges fakes
    lambda_div: float = 0.2
    div_samples: int = 4  # samples of the batch generated twice for the diversity loss
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off
    workers: int = 2
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 1000
    resume: str | None = "auto"  # "auto": out/checkpoint.pt if present; a path; None: start fresh
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall-clock time: leased GPUs
    progress: bool = True
    generator: dict[str, Any] = field(default_factory=dict)  # GeneratorConfig overrides
    d_channels: int = 32  # discriminator width at full resolution
    d_max_channels: int = 256
    landmark_channels: int = 64  # landmark regressor width

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """What a run produced."""

    step: int
    start_step: int
    checkpoint: Path
    weights: Path
    losses: dict[str, float]
    out: Path


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        if amp in ("bf16", "fp16") and device.type != "cuda":
            log.info("AMP is CUDA only; training in float32 on %s", device)
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp not in ("bf16", "fp16"):
        raise UserError(f"unknown amp mode '{amp}' (choose from auto, bf16, fp16, off)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _init_loader_worker(_: int) -> None:
    # Each loader process decodes one JPEG at a time; OpenCV's own thread pool would only
    # oversubscribe the cores that the other workers and the training process need.
    import cv2

    cv2.setNumThreads(1)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8 RGB."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(np.random.SeedSequence([seed, step, salt]).generate_state(1, np.uint64)[0] >> 1))
    return gen


class Trainer:
    """Owns the networks, optimizers and data of one run; ``run()`` trains up to ``config.steps``."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = cfg = config
        if cfg.steps < 1 or cfg.batch < 1:
            raise UserError("steps and batch must be positive")
        try:
            self.device = torch.device(cfg.device)
        except RuntimeError:
            raise UserError(f"unknown device '{cfg.device}'") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device '{cfg.device}' requested but CUDA is not available")
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = FaceShardDataset(cfg.data, "train")
        try:
            self.val = FaceShardDataset(cfg.data, "val")
        except UserError:
            self.val = None
        gen_overrides = dict(cfg.generator)
        gen_overrides.setdefault("resolution", self.data.resolution)
        self.gconfig = GeneratorConfig.from_dict(gen_overrides)
        if self.gconfig.resolution != self.data.resolution:
            raise UserError(
                f"data is {self.data.resolution} px but the generator is configured for {self.gconfig.resolution}"
            )
        self.amp_dtype = _amp_dtype(cfg.amp, self.device)
        if self.device.type == "cuda":
            # TF32 for the float32 parts (R1, EMA samples); cuDNN picks the fastest conv kernels
            # for the fixed training shapes.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)  # network initialization
        dev = self.device
        self.G = Generator(self.gconfig).to(dev)
        self.D = Discriminator(self.gconfig, cfg.d_channels, cfg.d_max_channels).to(dev)
        self.R = LandmarkRegressor(self.gconfig.resolution, cfg.landmark_channels).to(dev)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Lazy R1: the optimizer's betas and lr are adjusted for updating D with the extra term
        # only every r1_every steps (StyleGAN2, appendix B).
        c = cfg.r1_every / (cfg.r1_every + 1)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d * c, betas=(betas[0] ** c, betas[1] ** c))
        self.opt_r = torch.optim.Adam(self.R.parameters(), lr=cfg.lr_landmarks)
        use_scaler = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.r1_gamma = cfg.r1_gamma if cfg.r1_gamma is not None else 0.0002 * self.gconfig.resolution**2 / cfg.batch
        self.step = 0
        self._resume()
        self._fixed = self._fixed_samples()
        saved = cfg.to_dict() | {"generator_config": self.gconfig.to_dict()}
        (self.out / "train_config.json").write_text(json.dumps(saved, indent=2))

    # ---------------------------------------------------------------- state
    def _resume(self) -> None:
        cfg = self.config
        path: Path | None = None
        if cfg.resume == "auto":
            candidate = self.out / "checkpoint.pt"
            path = candidate if candidate.is_file() else None
        elif cfg.resume and cfg.resume.lower() != "none":
            path = Path(cfg.resume)
        if path is None:
            return
        payload = load_checkpoint(path, map_location=self.device)
        state = payload.get("train")
        if state is None:
            raise UserError(f"{path} holds inference weights only; resume needs a training checkpoint (checkpoint.pt)")
        if GeneratorConfig.from_dict(payload["config"]) != self.gconfig:
            raise UserError(f"{path} was trained with a different generator config: {payload['config']}")
        self.G.load_state_dict(state["generator"])
        self.G_ema.load_state_dict(payload["generator_ema"])
        self.D.load_state_dict(state["discriminator"])
        self.R.load_state_dict(state["regressor"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_r.load_state_dict(state["opt_r"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        self.step = int(payload["step"])
        log.info("resumed from %s at step %d", path, self.step)

    def train_state(self) -> dict[str, Any]:
        """Everything besides the EMA weights that a resumed run needs."""
        cpu = lambda sd: {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in sd.items()}  # noqa: E731
        return {
            "generator": cpu(self.G.state_dict()),
            "discriminator": cpu(self.D.state_dict()),
            "regressor": cpu(self.R.state_dict()),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_r": self.opt_r.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "train_config": self.config.to_dict(),
        }

    def save(self) -> Path:
        """Write ``checkpoint.pt`` (resumable) and the inference weights ``generator_<res>.pt``."""
        ckpt = save_checkpoint(self.out / "checkpoint.pt", self.gconfig, self.G_ema, self.step, self.train_state())
        export_weights(ckpt, self.weights_path)
        return ckpt

    @property
    def weights_path(self) -> Path:
        return self.out / f"generator_{self.gconfig.resolution}.pt"

    # ---------------------------------------------------------------- data
    def _to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dev = self.device
        image = batch["image"].to(dev, non_blocking=True).float().div_(127.5).sub_(1.0)
        return image, batch["mask"].to(dev, non_blocking=True), batch["landmarks"].to(dev, non_blocking=True)

    def _fixed_samples(self) -> dict[str, torch.Tensor]:
        """A fixed batch (validation faces when there are any) and fixed latents for sample grids."""
        source = self.val or self.data
        n = min(8, len(source))
        items = [source[(i, False)] for i in range(n)]
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        image, mask, landmarks = self._to_device(batch)
        z = torch.randn(n, self.gconfig.latent_dim, generator=_step_generator(self.config.seed, 0, 99)).to(self.device)
        return {"image": image, "mask": mask, "landmarks": landmarks, "z": z}

    def _latents(self, n: int, salt: int) -> torch.Tensor:
        gen = _step_generator(self.config.seed, self.step, salt)
        return torch.randn(n, self.gconfig.latent_dim, generator=gen).to(self.device)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    # ---------------------------------------------------------------- one step
    def train_step(self, real: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor) -> dict[str, float]:
        """One optimization step of D, the regressor and G; returns the losses as floats."""
        cfg = self.config
        self.step += 1
        n = real.shape[0]
        size = self.gconfig.resolution
        out: dict[str, float] = {}
        z = self._latents(n, salt=0)

        # Discriminator.
        self.D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self.G(real, mask, landmarks, z)
        with self._autocast():
            loss_d = losses.d_logistic_loss(self.D(real, mask, landmarks), self.D(fake.detach(), mask, landmarks))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        out["d"] = loss_d.item()
        if cfg.r1_every > 0 and self.step % cfg.r1_every == 0:
            # R1 in float32: squared input gradients underflow or overflow in half precision.
            real_r1 = real.detach().requires_grad_(True)
            penalty = losses.r1_penalty(self.D(real_r1, mask, landmarks), real_r1)
            self.opt_d.zero_grad(set_to_none=True)
            (penalty * (self.r1_gamma / 2) * cfg.r1_every).backward()
            self.opt_d.step()
            out["r1"] = penalty.item()

        # Landmark regressor, on real crops only.
        use_landmarks = cfg.lambda_landmarks > 0
        if use_landmarks:
            self.R.requires_grad_(True)
            with self._autocast():
                loss_r = losses.landmark_loss(self.R(real), landmarks, size)
            self.opt_r.zero_grad(set_to_none=True)
            loss_r.backward()
            self.opt_r.step()
            out["lm_real"] = loss_r.item()

        # Generator.
        self.D.requires_grad_(False)
        self.R.requires_grad_(False)
        with self._autocast():
            raw = self.G(real, mask, landmarks, z, compose=False)
            fake = compose_output(raw, real, mask)
            loss_adv = losses.g_nonsaturating_loss(self.D(fake, mask, landmarks))
            loss_g = loss_adv
            out["g_adv"] = loss_adv.item()
            if cfg.lambda_ctx > 0:
                loss_ctx = losses.context_loss(raw, real, mask)
                loss_g = loss_g + cfg.lambda_ctx * loss_ctx
                out["ctx"] = loss_ctx.item()
            if use_landmarks and self.step > cfg.landmark_warmup:
                loss_lm = losses.landmark_loss(self.R(fake), landmarks, size)
                loss_g = loss_g + cfg.lambda_landmarks * loss_lm
                out["lm_fake"] = loss_lm.item()
            if cfg.lambda_div > 0 and cfg.div_samples > 0:
                k = min(cfg.div_samples, n)
                z2 = self._latents(k, salt=1)
                fake2 = self.G(real[:k], mask[:k], landmarks[:k], z2)
                loss_div = losses.diversity_loss(fake[:k], fake2, z[:k], z2, mask[:k])
                loss_g = loss_g + cfg.lambda_div * loss_div
                out["div"] = loss_div.item()
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self._update_ema(n)
        return out

    @torch.no_grad()
    def _update_ema(self, batch: int) -> None:
        cfg = self.config
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup:
            ema_nimg = min(ema_nimg, self.step * batch * cfg.ema_rampup)
        beta = 0.5 ** (batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ---------------------------------------------------------------- reporting
    @torch.no_grad()
    def write_samples(self) -> tuple[Path, float]:
        """Sample grid of the fixed batch (masked input / EMA output / original); returns its
        path and the regressor's landmark error on the EMA outputs (a pose-fidelity proxy)."""
        s = self._fixed
        fake = self.G_ema(s["image"], s["mask"], s["landmarks"], s["z"]).clamp(-1, 1)
        val_lm = losses.landmark_loss(self.R(fake), s["landmarks"], self.gconfig.resolution).item()
        rows = [_to_uint8(masked_input(s["image"], s["mask"])), _to_uint8(fake), _to_uint8(s["image"])]
        path = self.out / "samples" / f"step_{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, sample_grid(rows))
        return path, val_lm

    # ---------------------------------------------------------------- run
    def run(self) -> TrainResult:
        """Train from the current step up to ``config.steps``; save, sample and log on the way."""
        cfg = self.config
        start = self.step
        loss_log = LossLog(self.out / "losses.csv", LOSS_COLUMNS, resume_step=start)
        log.info(
            "training G %.2fM / D %.2fM / R %.2fM params on %s (amp %s), %d train faces, steps %d..%d",
            count_parameters(self.G) / 1e6, count_parameters(self.D) / 1e6, count_parameters(self.R) / 1e6,
            self.device, self.amp_dtype, len(self.data), start + 1, cfg.steps,
        )  # fmt: skip
        last: dict[str, float] = {}
        if start >= cfg.steps:
            log.info("checkpoint is already at step %d >= %d; nothing to do", start, cfg.steps)
            return TrainResult(self.step, start, self.out / "checkpoint.pt", self.weights_path, last, self.out)
        sampler = StepBatchSampler(len(self.data), cfg.batch, cfg.seed, start, cfg.steps)
        loader = torch.utils.data.DataLoader(
            self.data,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_init_loader_worker,
        )
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, disable=not cfg.progress, unit="step", dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        tick = started = time.perf_counter()
        deadline = None if cfg.max_minutes is None else started + 60.0 * cfg.max_minutes
        try:
            for batch in loader:
                values = self.train_step(*self._to_device(batch))
                for k, v in values.items():
                    if not math.isfinite(v):
                        raise FloatingPointError(f"loss '{k}' became {v} at step {self.step}")
                    window.setdefault(k, []).append(v)
                bar.update(1)
                out_of_time = deadline is not None and time.perf_counter() >= deadline
                final = self.step == cfg.steps or out_of_time
                if self.step % cfg.log_every == 0 or final:
                    now = time.perf_counter()
                    last = {k: float(np.mean(v)) for k, v in window.items()}
                    last["sec_per_step"] = (now - tick) / max(1, len(window.get("d", [])))
                    tick, window = now, {}
                    if cfg.sample_every and (self.step % cfg.sample_every == 0 or final):
                        _, last["val_lm"] = self.write_samples()
                    loss_log.append(self.step, last)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in last.items() if k in ("d", "g_adv", "lm_fake")})
                elif cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.write_samples()
                if self.step % cfg.checkpoint_every == 0 or final:
                    self.save()
                    plot_losses(self.out / "losses.csv", self.out / "losses.png")
                if out_of_time:
                    log.info("stopping at step %d: --max-minutes %g reached; resume continues", self.step, cfg.max_minutes)
                    break
        finally:
            bar.close()
        return TrainResult(self.step, start, self.out / "checkpoint.pt", self.weights_path, last, self.out)


def train(config: TrainConfig) -> TrainResult:
    """Build a :class:`Trainer` and run it."""
    return Trainer(config).run()
