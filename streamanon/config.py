"""One frozen dataclass tree for every setting; loadable from TOML, overridable from the CLI.

TOML layout mirrors the tree, e.g.::

    mode = "blur"
    [detect]
    threshold = 0.4
    [photometric]
    relight = false
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from .errors import UserError

Mode = Literal["generate", "blur", "pixelate", "solid"]
MODES: tuple[str, ...] = ("generate", "blur", "pixelate", "solid")


DETECT_BACKENDS = ("auto", "onnxruntime", "torch")
LANDMARK_BACKENDS = ("auto", "dlib", "torch")
# Where the identity guard embeds a candidate (generate/guard.py) and where faces are composited
# (generate/compose.py): the accepted values, defined once for the config, the classes and the CLI.
GuardLandmarks = Literal["condition", "own", "both"]
GUARD_LANDMARKS: tuple[str, ...] = ("condition", "own", "both")
Composite = Literal["auto", "host", "device"]
COMPOSITE_PLACES: tuple[str, ...] = ("auto", "host", "device")


@dataclass(frozen=True)
class DetectConfig:
    """CenterFace detection."""

    threshold: float = 0.4  # heatmap score above which a face is kept
    # A face cut off by the frame's edge (entering the picture) scores lower: half a face showed
    # its eye, nose and mouth unaltered for a frame at 0.26 (a privacy audit). Boxes touching the
    # edge are kept from this score (the lower of the two thresholds); in 35 street-clip frames 3
    # edge boxes scored between 0.2 and 0.4, the interior 133.
    edge_threshold: float = 0.2
    scale: float | None = None  # resize factor before detection; None = auto (long side <= 1280)
    min_size: float = 10.0  # drop boxes smaller than this (pixels, original frame)
    nms_iou: float = 0.3
    # Full-frame detection every this many frames; in between, only regions around the faces
    # already tracked are searched (~5 ms a face instead of ~35 ms a 640x360 frame on 2 CPU
    # cores). Known faces stay covered every frame; a face entering the picture is found up to
    # every - 1 frames late. 1 = full frame every frame.
    every: int = 1
    # With every > 1: a full pass also on a frame that changed, outside the tracked faces, at the
    # edge (a face entering) or over much of the picture (a cut); a still scene keeps its savings.
    watch_changes: bool = True
    # Who runs the network: onnxruntime, torch (the same weights, on the pipeline's device), or
    # auto: onnxruntime, except on a GPU that onnxruntime has no provider for.
    backend: str = "auto"
    # The frame is also searched turned by these angles (degrees counter-clockwise, multiples of 90),
    # one network run each: CenterFace finds faces rolled up to ~45 degrees, and on the shared
    # annotated photos turned by 90 / 180 degrees upright-only detection hid 86 / 80 % of the faces
    # (benchmarks/face_recall.py). (0, 90, 180, 270) finds them at any roll: cameras looking down,
    # robots, people lying down.
    rotations: tuple[int, ...] = (0,)
    # Where a tracked face goes undetected, search around it again with the region turned to the
    # face's last eye-line angle (and a quarter and half turn from it): a head tilting past what an
    # upright pass finds stays found. Costs one small network run while a face is lost.
    refind_lost: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise UserError(f"detect.every must be a whole number >= 1, got {self.every!r}")
        if self.backend not in DETECT_BACKENDS:
            raise UserError(f"detect.backend must be one of {', '.join(DETECT_BACKENDS)}, got {self.backend!r}")


@dataclass(frozen=True)
class TrackConfig:
    """Association of detections over frames."""

    iou_threshold: float = 0.2  # minimum IoU to match a detection to a track
    max_missed: int = 12  # frames a track coasts on its predicted box before it is dropped
    min_hits: int = 1  # detections needed before a track is reported (1: hide at once)


@dataclass(frozen=True)
class LandmarksConfig:
    """dlib's 68-point shape predictor on each detected face."""

    # Who runs it: dlib (C++, one face at a time, holds the GIL: ~3 ms a face on 2 CPU cores),
    # torch (the same trees read from dlib's file, all faces of a frame at once, on the pipeline's
    # device: dlib's points on host crops; with the PyTorch detector the crops are sampled on the
    # uploaded frame instead, as accurate on 300-W), or auto: torch on a GPU, dlib otherwise.
    backend: str = "auto"
    # Confirm a rolled (or new) face's detector keypoints by a search turned to its roll before the
    # predictor starts from them (faces/roll.py): the detector fits an upright template to large
    # faces rolled past ~45 degrees, and landmarks grown from it put the generated face askew.
    check_roll: bool = True

    def __post_init__(self) -> None:
        if self.backend not in LANDMARK_BACKENDS:
            raise UserError(
                f"landmarks.backend must be one of {', '.join(LANDMARK_BACKENDS)}, got {self.backend!r}"
            )


