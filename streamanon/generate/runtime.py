"""Generator inference: load weights, pick a backend, turn aligned crops into fake faces.

Backends (``backend_name``):

* ``eager``: the PyTorch module as is (float16 on CUDA, float32 on CPU).
* ``compile``: ``torch.compile``; on CUDA with CUDA graphs (``mode="reduce-overhead"``).
* ``tensorrt``: torch-tensorrt engines, one per padded batch size, cached under ``engines/``
  with a name keyed by model hash, GPU name, TensorRT version, batch size, resolution and dtype.
* ``auto``: TensorRT when torch-tensorrt imports and a GPU is present, else ``compile`` on CUDA,
  else ``eager``; any failure to build a faster backend falls back to the next one.

Compiled backends see a fixed set of batch sizes (powers of two up to ``max_batch``, 8 by
default): a batch is padded up to the next one, and a larger one runs in chunks. All of them are
compiled (or their engines built or loaded) when the generator is loaded, so a stream never stops
mid-way to compile for a face count it has not met before (tens of seconds with torch.compile,
minutes for a TensorRT engine).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ModelUnavailable, UserError
from ..gpu import upload
from ..models import cache_dir, resolve_model
from ..types import AlignedFace
from .condition import track_latent
from .model import Generator, GeneratorConfig

log = logging.getLogger(__name__)

BACKENDS = ("auto", "eager", "compile", "tensorrt")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ENGINE_FORMAT = 1  # bump when the engine build recipe changes: old files are then ignored
# Largest batch run at once by default. Eager: the guard's 32 candidates in one call. Compiled
# backends: four sizes (1, 2, 4, 8) to compile at load, enough for most frames; more faces (and
# the guard's candidates) run in chunks of 8.
EAGER_MAX_BATCH = 32
COMPILED_MAX_BATCH = 8

_MISSING_WEIGHTS = (
    "generator weights ({name}) not found: the package ships them in streamanon/weights, so this "
    "installation is incomplete; reinstall streamanon, or pass weights with --weights PATH (or set "
    "generate.weights, or put {name} in $STREAMANON_MODELS); 'streamanon train appearance' or "
    "'streamanon train run' makes new ones"
)


def default_engine_dir() -> Path:
    """Where compiled engines are cached: ``$STREAMANON_ENGINES``, the checkout's ``engines/``,
    or ``engines`` in :func:`streamanon.models.cache_dir` (``~/.cache/streamanon/engines``) for an
    installed package."""
    env = os.environ.get("STREAMANON_ENGINES")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "engines"
    if (checkout / "README.md").is_file():
        return checkout
    return cache_dir() / "engines"


def _buckets(max_batch: int) -> list[int]:
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


def _resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        # float16 halves memory traffic on GPUs; CPU kernels are fastest (and exact) in float32.
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"unknown generator dtype '{dtype}' (choose from auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{device}' (use cpu or cuda[:N])") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available to PyTorch")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device '{device}' (use cpu or cuda[:N])")
    return dev


def tensorrt_available() -> bool:
    """True when torch-tensorrt imports (it needs a CUDA build of PyTorch)."""
    try:
        import torch_tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as unavailable
        return False
    return True


class GeneratorRuntime:
    """A loaded generator on one device and backend.

    ``runtime(aligned_faces)`` -> (B, S, S, 3) uint8 RGB fake crops (context = the input crop's
    own pixels outside each face mask). Each face's latent comes from its ``track_id`` and
    ``seed``, so a track keeps its fake identity from frame to frame.
    """

    def __init__(
        self,
        generator: Generator,
        device: torch.device,
        dtype: torch.dtype,
        backend: str,
        model_hash: str,
        seed: int = 0,
        max_batch: int = EAGER_MAX_BATCH,
        engine_dir: Path | None = None,
        cuda_graphs: bool = True,
        fallback: bool = False,
    ) -> None:
        self.config: GeneratorConfig = generator.config
        self.device = device
        self.dtype = dtype
        self.seed = int(seed)
        self.model_hash = model_hash
        self.max_batch = int(max_batch)
        self.buckets = _buckets(self.max_batch)
        self.engine_dir = engine_dir or default_engine_dir()
        self.cuda_graphs = cuda_graphs
        self._fallback = fallback  # auto mode: a failing compiled backend falls back to eager
        # One call at a time: CUDA-graph and TensorRT runs use static buffers (the identity guard
        # may call from a background thread while the pipeline generates).
        self._lock = threading.Lock()
        self._latents: OrderedDict[int, np.ndarray] = OrderedDict()
        self.module = generator.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.backend_name = backend
        self._run: Callable[..., torch.Tensor]
        self._engines: dict[int, Callable[..., torch.Tensor]] = {}
        if backend == "eager":
            self._run = self.module
        elif backend == "compile":
            # torch.compile keeps its kernels under /tmp by default, which a reboot empties (a robot's or a
            # car's computer reboots daily): in streamanon's cache folder each later start finds them.
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
            mode = "reduce-overhead" if (device.type == "cuda" and cuda_graphs) else "max-autotune-no-cudagraphs"
            if device.type == "cpu":
                mode = "default"
            self._run = torch.compile(self.module, mode=mode, dynamic=False, fullgraph=True)
        elif backend == "tensorrt":
            self._run = self._run_tensorrt
        else:
            raise UserError(f"unknown generator backend '{backend}' (choose from {', '.join(BACKENDS)})")

    def eager_twin(self) -> GeneratorRuntime:
        """A runtime for another thread: the same module and weights (no copy), run eagerly.

        CUDA graphs and TensorRT contexts belong to the thread that built them, so the identity
        guard's thread cannot share a compiled runtime; this one runs beside it with its own lock
        (it keeps no static buffers). Its faces differ from the compiled ones by the compiler's
        rounding only (``compile`` matches eager within 2 levels, tested). An eager runtime is its
        own twin.
        """
        if self.backend_name == "eager":
            return self
        return GeneratorRuntime(self.module, self.device, self.dtype, "eager", self.model_hash, seed=self.seed,
                                max_batch=self.max_batch, engine_dir=self.engine_dir)  # fmt: skip

    # ----------------------------------------------------------------- tensor level
    @property
    def resolution(self) -> int:
        return self.config.resolution

    def latents(self, track_ids: Sequence[int]) -> torch.Tensor:
        """Latent codes (B, latent_dim) float32 on the device for these track ids."""
        codes = []
        for tid in track_ids:
            tid = int(tid)
            code = self._latents.get(tid)
            if code is None:
                code = track_latent(tid, self.seed, self.config.latent_dim)
                self._latents[tid] = code
                if len(self._latents) > 4096:  # long streams: forget the oldest tracks
                    self._latents.popitem(last=False)
            codes.append(code)
        return upload(np.stack(codes), self.device)

    @torch.inference_mode()
    def generate(
        self, crop: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor, latents: torch.Tensor
    ) -> torch.Tensor:
        """Tensor-level call: crop (B,3,S,S) in [-1,1], mask (B,1,S,S), landmarks (B,68,2) crop px,
        latents (B,D) -> (B,3,S,S) float in [-1, 1] (clamped)."""
        outputs = []
        for start in range(0, crop.shape[0], self.max_batch):
            part = slice(start, start + self.max_batch)
            outputs.append(self._forward(crop[part], mask[part], landmarks[part], latents[part]))
        return torch.cat(outputs).clamp(-1.0, 1.0)

    def _forward(self, crop, mask, landmarks, latents) -> torch.Tensor:
        crop = crop.to(self.device, self.dtype)
        mask = mask.to(self.device, self.dtype)
        landmarks = landmarks.to(self.device, torch.float32)
        latents = latents.to(self.device, torch.float32)
        n = crop.shape[0]
        if self.backend_name != "eager":
            padded = next(b for b in self.buckets if b >= n)
            if padded > n:
                pad = padded - n
                crop = torch.cat([crop, crop[-1:].expand(pad, -1, -1, -1)])
                mask = torch.cat([mask, mask[-1:].expand(pad, -1, -1, -1)])
                landmarks = torch.cat([landmarks, landmarks[-1:].expand(pad, -1, -1)])
                latents = torch.cat([latents, latents[-1:].expand(pad, -1)])
        with self._lock:
            try:
                out = self._run(crop, mask, landmarks, latents)
            except Exception:
                if not self._fallback or self.backend_name == "eager":
                    raise
                log.warning("generator backend %s failed; falling back to eager", self.backend_name, exc_info=True)
                self.backend_name, self._run = "eager", self.module
                out = self._run(crop, mask, landmarks, latents)
            # clone: CUDA-graph outputs live in a static buffer that the next call overwrites.
            return out[:n].float().clone()

    # ----------------------------------------------------------------- numpy level
    @torch.inference_mode()
    def __call__(
        self,
        aligned: Sequence[AlignedFace],
        track_ids: Sequence[int] | None = None,
        latents: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fake faces for aligned crops -> (B, S, S, 3) uint8 RGB host array.

        Each face's latent is ``latents[i]`` when given (B, latent_dim), else the track latent
        of ``track_ids[i]``; ``track_ids`` default to each face's own ``track_id``.
        """
        return self.generate_faces(aligned, track_ids, latents).cpu().numpy()

    @torch.inference_mode()
    def generate_faces(
        self,
        aligned: Sequence[AlignedFace],
        track_ids: Sequence[int] | None = None,
        latents: np.ndarray | None = None,
        *,
        uploaded: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """As :meth:`__call__`, but the faces stay where they were made: a (B, S, S, 3) uint8
        tensor on the runtime's device (the pipeline composites them there on a GPU).

        ``uploaded``: the faces' crops (B, S, S, 3) uint8 and masks (B, S, S) float32, already on
        the runtime's device (the device compositor uploads them once for this and the
        photometric steps); by default they are stacked from ``aligned`` and uploaded here.
        """
        size = self.resolution
        if len(aligned) == 0:
            return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=self.device)
        if track_ids is None:
            track_ids = [face.track_id for face in aligned]
        if len(track_ids) != len(aligned):
            raise ValueError(f"{len(aligned)} faces but {len(track_ids)} track ids")
        if latents is not None and np.shape(latents) != (len(aligned), self.config.latent_dim):
            raise ValueError(f"latents must be ({len(aligned)}, {self.config.latent_dim}), got {np.shape(latents)}")
        for face in aligned:
            if face.image.shape != (size, size, 3) or face.mask.shape != (size, size):
                raise UserError(
                    f"aligned crop is {face.image.shape[1]}x{face.image.shape[0]} but the generator weights are for "
                    f"{size}x{size}; set generate.crop_size = {size}"
                )
        if uploaded is None:
            # uint8 crosses to the GPU (4x less than float); scaling happens there.
            images = upload(np.stack([face.image for face in aligned]), self.device)
            mask = upload(np.stack([face.mask for face in aligned]).astype(np.float32, copy=False), self.device)
        else:
            images, mask = uploaded
            if tuple(images.shape) != (len(aligned), size, size, 3) or tuple(mask.shape) != (len(aligned), size, size):
                raise ValueError(f"uploaded crops {tuple(images.shape)} and masks {tuple(mask.shape)} do not match "
                                 f"{len(aligned)} faces of {size}x{size}")  # fmt: skip
        crop = images.permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0)
        landmarks = upload(np.stack([face.landmarks for face in aligned]).astype(np.float32, copy=False), self.device)
        codes = self.latents(track_ids) if latents is None else upload(np.asarray(latents, np.float32), self.device)
        out = self.generate(crop, mask[:, None], landmarks, codes)
        out = out.add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return out.permute(0, 2, 3, 1).contiguous()

    # ----------------------------------------------------------------- TensorRT
    def warmup(self, batch_sizes: Sequence[int] | None = None) -> None:
        """Run (and so compile or build) the backend for these batch sizes (default: 1)."""
        size = self.resolution
        for b in batch_sizes or [1]:
            crop = torch.zeros(b, 3, size, size)
            mask = torch.zeros(b, 1, size, size)
            mask[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0
            landmarks = torch.full((b, 68, 2), size / 2.0)
            self.generate(crop, mask, landmarks, torch.zeros(b, self.config.latent_dim))

    def engine_path(self, batch: int) -> Path:
        """Cache file of the TensorRT engine for one padded batch size."""
        import tensorrt
        import torch_tensorrt

        gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(self.device)).strip("-")
        dtype = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]
        name = (
            f"generator-{self.model_hash[:16]}-{gpu}-trt{tensorrt.__version__}-tt{torch_tensorrt.__version__}"
            f"-b{batch}-r{self.resolution}-{dtype}-v{ENGINE_FORMAT}.ep"
        )
        return self.engine_dir / name

    def _example_inputs(self, batch: int) -> list[torch.Tensor]:
        size = self.resolution
        crop = torch.zeros(batch, 3, size, size, device=self.device, dtype=self.dtype)
        mask = torch.zeros(batch, 1, size, size, device=self.device, dtype=self.dtype)
        landmarks = torch.full((batch, 68, 2), size / 2.0, device=self.device)
        latents = torch.zeros(batch, self.config.latent_dim, device=self.device)
        return [crop, mask, landmarks, latents]

    def _engine(self, batch: int) -> Callable[..., torch.Tensor]:
        engine = self._engines.get(batch)
        if engine is not None:
            return engine
        import torch_tensorrt  # noqa: F401 - registers the TensorRT ops that saved engines call

        path = self.engine_path(batch)
        if path.is_file():
            try:
                engine = torch.export.load(str(path)).module()
                log.info("loaded TensorRT engine %s", path)
            except Exception:  # noqa: BLE001 - a stale or truncated cache file is rebuilt
                log.warning("cannot load cached engine %s; rebuilding it", path, exc_info=True)
                engine = None
        if engine is None:
            # torch.export (under torch-tensorrt) traces normal tensors, not inference-mode ones.
            with torch.inference_mode(False), torch.no_grad():
                engine = self._build_engine(batch, path)
        self._engines[batch] = engine
        return engine

    def _build_engine(self, batch: int, path: Path) -> Callable[..., torch.Tensor]:
        import torch_tensorrt

        inputs = self._example_inputs(batch)
        log.info("building TensorRT engine for batch %d (takes a minute)", batch)
        options = dict(ir="dynamo", enabled_precisions={self.dtype}, min_block_size=1)
        try:
            compiled = torch_tensorrt.compile(self.module, arg_inputs=inputs, **options)
        except TypeError:  # torch-tensorrt < 2.5 names the argument `inputs`
            compiled = torch_tensorrt.compile(self.module, inputs=inputs, **options)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial.ep")
        try:
            try:
                torch_tensorrt.save(compiled, str(tmp), arg_inputs=inputs)
            except TypeError:
                torch_tensorrt.save(compiled, str(tmp), inputs=inputs)
            os.replace(tmp, path)
        except Exception:  # noqa: BLE001 - an unwritable cache costs a rebuild next time, nothing more
            log.warning("cannot cache TensorRT engine at %s", path, exc_info=True)
            tmp.unlink(missing_ok=True)
        return compiled

    def _run_tensorrt(self, crop, mask, landmarks, latents) -> torch.Tensor:
        return self._engine(crop.shape[0])(crop, mask, landmarks, latents)


