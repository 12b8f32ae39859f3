"""Identity guard: pick, for each new track, a fake identity that a face recogniser does not
match to the original, check it again as the face moves, and refuse (fail closed) when none of
the candidates is unlike enough.

Keeping the landmarks, the head outline and the context means that even a *real* other person
put in the face region is matched to the original by dlib in about one case in ten on the
shared validation crops (random pairs of real faces: 4 %). So the generator alone cannot
promise non-identification. The guard tries the track's candidate latents (see
``track_latent(..., attempt=k)``) in small batches, renders each as the pipeline will show it
(generator + photometric post-processing + paste-back into the frame: a :class:`View`), and
measures the dlib ResNet distance to the original face. It stops once a candidate is at least
``threshold + MARGIN`` away; a candidate is *safe* when it is at least ``threshold`` (dlib's
"same person" bound, 0.6) away.

Which safe candidate: the most face-like one, by a ``plausibility`` score (the pipeline passes
its own CenterFace's confidence on the rendered crop), among those past the highest of
``threshold + MARGIN``, ``threshold + PREFERRED_MARGIN`` and ``threshold`` that any reaches.
Without a score, the farthest. For most faces no candidate gets past ``threshold + MARGIN``,
and the farthest of 32 tends to be the least typical face: on 300 held-out faces dlib's HOG
detector missed 4.4 % of the farthest safe choices and 3.4 % of the most face-like ones
(CenterFace confidence >= 0.9: HOG finds 98.8 % of such renders; 0.8-0.9: 95.8 %; below 0.7:
70 %). The price: the chosen faces sit a little closer to the threshold (validation on 500
faces: detection 94.2 -> 95.4 %, re-identification 2.6 -> 4.2 %).

The photometric steps carry some of the original's look back (relighting with its shading,
its coarsest Laplacian level): on the validation crops they raise the re-identification of the
bare generator output by about a third. So when no candidate is safe with the full
post-processing, the guard tries them again with the next, more conservative one (the pipeline
passes colour transfer only), then the same candidates made bolder (latents scaled by
``BOLD_SCALE``: faces farther from the average), and only then gives up: the pipeline blurs
that face.

Where a candidate is embedded (``landmarks``, ``generate.guard_landmarks``): an attacker does
not know the original's landmarks; they find the shown face's own (``train validate``'s judge:
CenterFace + the pipeline's landmark stage on the output), and dlib's distance moves with the
landmarks. Measured only at the condition's landmarks (the original's: ``"condition"``), about 4
% of the shown faces were safe for the guard but re-identified by the judge. ``"own"`` embeds
each rendered candidate, as pasted into the view, at the landmarks an ``observer`` (the
pipeline's CenterFace and landmark stage,
:class:`~streamanon.faces.landmarks.NearestFaceLandmarks`) finds on it; ``"both"`` counts the
smaller of the two distances, and measures a candidate at its own landmarks only when it is safe
at the condition's (the others are unsafe either way; same choices, 928 -> 682 ms a choice in
the timing below). Validation, faces 0-499, condition / own / both: dlib HOG detection 95.4 /
94.8 / 95.2 %, landmark NME 0.0385 / 0.0403 / 0.0388, re-identified by the judge 4.2 / 0.2 / 0.0
% (no longer independent of the guard: the same landmark stage), re-identified at dlib's stock
landmarks (HOG box -> 68-point predictor, an estimate the guard does not share) 4.8 / 1.6 / 1.4
%, blurred 0.6 / 0.6 / 1.2 %. Faces 500-871, condition / both: detection 95.4 / 95.4 %, NME
0.0398 / 0.0396, judge 2.4 / 0.0 %, stock landmarks 3.8 / 2.1 %, blurred 0.5 / 0.8 %. Time per
choice (128 px crops, 2 CPU cores, interleaved on 20 faces): 466 / 713 / 682 ms; the observer
costs ~12 ms a candidate there (CenterFace ~7 ms, dlib's predictor ~4 ms). In a frame the view
is larger (a 260 px face of a 512 px clip: a 483x512 region): CenterFace at full size would cost
~120 ms a candidate, hence detection at ``OBSERVER_SIDE`` (~10 ms; ~55 and ~5 ms since the
detector's graph fix). ``"both"`` is the configured
default; the class's own default stays ``"condition"`` (no observer needed).

Only the index of the chosen candidate depends on the original face: at most
log2(2 x candidates x post-processings) bits, chosen to be unlike it. The generator itself still
never sees the original pixels.
The distance comes from the same recogniser as ``streamanon train validate``'s
re-identification figure (and, with ``"own"`` or ``"both"``, at the same landmarks), so that
figure is optimistic against other recognisers and other landmark estimates; the validation
also reports the unguarded rate and the rate at dlib's stock landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from types import ModuleType
from typing import Callable

import numpy as np

from ..config import GUARD_LANDMARKS, GuardLandmarks, PhotometricConfig
from ..types import AlignedFace
from .condition import track_latent

# Candidates rendered per batch (the torch embedder runs a batch of 8 at ~5 ms a face, 1 at ~10 ms).
BATCH = 8
# Stop searching once a candidate is this much farther than the threshold: room for the
# observer's own landmark estimate, and for later frames (the pipeline re-checks with half of it).
# That half is needed: a re-check samples one frame in five, and the frames after a check that
# falls short of it can be closer still. Keeping the identity through one such check (swapping at
# the second in a row, or under the threshold) cut the swaps on the shared talking and GRID clips
# from 7 to 4 in 45 s, but `streamanon eval` then re-identified 5 frames of 200 on one talking clip
# (distances 0.56-0.59 right after a check at 0.60-0.65), none before: privacy first, so one
# check short of the bar swaps the identity. Choosing more robust identities instead, simulated
# offline on the same clips (all 32 candidates measured on every frame; the simulation gives the
# real 7 swaps, no leak): the farthest of all 32, 3 swaps but a leak frame; the most plausible within
# 0.03 of the farthest, measured on the last three checked views, 4 swaps and none: too few swaps
# to tell from chance, so not adopted.
MARGIN = 0.1
# A shown identity accepted closer than threshold + MARGIN / 2 (no candidate reached the margin) is
# held to the distance it was accepted at, less this much drift, never below the threshold:
# otherwise it failed every re-check and was chosen again every few frames, for the same result.
RECHECK_DRIFT = 0.03
# Last resort before blurring: the same candidates with their latents scaled by this, i.e. faces
# farther from the average face. On 60 held-out faces such faces were unlike their original more
# often (92 % vs 80 % with 16 candidates) but dlib's HOG found fewer of them (93 % vs 97 %), so
# they are only shown when no ordinary candidate is safe: still better than a blur.
BOLD_SCALE = 1.5
# Among safe candidates, prefer those at least this far past the threshold (when there are any):
# a little room for re-checks and for an observer's own landmarks.
PREFERRED_MARGIN = 0.05
# A shown identity that fails a re-check is replaced by a successor near it first: the old latent
# turned by these angles (radians) towards each of a fresh set of directions, so that the face on
# screen changes as little as the bar allows instead of becoming a random other person. Only a
# successor past the full margin is taken (a marginal one would soon fail again); otherwise the
# track gets a fresh identity as a new track would.
SUCCESSOR_ANGLES = (np.pi / 6, np.pi / 3)
# The observer that finds a candidate's own landmarks detects on views of at most this many pixels
# a side (the predictor still sees them whole): on 80 HELEN faces in 403 px views (the pipeline's
# padding) the same NME as at full size (0.0268 vs 0.0270) in 18 instead of 64 ms.
OBSERVER_SIDE = 160

Postprocess = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# (N, S, S, 3) uint8 rendered crops -> (N,) higher = more face-like
Plausibility = Callable[[np.ndarray], np.ndarray]
# (images of one face, (68, 2) landmarks where it should be) -> (N, 68, 2) landmarks an observer
# finds for it in each image (e.g. ``faces.landmarks.NearestFaceLandmarks``)
Observer = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


def postprocessings(backend: ModuleType, settings: PhotometricConfig) -> dict[str, Postprocess]:
    """The ways to show a generated face, in order of preference: ``full`` (the configured
    photometric steps) and, when relighting or Laplacian refinement is on, ``strict`` (colour
    transfer only). ``backend`` is a photometric module (reference or CUDA)."""
    ways = {"full": settings}
    if settings.relight or settings.laplacian:
        ways["strict"] = replace(settings, relight=False, laplacian=False)
    return {name: partial(_postprocess, backend, cfg) for name, cfg in ways.items()}


def _postprocess(backend: ModuleType, settings: PhotometricConfig, fakes, originals, masks) -> np.ndarray:
    return backend.postprocess(fakes, originals, masks, settings)


@dataclass(frozen=True)
class View:
    """Where a candidate is judged: the original image an observer could compare against, the
    face's landmarks in it, and ``paste(shown_crop) -> image`` with the candidate in place."""

    image: np.ndarray
    landmarks: np.ndarray
    paste: Callable[[np.ndarray], np.ndarray]