@dataclass(frozen=True)
class SmoothConfig:
    """One-Euro filter of boxes and landmarks (Casiez et al. 2012)."""

    enabled: bool = True
    min_cutoff: float = 1.5  # Hz; lower = smoother at rest
    beta: float = 0.02  # speed coefficient; higher = less lag when moving
    d_cutoff: float = 1.0


@dataclass(frozen=True)
class PhotometricConfig:
    """The seed paper's three post-processing steps (see DESIGN.md)."""

    relight: bool = True
    laplacian: bool = True
    color_transfer: bool = True
    # Shading must carry lighting, not identity. With a sharp, edge-preserving filter (diameter 9,
    # sigma_color 0.1, sigma_space 5) relighting another real person's face with the original's
    # shading made dlib re-identify the original in 80 % of HELEN pairs (the stand-in alone: 9 %).
    # This wide, smooth filter keeps the lighting as well (low-pass luminance correlation 0.76 vs
    # 0.74) at 10 % on 100 pairs (benchmarks/relight_identity_leak.py).
    bilateral_diameter: int = 31
    bilateral_sigma_color: float = 1.0  # in [0, 1] intensity units
    bilateral_sigma_space: float = 12.0
    # The shading is filtered at 1/shading_downsample of the crop's resolution (1, 2 or 4), window
    # and sigma_space shrunk alike: 2 makes relighting ~5x cheaper on a CPU and moves the output by
    # 0.26 levels on average (photometric/resample.py). 1 = the full-resolution filter.
    shading_downsample: int = 2
    pyramid_levels: int = 4


@dataclass(frozen=True)
class ReplaceConfig:
    """How a face is hidden."""

    mode: Mode = "blur"
    margin: float = 0.15  # grow the face box by this fraction on each side before hiding
    pixel_blocks: int = 8  # blocks across the face in pixelate mode
    solid_color: tuple[int, int, int] = (128, 128, 128)
    feather: float = 0.12  # width of the soft edge as a fraction of the face size


@dataclass(frozen=True)
class GenerateConfig:
    """The landmark-conditioned generator."""

    weights: str | None = None  # explicit path; None = the shipped default
    backend: Literal["auto", "eager", "compile", "tensorrt"] = "auto"
    crop_size: int = 128
    seed: int = 0  # base of the per-track latent codes
    # Identity guard (generate/guard.py): candidate identities tried per new track, and the dlib
    # distance to the original below which a candidate counts as re-identified. 0 switches it off.
    guard_candidates: int = 32
    guard_distance: float = 0.6
    # Among the safe candidates, show the one CenterFace finds most face-like (one detector run over
    # the candidates past the chosen bar, only when a track is new or its identity is replaced);
    # false: the farthest from the original.
    guard_plausibility: bool = True
    # Where the guard embeds a candidate (generate/guard.py): "condition" (the original face's
    # landmarks), "own" (those the pipeline's landmark stage finds on the candidate as shown, as an
    # attacker would) or "both" (the smaller distance counts: re-identification at dlib's stock
    # landmarks 4.8 -> 1.4 % on the validation faces, ~45 % more time per choice).
    guard_landmarks: GuardLandmarks = "both"
    # Seconds between the guard's checks of a shown identity against the current view (a face that
    # turns or changes expression can come closer to its original); 0 = as often as possible (one
    # check a frame: with several faces they take turns).
    guard_check_seconds: float = 0.2
    # Run the guard on a background thread: a new track's identity is chosen while the face stays
    # blurred (instead of holding up the frame ~1 s on 2 CPU cores), and a shown identity stays on
    # screen while its re-check runs, blurred from the next frame if the check fails.
    # Unset: on for live streams with --latency realtime, off elsewhere (files come out the same on
    # every run). A compiled generator (CUDA graphs, TensorRT) stays on the thread that built it;
    # the guard's thread runs the same weights eagerly.
    guard_background: bool | None = None
    # Where generated faces are post-processed and pasted into the frame: "device" keeps them on the
    # generator's device (the frame's face region is uploaded once and downloaded once per frame),
    # "host" copies them to host memory first; "auto" is "device" on CUDA, "host" otherwise.
    composite: Composite = "auto"
    # Give each pasted face the sensor noise it lacks against the frame around it (streamanon/noise.py):
    # measured where the face goes, at the frame's resolution, and added before the blend. A no-op
    # on clean video; on a noisy camera (night, infrared) the face no longer stands out as smooth.
    match_noise: bool = True

    def __post_init__(self) -> None:
        if self.composite not in COMPOSITE_PLACES:
            raise UserError(f"generate.composite must be one of {', '.join(COMPOSITE_PLACES)}, got {self.composite!r}")
        if self.guard_candidates < 0:
            raise UserError(f"generate.guard_candidates must be >= 0, got {self.guard_candidates}")
        if self.guard_background not in (None, True, False):
            raise UserError(f"generate.guard_background must be true or false, got {self.guard_background!r}")
        if self.guard_check_seconds < 0:
            raise UserError(f"generate.guard_check_seconds must be >= 0, got {self.guard_check_seconds}")
        if self.guard_landmarks not in GUARD_LANDMARKS:
            raise UserError(
                f"generate.guard_landmarks must be one of {', '.join(GUARD_LANDMARKS)}, got {self.guard_landmarks!r}"
            )
        if not 0.0 < self.guard_distance < 2.0:
            raise UserError(f"generate.guard_distance must be in (0, 2), got {self.guard_distance}")