def _warm_all(runtime: GeneratorRuntime) -> None:
    """Compile (or build) every padded batch size now, saying so first when it will take long:
    otherwise a first start on a GPU sits silent for a minute or more."""
    sizes = ", ".join(map(str, runtime.buckets))
    if runtime.backend_name == "compile":
        kept = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))
        if not kept.is_dir() or not any(kept.iterdir()):
            log.warning("compiling the generator for batches of %s faces on %s: a first start takes a minute or "
                        "two; the kernels are kept in %s for later starts", sizes, runtime.device, kept)  # fmt: skip
    elif runtime.backend_name == "tensorrt":
        if not all(runtime.engine_path(b).is_file() for b in runtime.buckets):
            log.warning("building TensorRT engines for batches of %s faces: this takes minutes; "
                        "'streamanon export' builds them ahead of time", sizes)  # fmt: skip
    runtime.warmup(runtime.buckets)


def resolve_weights(path: str | os.PathLike | None) -> Path:
    """Path of the generator weights, or ``ModelUnavailable`` that says how to get them."""
    try:
        return resolve_model("generator", path)
    except ModelUnavailable:
        if path is not None:
            raise
        from ..models import MODELS

        raise ModelUnavailable(_MISSING_WEIGHTS.format(name=MODELS["generator"].filename)) from None


