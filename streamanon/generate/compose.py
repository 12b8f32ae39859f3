"""From aligned faces and their latents to pixels of the output frame: generator, photometric
post-processing, paste-back.

Two paths with the same result (up to one grey level of rounding):

- **host**: the generator's faces come back to host memory, the photometric backend takes NumPy
  arrays (the CUDA backend uploads and downloads them itself) and OpenCV pastes them
  (:func:`streamanon.composite.paste_placed`);
- **device**: the faces stay on the generator's device: the CuPy photometric backend takes the
  tensors over DLPack, their alphas are feathered there (:func:`streamanon.composite_torch.feather`,
  the host's values exactly) and one batch pastes them into the frame's face region
  (:func:`~streamanon.composite_torch.paste_placed_batch`), which comes back once per frame (and
  goes up once, unless the caller passes the frame already on the device). The host only places
  each face, from its mask's support box (:func:`streamanon.composite.feather_support`).

Both give each face the sensor noise it lacks against the frame it is pasted into, measured there
at the frame's resolution (``match_noise``; :mod:`streamanon.noise`, :mod:`streamanon.noise_torch`:
the same tile at the same seeded offsets, so the same grain).

Needs no landmark predictor or video I/O, so the GPU-side cost of generate mode can be timed on
its own (``benchmarks/bench_face_path.py``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..composite import feather, feather_support, paste_placed, place_support
from ..config import Composite
from ..noise import noise_seed
from ..timing import NULL_TIMER, StageClock
from ..types import AlignedFace

Postprocess = Callable[[object, np.ndarray, np.ndarray], object]


def composites_on_device(setting: Composite, device) -> bool:
    """Whether ``setting`` (``generate.composite``) means the device path for a generator on ``device``."""
    if setting == "auto":
        return getattr(device, "type", str(device)) == "cuda"
    return setting == "device"


class FaceCompositor:
    """Generates, post-processes and pastes the faces of one frame.

    Args:
        generator: a ``GeneratorRuntime``.
        postprocess: ``name -> (fakes, originals, masks) -> faces``, as
            :func:`streamanon.generate.guard.postprocessings` builds them.
        feather: soft edge of the paste, as a fraction of the face size (``replace.feather``).
        composite: ``generate.composite``: "auto" (device on CUDA), "host" or "device".
        match_noise: give each pasted face the sensor noise it lacks against the frame
            (``generate.match_noise``, :mod:`streamanon.noise`).
        seed: base of the noise's seeds (``generate.seed``): a face's noise is drawn from it, the
            frame index and the track id, so a file comes out the same on every run.
    """

    def __init__(self, generator, postprocess: dict[str, Postprocess], feather: float,
                 composite: Composite = "auto", match_noise: bool = True, seed: int = 0) -> None:  # fmt: skip
        self.generator = generator
        self.postprocess = postprocess
        self.feather = float(feather)
        self.on_device = composites_on_device(composite, generator.device)
        self.match_noise = bool(match_noise)
        self.seed = int(seed)

    @property
    def where(self) -> str:
        """Where faces are composited, for run summaries: "host" or the device's name."""
        return str(self.generator.device) if self.on_device else "host"

    def feather_px(self, face: AlignedFace) -> float:
        """Width of the paste's soft edge in crop pixels: the face spans about half the crop, so
        it is ``feather`` of the face size."""
        return self.feather * face.size / 2

    def alpha(self, face: AlignedFace) -> np.ndarray:
        """Paste-back alpha of a crop (the device path computes the same on the device)."""
        return feather(face.mask, self.feather_px(face), outside_border=True)

    def noise_seed(self, face: AlignedFace, frame_index: int) -> int | None:
        """The seed of ``face``'s matched noise in frame ``frame_index``; None without noise matching."""
        return noise_seed(frame_index, face.track_id, self.seed) if self.match_noise else None

    def placement(self, face: AlignedFace, frame_shape: tuple[int, ...], matrix_frame_to_crop=None):
        """Where ``face``'s crop is pasted in a frame of ``frame_shape``: ``(roi, local)`` as
        :func:`~streamanon.composite.paste_region` gives it for :meth:`alpha`, found from the mask
        alone; None when nothing lands. ``matrix_frame_to_crop`` defaults to ``face.matrix``."""
        support = feather_support(face.mask, self.feather_px(face))
        if support is None:
            return None
        matrix = face.matrix if matrix_frame_to_crop is None else matrix_frame_to_crop
        return place_support(frame_shape, matrix, support)

    def __call__(self, image: np.ndarray, out: np.ndarray, aligned: Sequence[AlignedFace], latents: np.ndarray,
                 ways: Sequence[str], timer: StageClock = NULL_TIMER, frame=None,
                 frame_index: int = 0) -> None:  # fmt: skip
        """Paste the generated faces of ``aligned`` into ``out`` (a copy of ``image``), in place.

        ``latents[i]`` (B, latent_dim) is face i's identity and ``ways[i]`` the name of its
        post-processing. ``frame``: ``image`` already on the generator's device, as an (H, W, 3)
        uint8 tensor (the pipeline uploads each frame once); the device path pastes into it
        (it is modified) instead of uploading the region under the faces. ``frame_index`` seeds
        the matched noise. Stages are timed as generate, photometric and composite.
        """
        if not len(aligned):
            return
        seeds = [self.noise_seed(face, frame_index) for face in aligned]
        if self.on_device:
            self._on_device(image, out, aligned, latents, ways, timer, frame, seeds)
            return
        with timer.stage("generate"):
            fakes = self.generator(aligned, latents=latents)
        with timer.stage("photometric"):
            shown = self.postprocessed(fakes, aligned, ways)
        with timer.stage("composite"):
            for face, fake, seed in zip(aligned, shown, seeds):
                placement = self.placement(face, out.shape)
                if placement is not None:
                    paste_placed(out, fake, *placement, self.alpha(face), seed)

    def postprocessed(self, fakes, aligned: Sequence[AlignedFace], ways: Sequence[str], originals=None, masks=None):
        """Each face through its post-processing (``ways[i]``); ``fakes`` (B, S, S, 3) uint8 is a
        NumPy or a CuPy array, and the result is of the same kind. ``originals`` (B, S, S, 3) and
        ``masks`` (B, S, S): the faces' crops and masks where the caller has them already (on the
        device), else stacked from ``aligned``."""
        originals = np.stack([face.image for face in aligned]) if originals is None else originals
        masks = np.stack([face.mask for face in aligned]) if masks is None else masks
        names = list(dict.fromkeys(ways))
        if len(names) == 1:
            return self.postprocess[names[0]](fakes, originals, masks)
        shown = fakes.copy()
        for name in names:
            rows = np.array([i for i, way in enumerate(ways) if way == name])
            shown[rows] = self.postprocess[name](fakes[rows], originals[rows], masks[rows])
        return shown

    def _on_device(self, image: np.ndarray, out: np.ndarray, aligned: Sequence[AlignedFace], latents: np.ndarray,
                   ways: Sequence[str], timer: StageClock, frame, seeds: Sequence[int | None]) -> None:  # fmt: skip
        import torch

        from .. import composite_torch
        from ..gpu import upload
        from ..photometric.tensors import from_backend, to_backend

        with torch.inference_mode():
            with timer.stage("generate"):
                # The crops and masks go up once, for the generator, the photometric steps and the alphas.
                originals = upload(np.stack([face.image for face in aligned]), self.generator.device)
                masks = upload(np.stack([face.mask for face in aligned]), self.generator.device)
                fakes = self.generator.generate_faces(aligned, latents=latents, uploaded=(originals, masks))
            with timer.stage("photometric"):
                shown = self.postprocessed(to_backend(fakes), aligned, ways, to_backend(originals), to_backend(masks))
                shown = from_backend(shown, fakes.device)
            with timer.stage("composite"):
                # Alphas on the device, all faces at once; the host only places them (from the
                # masks' support boxes, the same pixels as the host path's alphas decide).
                alphas = composite_torch.feather(masks, self.feather_px(aligned[0]))
                placements = [self.placement(face, image.shape) for face in aligned]
                placed = [i for i, placement in enumerate(placements) if placement is not None]
                if not placed:
                    return
                rois = np.array([placements[i][0] for i in placed])
                x0, y0 = rois[:, :2].min(axis=0)
                x1, y1 = rois[:, 2:].max(axis=0)
                # The region under all faces goes up once (unless the frame is there already) and
                # comes back once: overlapping faces are pasted in order, as on the host.
                if frame is not None and frame.device == fakes.device:
                    region = frame[y0:y1, x0:x1]
                else:
                    region = upload(image[y0:y1, x0:x1], fakes.device, writable=True)
                # Regions shifted into the pasted region; local (ROI pixel -> crop) holds wherever the ROI is.
                in_region = [((rx1 - x0, ry1 - y0, rx2 - x0, ry2 - y0), local)
                             for (rx1, ry1, rx2, ry2), local in (placements[i] for i in placed)]  # fmt: skip
                rows = upload(np.array(placed), fakes.device) if len(placed) < len(aligned) else slice(None)
                placed_seeds = [seeds[i] for i in placed] if self.match_noise else None
                composite_torch.paste_placed_batch(region, shown[rows], alphas[rows], in_region, placed_seeds)
                out[y0:y1, x0:x1] = region.cpu().numpy()