@dataclass(frozen=True)
class EncodeConfig:
    """Output video encoding."""

    codec: str = "libx264"
    crf: int = 18
    preset: str = "veryfast"  # medium encodes 1080p at ~3 fps on 2 cores; veryfast ~3x faster
    pix_fmt: str = "yuv420p"


@dataclass(frozen=True)
class AnonymizerConfig:
    """Every setting of the pipeline."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    smooth: SmoothConfig = field(default_factory=SmoothConfig)
    replace: ReplaceConfig = field(default_factory=ReplaceConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    device: str = "cpu"

    @property
    def mode(self) -> str:
        return self.replace.mode

    def with_overrides(self, overrides: dict[str, Any]) -> "AnonymizerConfig":
        """Return a copy with dotted-key overrides applied, e.g. ``{"detect.threshold": 0.5}``.

        ``None`` values are ignored so that unset CLI options keep the file/default value.
        """
        config = self
        for key, value in overrides.items():
            if value is None:
                continue
            config = _replace_dotted(config, key.split("."), value)
        return config


# Bounds of numeric settings, checked wherever a value is set (TOML file or command line), so that
# no value can quietly switch hiding off (a negative margin shrinks the hidden region to nothing).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "detect.threshold": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "detect.edge_threshold": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "detect.scale": (lambda v: v is None or 0.0 < v <= 4.0, "in (0, 4]"),
    "detect.min_size": (lambda v: v >= 0.0, ">= 0"),
    "detect.nms_iou": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "detect.rotations": (lambda v: 0 < len(v) == len(set(v)) and set(v) <= set(QUARTER_ANGLES),
                         "distinct values among 0, 90, 180, 270"),  # fmt: skip
    "track.iou_threshold": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "track.max_missed": (lambda v: v >= 0, ">= 0"),
    # More than one detection before a track is reported would show a new face unaltered in its
    # first frames: privacy fails closed, so a face is hidden from its first detection.
    "track.min_hits": (lambda v: v == 1, "1 (a face is hidden from its first detection)"),
    "smooth.min_cutoff": (lambda v: v > 0.0, "> 0"),
    "smooth.beta": (lambda v: v >= 0.0, ">= 0"),
    "smooth.d_cutoff": (lambda v: v > 0.0, "> 0"),
    "photometric.bilateral_diameter": (lambda v: 1 <= v <= 255, "in [1, 255]"),
    "photometric.bilateral_sigma_color": (lambda v: v > 0.0, "> 0"),
    "photometric.bilateral_sigma_space": (lambda v: v > 0.0, "> 0"),
    "photometric.shading_downsample": (lambda v: v in (1, 2, 4), "1, 2 or 4"),
    "photometric.pyramid_levels": (lambda v: 1 <= v <= 16, "in [1, 16]"),
    "replace.margin": (lambda v: 0.0 <= v <= 2.0, "in [0, 2]"),
    "replace.pixel_blocks": (lambda v: 1 <= v <= 1024, "in [1, 1024]"),
    "replace.solid_color": (lambda v: all(0 <= c <= 255 for c in v), "three values in [0, 255]"),
    "replace.feather": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "generate.crop_size": (lambda v: 16 <= v <= 1024, "in [16, 1024]"),
    "generate.guard_candidates": (lambda v: 0 <= v <= 1024, "in [0, 1024]"),
    "encode.crf": (lambda v: 0 <= v <= 63, "in [0, 63]"),
}
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
QUARTER_ANGLES = (0, 90, 180, 270)


def override_from_text(item: str) -> tuple[str, Any]:
    """``(key, value)`` of a ``KEY=VALUE`` setting from a command line (the benchmarks' ``--set``):
    the value read as TOML (``3`` an int, ``0.5`` a float, ``true`` a bool, ``[0, 90]`` a list), else
    taken as text (``encode.preset=slow``); ``ValueError`` without ``=`` or a key. The loader checks
    the value like any other setting."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, e.g. detect.scale=2, got {item!r}")
    try:
        return key.strip(), tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value


