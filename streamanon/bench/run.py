"""The benchmark run: scenes and clip x modes, timed stage by stage, plus the deface comparison."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from ..config import MODES, AnonymizerConfig, load_config
from ..errors import UserError
from ..pipeline import Anonymizer
from ..timing import StageTimer
from .compare import compare_with_deface
from .environment import check_device, describe_device, device_slug, load_average, sync_function, versions
from .generator import GeneratorChoice, choose_generator
from .measure import faces_check, median_over_repeats, run_repeat, summarize_repeat
from .report import default_output, paper_table
from .scenes import SceneSpec, build_scene, trim_clip

SCHEMA = "streamanon.bench.stages/1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((640, 360), (1280, 720), (1920, 1080))
DEFAULT_FACE_COUNTS: tuple[int, ...] = (1, 2, 4, 8)
DEFAULT_MODES: tuple[str, ...] = ("blur", "pixelate", "generate")


def shared_data_dir() -> Path:
    """``$STREAMANON_SHARED_DATA``, else ``../shared/data`` beside the checkout (as the tests use)."""
    env = os.environ.get("STREAMANON_SHARED_DATA")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def default_clip() -> Path | None:
    """The shared multi-person 1080p street clip, when present."""
    path = shared_data_dir() / "videos" / "street_1080p_multi.mp4"
    return path if path.is_file() else None


def default_faces_dir() -> Path:
    return shared_data_dir() / "faces" / "utkface"


def default_results_dir() -> Path:
    """The checkout's ``benchmarks/results``, else ``benchmarks/results`` under the current folder."""
    checkout = PROJECT_ROOT / "benchmarks"
    return (checkout if checkout.is_dir() else Path.cwd() / "benchmarks") / "results"