def load_generator(
    path: str | os.PathLike | None = None,
    device: str = "cpu",
    backend: str = "auto",
    *,
    seed: int = 0,
    dtype: str | None = None,
    max_batch: int | None = None,
    engine_dir: str | os.PathLike | None = None,
    cuda_graphs: bool = True,
    warmup: bool = True,
) -> GeneratorRuntime:
    """Load generator weights and prepare the requested backend.

    Args:
        path: weights file; ``None`` = the registry's ``generator_128.pt``.
        device: ``cpu`` or ``cuda[:N]``.
        backend: ``auto``, ``eager``, ``compile`` or ``tensorrt``.
        seed: base of the per-track latent codes.
        dtype: ``auto`` (float16 on CUDA, float32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        max_batch: largest batch run at once (and largest compiled batch size); default
            ``EAGER_MAX_BATCH`` for eager, ``COMPILED_MAX_BATCH`` for the compiled backends.
        engine_dir: TensorRT engine cache (default :func:`default_engine_dir`).
        cuda_graphs: let ``compile`` capture CUDA graphs.
        warmup: compile/build every padded batch size now, so that failures surface at load time
            and no frame waits for a compile later (``auto`` always does).
    """
    from ..train.checkpoint import generator_from_checkpoint, load_checkpoint, state_dict_hash

    if backend not in BACKENDS:
        raise UserError(f"unknown generator backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if max_batch is not None and max_batch < 1:
        raise UserError(f"max_batch must be >= 1, got {max_batch}")
    dev = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, dev)
    weights = resolve_weights(path)
    payload = load_checkpoint(weights)
    generator = generator_from_checkpoint(payload)
    model_hash = state_dict_hash(payload["generator_ema"])
    options = dict(seed=seed, engine_dir=Path(engine_dir) if engine_dir else None, cuda_graphs=cuda_graphs)

    def batch_limit(name: str) -> int:
        if max_batch is not None:
            return max_batch
        return EAGER_MAX_BATCH if name == "eager" else COMPILED_MAX_BATCH

    if backend != "auto":
        if backend == "tensorrt" and (dev.type != "cuda" or not tensorrt_available()):
            raise UserError("backend 'tensorrt' needs a CUDA device and torch-tensorrt ('pip install streamanon[tensorrt]')")
        runtime = GeneratorRuntime(generator, dev, torch_dtype, backend, model_hash, max_batch=batch_limit(backend),
                                   **options)  # fmt: skip
        if warmup and backend != "eager":
            _warm_all(runtime)
        return runtime

    candidates = ["eager"]
    if dev.type == "cuda":
        candidates = (["tensorrt"] if tensorrt_available() else []) + ["compile", "eager"]
    for name in candidates:
        try:
            runtime = GeneratorRuntime(generator, dev, torch_dtype, name, model_hash, max_batch=batch_limit(name),
                                       **options)  # fmt: skip
            if name != "eager":
                _warm_all(runtime)
            # Built and ran for every batch size: from now on a failure degrades to eager.
            runtime._fallback = True
            return runtime
        except Exception:  # noqa: BLE001 - auto mode: try the next, slower backend
            log.warning("generator backend %s unavailable; trying the next one", name, exc_info=True)
            generator = generator_from_checkpoint(payload)  # a failed build may have moved or traced it
    raise AssertionError("unreachable: eager never fails to construct")


def build_engines(
    path: str | os.PathLike | None = None,
    device: str = "cuda",
    batch_sizes: Sequence[int] | None = None,
    dtype: str | None = None,
    max_batch: int = COMPILED_MAX_BATCH,
    engine_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Build (or find cached) TensorRT engines for every padded batch size; returns their files.

    What an ``export`` command runs once per machine, so that the first video does not wait
    for engine builds.
    """
    runtime = load_generator(
        path, device=device, backend="tensorrt", dtype=dtype, max_batch=max_batch, engine_dir=engine_dir, warmup=False
    )
    sizes = sorted({next(b for b in runtime.buckets if b >= n) for n in (batch_sizes or runtime.buckets)})
    runtime.warmup(sizes)
    return [runtime.engine_path(b) for b in sizes]