def rotations_from_text(text: str) -> tuple[int, ...]:
    """``detect.rotations`` from a command line: ``all`` or distinct comma-separated angles among
    0, 90, 180, 270; ``ValueError`` otherwise."""
    if text.strip().lower() == "all":
        return QUARTER_ANGLES
    try:
        angles = tuple(int(part) for part in text.split(","))
    except ValueError:
        angles = ()
    if not angles or len(set(angles)) != len(angles) or not set(angles) <= set(QUARTER_ANGLES):
        raise ValueError(f"expected distinct angles among 0,90,180,270 or 'all', got {text!r}")
    return angles


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        plural = {int: "whole numbers", float: "numbers", str: "strings"}.get(typing.get_args(kind)[0], "values")
        if typing.get_args(kind)[-1] is Ellipsis:
            return f"a list of {plural}"
        return f"a list of {len(typing.get_args(kind))} {plural}"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
            type(None): "unset"}.get(kind, str(kind))  # fmt: skip


def _coerce(kind: Any, value: Any) -> Any:
    """``value`` as the annotated type ``kind`` (an int where a float is due), or raise ``TypeError``."""
    origin = typing.get_origin(kind)
    if origin is Literal:
        if value in typing.get_args(kind):
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _coerce(option, value)
            except TypeError:
                continue
    elif origin is tuple:
        items = typing.get_args(kind)
        if isinstance(value, (list, tuple)) and len(items) == 2 and items[1] is Ellipsis:
            return tuple(_coerce(items[0], v) for v in value)
        if isinstance(value, (list, tuple)) and len(value) == len(items):
            return tuple(_coerce(k, v) for k, v in zip(items, value))
    elif kind is type(None):
        if value is None:
            return value
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise TypeError(kind)


def _checked(obj: Any, name: str, dotted: str, value: Any) -> Any:
    """``value`` for setting ``dotted`` (field ``name`` of ``obj``), type- and range-checked."""
    if name == "mode" and value not in MODES:
        raise UserError(f"unknown mode '{value}' (choose from {', '.join(MODES)})")
    kind = typing.get_type_hints(type(obj))[name]
    try:
        value = _coerce(kind, value)
    except TypeError:
        raise UserError(f"setting {dotted} must be {_type_name(kind)}, got {value!r}") from None
    if dotted in RANGES:
        ok, bound = RANGES[dotted]
        if not ok(value):
            raise UserError(f"setting {dotted} must be {bound}, got {value!r}")
    if dotted == "device" and not DEVICE_PATTERN.fullmatch(value):
        raise UserError(f"setting device must be cpu, cuda or cuda:N, got {value!r}")
    return value


def _replace_dotted(obj: Any, path: list[str], value: Any, prefix: str = "") -> Any:
    name = path[0]
    names = {f.name for f in dataclasses.fields(obj)}
    if name not in names:
        raise UserError(f"unknown setting '{prefix}{name}' (known: {', '.join(sorted(names))})")
    if len(path) == 1:
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            raise UserError(f"setting '{prefix}{name}' is a section, not a value")
        return dataclasses.replace(obj, **{name: _checked(obj, name, prefix + name, value)})
    child = getattr(obj, name)
    if not dataclasses.is_dataclass(child):
        raise UserError(f"setting '{prefix}{name}' has no sub-settings")
    return dataclasses.replace(obj, **{name: _replace_dotted(child, path[1:], value, f"{prefix}{name}.")})


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> AnonymizerConfig:
    """Build a config from defaults, an optional TOML file, then dotted-key overrides.

    A top-level ``mode`` key in the file is a shorthand for ``replace.mode``.
    """
    config = AnonymizerConfig()
    if path is not None:
        path = Path(path)
        try:
            table = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"config file {path} is not valid TOML: {exc}") from None
        if "mode" in table:
            replace_table = table.setdefault("replace", {})
            if not isinstance(replace_table, dict):
                raise UserError(f"config file {path}: 'replace' must be a table ([replace]), got {replace_table!r}")
            if "mode" in replace_table:
                raise UserError(
                    f"config file {path} sets the mode twice (mode = {table['mode']!r} and [replace] mode = "
                    f"{replace_table['mode']!r}): keep one"
                )
            replace_table["mode"] = table.pop("mode")
        config = config.with_overrides(_flatten(table))
    return config.with_overrides(overrides or {})