@dataclass(frozen=True)
class BenchSettings:
    """Everything a run depends on (stored in the JSON as given)."""

    clip: Path | None = None  # real clip; None = no clip scenarios
    resolutions: tuple[tuple[int, int], ...] = DEFAULT_RESOLUTIONS
    face_counts: tuple[int, ...] = DEFAULT_FACE_COUNTS
    modes: tuple[str, ...] = DEFAULT_MODES
    frames: int = 30  # measured frames per repeat
    warmup: int = 3  # frames run before measuring, every repeat
    repeats: int = 3
    device: str = "cpu"
    faces_dir: Path | None = None  # face crops for synthetic scenes; None = shared UTKFace
    weights: str | None = None  # generator weights; None = the registry's
    untrained_generator: bool = False  # time a freshly initialised generator when no weights exist
    generator_backend: str = "auto"
    deface: bool = True  # run the end-to-end comparison (needs a clip)
    deface_exe: str | None = None
    compare_frames: int | None = None  # frames of the clip for the comparison; None = whole clip
    compare_repeats: int = 3
    config_path: Path | None = None  # TOML pipeline settings (detection threshold, encoder, ...)
    seed: int = 0

    def validate(self) -> None:
        """Raise a one-line ``UserError`` for settings that cannot run."""
        check_device(self.device)
        if self.frames < 1 or self.repeats < 1 or self.warmup < 0 or self.compare_repeats < 1:
            raise UserError("frames, repeats and compare repeats must be >= 1 and warm-up >= 0")
        if self.compare_frames is not None and self.compare_frames < 1:
            raise UserError("compare frames must be >= 1")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise UserError(f"unknown or no mode(s) {unknown} (choose from {', '.join(MODES)})")
        for width, height in self.resolutions:
            if width < 64 or height < 64 or width % 2 or height % 2:
                raise UserError(f"resolution {width}x{height}: sides must be even and at least 64")
        if any(n < 1 or n > 64 for n in self.face_counts):
            raise UserError(f"face counts must be between 1 and 64, got {list(self.face_counts)}")
        if self.clip is not None and not Path(self.clip).is_file():
            raise UserError(f"clip not found: {self.clip}")
        if self.clip is None and not (self.resolutions and self.face_counts):
            raise UserError("nothing to benchmark: no clip and no synthetic scenes")

    def as_json(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


@dataclass
class _Source:
    """One input the modes run on: the real clip or a synthetic scene."""

    name: str
    kind: str  # "clip" or "synthetic"
    clip: Path
    width: int
    height: int
    planted: object = None  # (frames, faces, 4) boxes for synthetic scenes
    extra: dict = field(default_factory=dict)


def _clip_source(clip: Path) -> _Source:
    from ..io.video import VideoReader

    with VideoReader(clip) as reader:
        width, height = reader.width, reader.height
    return _Source(f"clip {clip.name}", "clip", clip, width, height)


def _scene_source(spec: SceneSpec, faces_dir: Path, frames: int, workdir: Path) -> _Source:
    scene = build_scene(spec, faces_dir, frames, workdir)
    extra = {"face_size_px": scene.face_size, "face_crops": scene.sources}
    return _Source(spec.name, "synthetic", scene.clip, spec.width, spec.height, scene.boxes, extra)


def _unavailable(source: _Source, mode: str, label: str, detail: str) -> dict:
    return {"name": source.name, "source": source.kind, "mode": mode, "width": source.width,
            "height": source.height, **source.extra, "status": "unavailable", "label": label, "note": detail,
            "faces": None, "repeats": [], "median": None}


def _measure(source: _Source, mode: str, anonymizer: Anonymizer, settings: BenchSettings, timer: StageTimer,
             label: str, workdir: Path) -> dict:
    records = [
        run_repeat(anonymizer, source.clip, workdir / "bench_out.mp4", settings.frames, settings.warmup,
                   anonymizer.config.encode, timer, source.planted)
        for _ in range(settings.repeats)
    ]
    repeats = [{"summary": summarize_repeat(r), "per_frame": r} for r in records]
    planted = source.planted.shape[1] if source.planted is not None else None
    faces = faces_check(records, planted)
    note = ""
    if faces["fallback_faces"]:
        note = f"{faces['fallback_faces']} face(s) fell back to blur: the generate rows cover fewer faces"
    return {"name": source.name, "source": source.kind, "mode": mode, "width": source.width,
            "height": source.height, **source.extra, "status": "ok", "label": label, "note": note,
            "faces": faces, "repeats": repeats, "median": median_over_repeats([r["summary"] for r in repeats])}


def _anonymizers(settings: BenchSettings, base: AnonymizerConfig, choice: GeneratorChoice | None) -> dict:
    """One Anonymizer per mode that can run (models load once; tracks are reset per repeat)."""
    anonymizers: dict[str, Anonymizer] = {}
    for mode in settings.modes:
        runtime = choice.runtime if mode == "generate" and choice is not None else None
        if mode == "generate" and runtime is None:
            continue
        anonymizers[mode] = Anonymizer(base.with_overrides({"replace.mode": mode}), generator=runtime)
    return anonymizers


def _sources(settings: BenchSettings, faces_dir: Path, workdir: Path) -> Iterator[_Source]:
    """The real clip, then every synthetic scene, each built only when its turn comes."""
    if settings.clip is not None:
        yield _clip_source(Path(settings.clip))
    for width, height in settings.resolutions:
        for count in settings.face_counts:
            yield _scene_source(SceneSpec(width, height, count), faces_dir, settings.warmup + settings.frames, workdir)


def _comparison(settings: BenchSettings, base: AnonymizerConfig, workdir: Path) -> dict:
    if settings.clip is None:
        return {"status": "not run: needs a real clip (--clip)"}
    clip, frames = trim_clip(Path(settings.clip), settings.compare_frames, workdir / "compare_clip.mp4")
    ours_args = ["--config", str(settings.config_path)] if settings.config_path else []
    result = compare_with_deface(clip, frames, settings.compare_repeats, workdir, settings.device, base.encode,
                                 settings.deface_exe, ours_args)
    return {**result, "clip": str(settings.clip), "trimmed": clip != Path(settings.clip)}


def run_benchmark(settings: BenchSettings, progress: Callable[[str], None] | None = None) -> dict:
    """Run every scenario of ``settings``; return the report (see the package docs for its schema)."""
    say = progress or (lambda _: None)
    settings.validate()
    faces_dir = settings.faces_dir or default_faces_dir()
    base = load_config(settings.config_path, {"device": settings.device, "generate.seed": settings.seed})
    report: dict = {
        "schema": SCHEMA,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": describe_device(settings.device),
        "load_average": {"start": load_average()},
        "versions": versions(),
        "settings": {**settings.as_json(), "faces_dir": str(faces_dir)},
        "pipeline_config": dataclasses.asdict(base),
        "generator": None,
        "scenarios": [],
        "comparison": None,
        "paper_table_ii": paper_table(),
    }
    timer = StageTimer(sync_function(settings.device))
    with tempfile.TemporaryDirectory(prefix="streamanon-bench-") as tmp:
        workdir = Path(tmp)
        choice = None
        if "generate" in settings.modes:
            choice = choose_generator(settings.weights, settings.untrained_generator, settings.device,
                                      settings.generator_backend, workdir, settings.seed)
            report["generator"] = choice.describe()
        anonymizers = _anonymizers(settings, base, choice)
        # The detector picks its onnxruntime provider itself (CUDA whenever available): record it.
        first = next(iter(anonymizers.values()), None)
        report["device"]["detector_providers"] = first.detector.providers if first is not None else None
        # Who runs what in each mode (generator backend, where faces are composited, landmark backend).
        report["pipelines"] = {mode: anonymizer.backend_name for mode, anonymizer in anonymizers.items()}
        for source in _sources(settings, faces_dir, workdir):
            for mode in settings.modes:
                say(f"{source.name} | {mode}")
                if mode not in anonymizers:
                    report["scenarios"].append(_unavailable(source, mode, choice.label, choice.detail))
                    continue
                label = choice.label if mode == "generate" else ""
                report["scenarios"].append(_measure(source, mode, anonymizers[mode], settings, timer, label, workdir))
        if settings.deface:
            say("end-to-end comparison with deface")
            report["comparison"] = _comparison(settings, base, workdir)
    report["load_average"]["end"] = load_average()
    return report


def output_path(settings: BenchSettings, report: dict) -> Path:
    """Default JSON path of a report: ``benchmarks/results/stages-<device>-<date>.json``."""
    when = datetime.fromisoformat(report["when"])
    return default_output(default_results_dir(), device_slug(settings.device), when)
