"""``streamanon train validate``: the generator's acceptance figures on held-out faces.

For each validation face (aligned crop + its 68 landmarks from ``prepare``) the generator draws
a face from its own latent; the photometric post-processing of the pipeline then relights and
colour-matches it, exactly as ``--mode generate`` does. On the result:

* **detection**: does dlib's HOG detector (independent of our CenterFace) find a face? Its rate
  on the original crops is reported beside it: the ceiling at this crop size.
* **landmark NME**: CenterFace + dlib's 68-point predictor on the output (the pipeline's own
  landmark stage), L1 over the 68 points divided by the condition's inter-ocular distance
  (outer eye corners): does the new face show the requested pose and expression?
* **re-identification**: dlib ResNet embedding of the output (at its own predicted landmarks,
  what an attacker would do) against the original's; distance < 0.6 is dlib's "same person".
  ``reid_rate_hog`` is the same with dlib's stock landmark pipeline (the HOG detector's box
  handed to the 68-point predictor as it is; where HOG finds nothing, the landmarks above): an
  attacker whose landmarks the identity guard cannot have copied: by default (``--guard-landmarks
  both``) the guard measures its candidates with this judge's own CenterFace and landmark stage
  too, so the row's ``reid_rate`` no longer is an independent figure for the shown faces.
* **diversity**: the distance between two latents' faces for the same condition (different
  tracks must get different people).

Figures are computed on the raw generator output and without the identity guard too, so the
share of post-processing and guard is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import PhotometricConfig
from ..errors import UserError
from ..faces.align import face_mask
from ..metrics.identity import REID_THRESHOLD as REID_DISTANCE
from ..metrics.landmarks import pose_nme
from ..types import AlignedFace
from .dataset import FaceShardDataset
from .report import sample_grid

@dataclass
class FaceResult:
    """Per-face measurements of one output image."""

    detected: bool
    nme: float
    distance: float
    embedding: np.ndarray  # (128,) dlib descriptor at the output's own landmarks
    hog_distance: float  # the same distance at dlib's stock landmarks (HOG box; see the module docstring)


class FaceJudge:
    """dlib HOG detection, pipeline landmarks and dlib embeddings of face crops."""

    def __init__(self) -> None:
        from ..faces.detect import CenterFaceDetector
        from ..faces.embed import DlibHogDetector, default_embedder
        from ..faces.landmarks import LandmarkPredictor, NearestFaceLandmarks

        self.hog = DlibHogDetector(upsample=1)
        self.centerface = CenterFaceDetector(threshold=0.4, coarse_side=None)
        self.predictor = LandmarkPredictor()
        self.nearest = NearestFaceLandmarks(self.centerface, self.predictor)
        self.stock_predictor = LandmarkPredictor(conversion="none")  # dlib's own use: the HOG box as it is
        self.embedder = default_embedder()

    def landmarks(self, image: np.ndarray, condition: np.ndarray) -> np.ndarray:
        """Predicted (68, 2) landmarks of the face nearest the condition's centre (CenterFace +
        the pipeline's landmark stage; without a detection, dlib placed in the condition's box)."""
        return self.nearest([image], condition)[0]

    def judge(self, image: np.ndarray, condition: np.ndarray, reference_embedding: np.ndarray) -> FaceResult:
        predicted = self.landmarks(image, condition)
        hog_boxes = self.hog(image)
        stock = predicted
        if len(hog_boxes):
            centres = (hog_boxes[:, :2] + hog_boxes[:, 2:]) / 2
            box = hog_boxes[int(np.argmin(np.linalg.norm(centres - condition.mean(axis=0), axis=1)))]
            stock = self.stock_predictor.predict(image, (box - [0, 0, 1, 1])[None])[0]  # dlib's inclusive rect
        embedding, stock_embedding = self.embedder.embed_many(image, np.stack([predicted, stock]))
        return FaceResult(
            detected=len(hog_boxes) > 0,
            nme=pose_nme(condition, predicted),
            distance=float(np.linalg.norm(embedding - reference_embedding)),
            embedding=embedding,
            hog_distance=float(np.linalg.norm(stock_embedding - reference_embedding)),
        )


def _aggregate(results: list[FaceResult]) -> dict:
    distances = np.array([r.distance for r in results])
    hog_distances = np.array([r.hog_distance for r in results])
    nmes = np.array([r.nme for r in results])
    return {
        "detection_rate": round(float(np.mean([r.detected for r in results])), 4),
        "landmark_nme_mean": round(float(np.mean(nmes)), 4),
        "landmark_nme_median": round(float(np.median(nmes)), 4),
        "reid_rate": round(float(np.mean(distances < REID_DISTANCE)), 4),
        "embedding_distance_mean": round(float(np.mean(distances)), 4),
        "embedding_distance_min": round(float(np.min(distances)), 4),
        "reid_rate_hog": round(float(np.mean(hog_distances < REID_DISTANCE)), 4),
    }


def validate_generator(
    weights: str | Path | None,
    data_dir: str | Path,
    count: int = 500,
    seed: int = 0,
    grid_path: str | Path | None = None,
    progress: bool = False,
    guard_candidates: int = 32,
    guard_plausibility: bool = True,
    start: int = 0,
    guard_landmarks: str = "both",
) -> dict:
    """Acceptance figures of generator ``weights`` on ``count`` validation faces from ``start``.

    Rows: ``original`` (the judges on the real crops: the ceiling), ``raw`` (generator output,
    first latent), ``unguarded`` (+ photometric post-processing), ``output`` (what ``--mode
    generate`` shows: the identity guard's choice among ``guard_candidates`` latents, blurred
    when none is safe; ``guard_candidates=0`` switches the guard off; ``guard_plausibility``:
    whether the guard shows the most face-like safe candidate, by CenterFace, or the farthest;
    ``guard_landmarks``: where the guard embeds its candidates, see ``IdentityGuard``; it finds
    a candidate's own landmarks with the judge's CenterFace and landmark predictor, as the
    pipeline does with its own).
    """
    from tqdm import tqdm

    from ..config import ReplaceConfig
    from ..generate.guard import IdentityGuard, postprocessings
    from ..generate.runtime import load_generator
    from ..photometric import reference as photometric
    from ..replace import hide_face

    runtime = load_generator(weights, device="cpu", backend="eager", seed=seed)
    size = runtime.resolution
    data = FaceShardDataset(data_dir, "val")
    if data.resolution != size:
        raise ValueError(f"validation data is {data.resolution} px but the generator is {size} px")
    if not 0 <= start < len(data):
        raise UserError(f"start must be in [0, {len(data)}) for these {len(data)} validation faces, got {start}")
    count = min(count, len(data) - start)
    judge = FaceJudge()
    photometric_config = PhotometricConfig()
    ways = postprocessings(photometric, photometric_config)
    postprocess = ways["full"]
    guard = None
    if guard_candidates:
        # The pipeline's own detector scores plausibility (dlib's HOG, the judge, stays independent).
        plausibility = judge.centerface.face_scores if guard_plausibility else None
        guard = IdentityGuard(runtime, ways, guard_candidates, REID_DISTANCE, judge.embedder, plausibility,
                              guard_landmarks, judge.nearest)  # fmt: skip
    started = time.perf_counter()
    rows: dict[str, list[FaceResult]] = {"original": [], "raw": [], "unguarded": [], "output": []}
    diversity: list[float] = []
    tried: list[int] = []
    choice_seconds: list[float] = []
    unsafe = 0
    strict = 0
    bold = 0
    grid_rows: list[list[np.ndarray]] = [[], [], [], [], []]
    for index in tqdm(range(start, start + count), desc="validating", disable=not progress, unit="face"):
        crop, landmarks = data.raw(index)
        mask = face_mask(landmarks, size)
        face = AlignedFace(track_id=index, image=crop, matrix=np.eye(2, 3), landmarks=landmarks, mask=mask)
        # Track ids index and index + count: two different tracks, for the diversity figure.
        raw, other = runtime([face, face], track_ids=[index, index + count])
        unguarded, other = postprocess(np.stack([raw, other]), np.stack([crop, crop]), np.stack([mask, mask]))
        output = unguarded
        if guard is not None:
            choosing = time.perf_counter()
            choice = guard.choose(face, seed)
            choice_seconds.append(time.perf_counter() - choosing)
            tried.append(choice.tried)
            strict += choice.safe and choice.postprocess != "full"
            bold += choice.safe and choice.scale != 1.0
            if choice.attempt != 0 or choice.postprocess != "full":
                show = ways[choice.postprocess]
                output = show(runtime([face], latents=choice.latent[None]), crop[None], mask[None])[0]
            if not choice.safe:  # fail closed, as the pipeline does
                unsafe += 1
                output = crop.copy()
                hide_face(output, np.concatenate([landmarks.min(0), landmarks.max(0)]), "blur", ReplaceConfig())
        reference = judge.embedder.embed(crop, landmarks)
        for name, image in (("original", crop), ("raw", raw), ("unguarded", unguarded), ("output", output)):
            rows[name].append(judge.judge(image, landmarks, reference))
        other_embedding = judge.embedder.embed(other, judge.landmarks(other, landmarks))
        diversity.append(float(np.linalg.norm(other_embedding - rows["unguarded"][-1].embedding)))
        if len(grid_rows[0]) < 8:
            masked = crop.copy()
            masked[mask > 0] = 128
            for row, image in zip(grid_rows, (masked, raw, unguarded, output, crop)):
                row.append(image)
    summary = {
        "faces": count,
        "first_face": start,
        "validation_faces": len(data),
        "seed": seed,
        "weights": Path(runtime_weights_name(weights)).name,
        "photometric": {k: getattr(photometric_config, k) for k in photometric_config.__dataclass_fields__},
        "guard": {
            "candidates": guard_candidates,
            "plausibility": "centerface" if guard is not None and guard_plausibility else None,
            "threshold": REID_DISTANCE,
            "landmarks": guard_landmarks if guard is not None else None,
            "seconds_per_choice": round(float(np.mean(choice_seconds)), 4) if choice_seconds else None,
            "mean_tried": round(float(np.mean(tried)), 2) if tried else None,
            "unsafe_rate": round(unsafe / count, 4) if guard is not None else None,
            "strict_rate": round(strict / count, 4) if guard is not None else None,
            "bold_rate": round(bold / count, 4) if guard is not None else None,
        },
        **{name: _aggregate(results) for name, results in rows.items()},
        "diversity_distance_mean": round(float(np.mean(diversity)), 4),
        "diversity_same_person_rate": round(float(np.mean(np.array(diversity) < REID_DISTANCE)), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if grid_path is not None:
        from ..io.images import write_image

        write_image(Path(grid_path), sample_grid([np.stack(r) for r in grid_rows]))
    return summary


def runtime_weights_name(weights: str | Path | None) -> str:
    """The weights file a validation used (the registry's default when ``weights`` is None)."""
    from ..generate.runtime import resolve_weights

    return str(resolve_weights(weights))