def crop_view(face: AlignedFace) -> View:
    """Judge on the aligned crop itself (when there is no frame, as in validation)."""
    return View(face.image, face.landmarks, lambda shown: shown)


@dataclass(frozen=True)
class IdentityChoice:
    """The guard's decision for one track."""

    latent: np.ndarray  # (latent_dim,) float32: the code to generate this track with
    attempt: int  # which candidate of the track it is (from ``candidates`` on: a successor's direction)
    distance: float  # dlib distance of that candidate's face to the original
    tried: int  # candidates rendered (over all post-processings)
    safe: bool  # distance >= threshold: show it; otherwise the face must be hidden another way
    postprocess: str  # name of the post-processing the distance was measured with
    scale: float = 1.0  # the candidate's latent scale (BOLD_SCALE for the last-resort ones)


class IdentityGuard:
    """Chooses a track's latent among its candidates by dlib distance to the original face.

    Args:
        generator: a ``GeneratorRuntime``.
        postprocess: ``name -> (fakes, originals, masks) -> faces``, the ways the pipeline can
            show a face, in order of preference (the first: its photometric settings).
        candidates: most latents tried per choice and post-processing (>= 1).
        threshold: dlib distance below which a face counts as re-identified.
        embedder: a ``FaceEmbedder`` or ``TorchFaceEmbedder`` (default: ``default_embedder`` on the
            generator's device).
        plausibility: scores rendered crops, higher = more face-like (e.g.
            ``CenterFaceDetector.face_scores``); ``None``: the farthest safe candidate is chosen.
        landmarks: where a candidate is embedded: ``"condition"`` (the view's landmarks, those
            of the original face), ``"own"`` (those ``observer`` finds on the candidate as shown,
            as an attacker would) or ``"both"`` (the smaller of the two distances counts).
        observer: ``(images, landmarks) -> (N, 68, 2)`` for ``"own"`` and ``"both"`` (default: a
            ``NearestFaceLandmarks`` with its own CenterFace and landmark predictor on the CPU;
            the pipeline should pass one with its own, detecting at ``OBSERVER_SIDE``).
    """

    def __init__(self, generator, postprocess: dict[str, Postprocess], candidates: int = 16, threshold: float = 0.6,
                 embedder=None, plausibility: Plausibility | None = None, landmarks: GuardLandmarks = "condition",
                 observer: Observer | None = None) -> None:  # fmt: skip
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if not postprocess:
            raise ValueError("the guard needs at least one post-processing")
        if landmarks not in GUARD_LANDMARKS:
            raise ValueError(f"landmarks must be one of {', '.join(GUARD_LANDMARKS)}, got {landmarks!r}")
        if landmarks != "condition" and observer is None:
            from ..faces.detect import CenterFaceDetector
            from ..faces.landmarks import LandmarkPredictor, NearestFaceLandmarks

            observer = NearestFaceLandmarks(CenterFaceDetector(), LandmarkPredictor(), OBSERVER_SIDE)
        if embedder is None:
            from ..faces.embed import default_embedder

            embedder = default_embedder(str(getattr(generator, "device", "cpu")))
        self.generator = generator
        self.postprocess = postprocess
        self.candidates = int(candidates)
        self.threshold = float(threshold)
        self.embedder = embedder
        self.plausibility = plausibility
        self.landmarks = landmarks
        self.observer = observer if landmarks != "condition" else None

    def choose(self, face: AlignedFace, seed: int, view: View | None = None,
               previous: IdentityChoice | None = None) -> IdentityChoice:  # fmt: skip
        """The identity for ``face``'s track (``face.track_id``), judged in ``view`` (default:
        the crop; the pipeline passes the frame, where the original is sharper than the crop).
        ``previous``: the identity the track showed until it failed a re-check; a successor near
        it is tried first (see ``SUCCESSOR_ANGLES``)."""
        view = view or crop_view(face)
        reference = self.embedder.embed(view.image, view.landmarks)
        dim = self.generator.config.latent_dim
        tried = 0
        if previous is not None and previous.safe and previous.latent.size == dim:
            successor, tried = self._successor(face, seed, view, reference, previous)
            if successor is not None:
                return successor
        codes = np.stack([track_latent(face.track_id, seed, dim, attempt=a) for a in range(self.candidates)])
        farthest: IdentityChoice | None = None
        rounds = [(name, 1.0) for name in self.postprocess] + [(name, BOLD_SCALE) for name in self.postprocess]
        for name, scale in rounds:
            scaled = (codes * scale).astype(np.float32)
            distance, crops = self._search(face, scaled, name, view, reference)
            tried += len(distance)
            k = self._pick(distance, crops)
            if k is not None:
                return IdentityChoice(scaled[k], k, float(distance[k]), tried, True, name, scale)
            k = int(np.argmax(distance))
            if farthest is None or distance[k] > farthest.distance:
                farthest = IdentityChoice(scaled[k], k, float(distance[k]), 0, False, name, scale)
        assert farthest is not None
        return replace(farthest, tried=tried)

    def _successor(self, face: AlignedFace, seed: int, view: View, reference: np.ndarray,
                   previous: IdentityChoice) -> tuple[IdentityChoice | None, int]:  # fmt: skip
        """A safe identity near ``previous`` past the full margin, shown the same way, and the
        candidates rendered; None when no successor gets that far.

        Each candidate is ``cos(a) z + sin(a) d_k`` (times the previous latent scale) for the old
        standard-normal code ``z`` and fresh directions ``d_k`` (the track's candidates numbered
        after the ordinary ones): standard normal again, so as typical a face as any candidate.
        """
        dim = self.generator.config.latent_dim
        base = previous.latent / np.float32(previous.scale)
        first = self.candidates  # directions independent of the ordinary candidates
        directions = np.stack([track_latent(face.track_id, seed, dim, attempt=first + k)
                               for k in range(self.candidates)])  # fmt: skip
        name = previous.postprocess if previous.postprocess in self.postprocess else next(iter(self.postprocess))
        tried = 0
        for angle in SUCCESSOR_ANGLES:
            codes = ((np.cos(angle) * base + np.sin(angle) * directions) * previous.scale).astype(np.float32)
            distance, crops = self._search(face, codes, name, view, reference)
            tried += len(distance)
            past = np.flatnonzero(distance >= self.threshold + MARGIN)
            if len(past):
                k = int(past[self._most_plausible(distance[past], crops[past])])
                return IdentityChoice(codes[k], first + k, float(distance[k]), tried, True, name, previous.scale), tried
        return None, tried

    def _search(self, face: AlignedFace, codes: np.ndarray, postprocess: str, view: View,
                reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Distances and rendered crops of ``codes`` in batches of ``BATCH``, stopping after the
        first batch in which a candidate is past the full margin (only those rendered are returned)."""
        distances, crops = [], []
        for start in range(0, len(codes), BATCH):
            batch_distances, shown = self._distances(face, codes[start : start + BATCH], postprocess, view, reference)
            distances.append(batch_distances)
            crops.append(shown)
            if batch_distances.max() >= self.threshold + MARGIN:
                break
        return np.concatenate(distances), np.concatenate(crops)

    def _pick(self, distance: np.ndarray, crops: np.ndarray) -> int | None:
        """The most plausible candidate past the highest bar any candidate reaches (the farthest
        without a plausibility score); None if none is safe. Only those candidates are scored."""
        for bar in (self.threshold + MARGIN, self.threshold + PREFERRED_MARGIN, self.threshold):
            past = np.flatnonzero(distance >= bar)
            if len(past):
                return int(past[self._most_plausible(distance[past], crops[past])])
        return None

    def _most_plausible(self, distance: np.ndarray, crops: np.ndarray) -> int:
        """Index of the most face-like of these candidates (the farthest without a plausibility score)."""
        return int(np.argmax(distance if self.plausibility is None else self.plausibility(crops)))

    def still_unlike(self, face: AlignedFace, choice: IdentityChoice, view: View | None = None) -> bool:
        """Whether ``choice`` is still unlike the original in this new view (a face that turns or
        changes expression can come closer to it). Half the margin of :meth:`choose` is kept:
        an observer estimates the landmarks of the shown face anew, and slightly differently; a
        choice accepted inside that margin keeps its own distance less ``RECHECK_DRIFT``, and
        never less than the threshold."""
        return bool(self.recheck_margin(face, choice, view) >= 0.0)

    def recheck_margin(self, face: AlignedFace, choice: IdentityChoice, view: View | None = None) -> float:
        """How far ``choice``'s face is past its re-check bar in this view: :meth:`still_unlike`
        when it is >= 0, and a measure of how soon to look again (the caller checks a face that
        passed narrowly sooner)."""
        return self.recheck_distance(face, choice, view or crop_view(face)) - self.recheck_bar(choice)

    def recheck_distance(self, face: AlignedFace, choice: IdentityChoice, view: View) -> float:
        """The distance of ``choice``'s face, as shown in ``view``, to the original there: as
        :meth:`choose` measures it (``"both"``: the smaller of the two; measuring the own landmarks
        even when the condition's distance is short of the threshold gives the same verdict), with
        the original and the shown face embedded in one run (on 2 CPU cores a batch of 3 chips costs
        16 ms, three of 1 cost 24)."""
        image = self.render(face, choice.latent[None], choice.postprocess, view)[1][0]
        at = [] if self.landmarks == "own" else [view.landmarks]
        if self.landmarks != "condition":
            at.append(self.observer([image], view.landmarks)[0])
        embeddings = self.embed([view.image] + [image] * len(at), [view.landmarks, *at])
        return float(np.linalg.norm(embeddings[1:] - embeddings[0], axis=1).min())

    def recheck_bar(self, choice: IdentityChoice) -> float:
        """The distance a shown identity must keep at its re-checks."""
        return max(self.threshold, min(self.threshold + MARGIN / 2, choice.distance - RECHECK_DRIFT))

    def _distances(self, face: AlignedFace, codes: np.ndarray, postprocess: str, view: View,
                   reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """dlib distances (B,) to ``reference`` of the faces of ``codes`` (B, D) as shown in
        ``view``, and the rendered crops (B, S, S, 3)."""
        n = len(codes)
        shown, images = self.render(face, codes, postprocess, view)
        if self.landmarks == "own":
            return self._distances_at(images, self.observer(images, view.landmarks), reference), shown
        distance = self._distances_at(images, np.broadcast_to(view.landmarks, (n, 68, 2)), reference)
        if self.landmarks == "both":
            # Only a candidate unlike the original at the condition's landmarks can be safe, so only
            # those are measured again at their own; the others keep their (larger) condition
            # distance, below the threshold either way: the same choices, fewer observer runs.
            again = np.flatnonzero(distance >= self.threshold)
            if len(again):
                subset = [images[i] for i in again]
                own = self._distances_at(subset, self.observer(subset, view.landmarks), reference)
                distance[again] = np.minimum(distance[again], own)
        return distance, shown

    def render(self, face: AlignedFace, codes: np.ndarray, postprocess: str, view: View) -> tuple[np.ndarray, list]:
        """The faces of ``codes`` (B, D) post-processed as ``postprocess`` (B, S, S, 3), and each
        pasted into ``view``."""
        n = len(codes)
        fakes = self.generator([face] * n, latents=codes)
        shown = self.postprocess[postprocess](fakes, np.stack([face.image] * n), np.stack([face.mask] * n))
        return shown, [view.paste(image) for image in shown]

    def _distances_at(self, images: list[np.ndarray], landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """(N,) distances to ``reference`` of the face at ``landmarks[i]`` (N, 68, 2) in each
        image ``i``, embedded in one batched run."""
        return np.linalg.norm(self.embed(images, landmarks) - reference, axis=1)

    def embed(self, images: list[np.ndarray], landmarks) -> np.ndarray:
        """(N, 128) embeddings of the face at ``landmarks[i]`` (68, 2) in each image ``i``, in one run."""
        chips = np.concatenate([self.embedder.chips(image, points[None]) for image, points in zip(images, landmarks)])
        return self.embedder.embed_chips(chips)
