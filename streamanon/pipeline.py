"""Orchestration: the only module that knows the order of the stages.

source -> detect -> track -> landmarks -> align -> generate -> photometric -> composite -> sink
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from .composite import paste_placed
from .config import AnonymizerConfig
from .errors import UserError
from .faces.change import ChangeWatch
from .faces.detect import CenterFaceDetector, box_iou
from .faces.roll import TURNS, RollChecker
from .faces.track import FaceTracker
from .replace import hide_face
from .timing import NULL_TIMER, StageClock
from .types import AlignedFace, Detections, Frame, FrameStats, HiddenFace, TrackedFace

if TYPE_CHECKING:  # pragma: no cover - torch is imported only in generate mode
    from .generate.guard import IdentityGuard, View
    from .generate.identities import TrackIdentities
    from .generate.runtime import GeneratorRuntime

log = logging.getLogger(__name__)

# A face found again overlapping one of the frame's detections this much (IoU) is that detection.
REFOUND_OVERLAP = 0.3

# Frame rate assumed for timestamps when frames come without them (``Anonymizer.process``).
DEFAULT_FPS = 25.0
# Ticks a second of the timestamps given to ``Anonymizer.process`` (microseconds).
_API_CLOCK = 1_000_000


def samples_on_device(frame_tensor) -> bool:
    """Whether the landmark and alignment crops are sampled on the uploaded frame: on a GPU. On a
    CPU (a CPU tensor, from ``detect.backend = torch``) the host warps are several times faster."""
    return frame_tensor is not None and frame_tensor.device.type != "cpu"


def _start_guard_thread(device) -> None:
    """The guard's thread queues its GPU work on a CUDA stream of its own, so frames do not wait
    behind it; if that fails it stays on the default stream (slower frames, same results)."""
    from .gpu import use_own_stream

    try:
        use_own_stream(device)
    except Exception:  # noqa: BLE001 - a failing initializer would break the guard's thread for good
        log.warning("the identity guard's thread shares the default CUDA stream", exc_info=True)


class Anonymizer:
    """Anonymizes a sequence of frames from one camera; keeps tracking state between calls.

    >>> anonymizer = Anonymizer(AnonymizerConfig())
    >>> out = anonymizer.process(frame_rgb)   # (H, W, 3) uint8 RGB in, same out
    """

    def __init__(self, config: AnonymizerConfig | None = None, *, generator: GeneratorRuntime | None = None) -> None:
        """``generator`` (generate mode only) is a ready ``GeneratorRuntime`` to use instead of
        loading ``config.generate.weights``; benchmarks pass one built from a temporary file."""
        self.config = config or AnonymizerConfig()
        self.detector = CenterFaceDetector.from_config(self.config.detect, device=self.config.device)
        self.tracker = FaceTracker(self.config.track, self.config.smooth)
        # With the torch detector, each frame goes to its device once, for detection and (generate
        # mode, device compositing) the paste-back: no host resize, no second upload.
        self._frame_device = self.detector.tensor_device
        self._frame_index = 0
        self._aligns_on_device = True  # until sampling the aligned crops on the device fails once
        self._local_passes_left = 0  # frames until the next full-frame detection
        # With local passes between full ones, a full pass also when the picture changed where a
        # face could have come in (faces/change.py).
        watch = self.config.detect.every > 1 and self.config.detect.watch_changes
        self.change_watch = ChangeWatch() if watch else None
        self._generate = self.config.mode == "generate"
        settings = self.config.generate
        if self._generate:
            # Load everything generate mode needs now, so a missing model fails before any output.
            from .faces.landmarks import LandmarkPredictor
            from .generate.runtime import load_generator
            from .photometric import get_backend

            if generator is None:
                generator = load_generator(settings.weights, device=self.config.device, backend=settings.backend,
                                           seed=settings.seed)  # fmt: skip
            self.generator = generator
            self.landmarks = LandmarkPredictor.from_config(self.config.landmarks, device=self.config.device)
            self.roll_checker = RollChecker(self.detector) if self.config.landmarks.check_roll else None
            from .generate.compose import FaceCompositor
            from .generate.guard import postprocessings

            self.photometric = get_backend(self.config.device)
            self.postprocess = postprocessings(self.photometric, self.config.photometric)
            self.compositor = FaceCompositor(self.generator, self.postprocess, self.config.replace.feather,
                                             settings.composite, settings.match_noise, settings.seed)  # fmt: skip
            self.guard = self._build_guard(in_background=bool(settings.guard_background))
        self._pastes_on_device = self._generate and self.compositor.on_device
        # Generate mode with the guard: each track's identity, and when the guard looks at it again.
        self.identities: TrackIdentities | None = None
        if self._generate and self.guard is not None:
            from .generate.identities import TrackIdentities

            thread = None
            if settings.guard_background:  # choices and re-checks on a thread of their own
                thread = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="streamanon-guard",
                    initializer=_start_guard_thread, initargs=(self.generator.device,),
                )  # fmt: skip
            self.identities = TrackIdentities(self.guard, settings.seed, settings.guard_check_seconds, thread)
        detect = self.config.detect
        log.info("faces replaced by %s on %s; detection: threshold %g, scale %s, full frame every %d frame(s), "
                 "rotations %s, lost faces searched again: %s; tracks kept %d frames after a miss",
                 self.backend_name, self.config.device, detect.threshold, detect.scale or "auto", detect.every,
                 ",".join(map(str, detect.rotations)), "yes" if detect.refind_lost else "no",
                 self.config.track.max_missed)  # fmt: skip

    @property
    def backend_name(self) -> str:
        """What replaces faces: the generator backend in generate mode, else the mode."""
        if self._generate:
            where = f", composite on {self.compositor.where}" if self.compositor.on_device else ""
            landmarks = f", landmarks {self.landmarks.where}" if self.landmarks.backend != "dlib" else ""
            return f"generate ({self.generator.backend_name}{where}{landmarks})"
        return self.config.mode

    @property
    def guard_in_background(self) -> bool:
        """Whether the identity guard (choices and re-checks) runs on its own thread."""
        return self.identities is not None and self.identities.thread is not None

    def reset(self) -> None:
        """Forget all tracks (call between unrelated clips)."""
        self.tracker.reset()
        if self.change_watch is not None:
            self.change_watch.reset()
        self._frame_index = 0
        self._local_passes_left = 0
        if self._generate and self.roll_checker is not None:
            self.roll_checker.reset()
        if self.identities is not None:
            self.identities.reset()

    def _build_guard(self, in_background: bool) -> IdentityGuard | None:
        """The identity guard, or None when it is off. ``in_background``: it will run on its own
        thread, so a compiled generator (CUDA graphs and TensorRT contexts belong to the thread that
        built them) is replaced there by its eager twin on the same weights."""
        settings = self.config.generate
        if settings.guard_candidates == 0:
            return None
        generator = self.generator.eager_twin() if in_background else self.generator
        from .faces.landmarks import NearestFaceLandmarks
        from .generate.guard import OBSERVER_SIDE, IdentityGuard

        plausibility = self.detector.face_scores if settings.guard_plausibility else None
        # The guard finds a candidate's own landmarks with this pipeline's detector and landmark stage.
        observer = NearestFaceLandmarks(self.detector, self.landmarks, OBSERVER_SIDE)
        return IdentityGuard(generator, self.postprocess, settings.guard_candidates, settings.guard_distance,
                             plausibility=plausibility, landmarks=settings.guard_landmarks,
                             observer=observer)  # fmt: skip

    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        """Anonymize one RGB frame ``(H, W, 3) uint8`` and return the new image.

        ``timestamp``: when the frame was taken, in seconds (any origin, rising from frame to frame;
        e.g. the camera's clock). It times the tracker's coasting, the smoothing and the identity
        guard's re-checks; without it frames are taken as consecutive at 25 fps.
        """
        if timestamp is None:
            return self.process_frame(Frame(image=frame_rgb, index=self._frame_index))[0]
        if not math.isfinite(timestamp):
            raise UserError(f"a frame's timestamp must be a finite number of seconds, got {timestamp}")
        pts = round(timestamp * _API_CLOCK)
        return self.process_frame(Frame(frame_rgb, self._frame_index, pts, Fraction(1, _API_CLOCK)))[0]

    def process_frame(self, frame: Frame, timer: StageClock = NULL_TIMER) -> tuple[np.ndarray, FrameStats]:
        """Anonymize ``frame``; returns the new image and what was done to it.

        ``timer.stage(name)`` wraps each stage (upload, with the torch detector; detect, track,
        landmarks, align, guard, generate, photometric, composite, copy, hide); see
        :mod:`streamanon.timing`.
        """
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UserError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
        t = frame.time if frame.time is not None else frame.index / DEFAULT_FPS
        self._frame_index = frame.index + 1

        frame_tensor = None
        if self._frame_device is not None and (self._local_passes_left == 0 or self._pastes_on_device):
            from .gpu import upload

            with timer.stage("upload"):
                # A copy even on the CPU: the device paste writes into it.
                frame_tensor = upload(image, self._frame_device, writable=True)
        with timer.stage("detect"):
            detections = self._detect(image, t, frame_tensor)
        with timer.stage("track"):
            tracks = self.tracker.update(detections, t)
        with timer.stage("copy"):
            out = image.copy()
        stats = FrameStats(faces=len(tracks), track_ids=[tr.track_id for tr in tracks])
        stats.detected = sum(tr.detected for tr in tracks)
        stats.coasting = stats.faces - stats.detected

        to_hide: list[TrackedFace] = list(tracks)
        generated: dict[int, np.ndarray] = {}
        if self._generate:
            detected = [tr for tr in tracks if tr.detected]
            generated = self._generate_faces(image, out, detected, t, frame.index, timer, frame_tensor)
            stats.generated = len(generated)
            to_hide = [tr for tr in tracks if tr.track_id not in generated]
            stats.fallback = sum(tr.detected for tr in to_hide)
        # Fail closed: every known face that was not generated this frame is hidden by the baseline.
        fallback_mode = "blur" if self._generate else self.config.mode
        stats.hidden = [
            HiddenFace(tr.track_id, tr.cover_box.astype(np.float32), tr.detected,
                       "generated" if tr.track_id in generated else fallback_mode,
                       fallback=self._generate and tr.track_id not in generated,
                       landmarks=generated.get(tr.track_id))
            for tr in tracks
        ]  # fmt: skip
        if to_hide:
            with timer.stage("hide"):
                for track in to_hide:
                    hide_face(out, track.cover_box, fallback_mode, self.config.replace)
        return out, stats

    def _detect(self, image: np.ndarray, t: float, frame_tensor=None):
        """Full-frame detection every ``detect.every`` frames (on ``frame_tensor``, the frame on
        the detector's device, when given); in between, only around the faces the tracker
        expects (a face it loses there coasts and stays hidden). Then, with ``detect.refind_lost``,
        turned searches around the tracked faces that neither found."""
        predicted = self.tracker.predicted_boxes(t) if self._local_passes_left > 0 else None
        watch = self.change_watch
        if predicted is not None and watch is not None and watch.needs_full_pass(image, predicted):
            # The picture changed where a face could have come in (the edge ring, or much of it:
            # a cut): a full pass now, not up to every - 1 frames later.
            self._local_passes_left, predicted = 0, None
        elif predicted is None and watch is not None:
            watch.remember(image)
        if predicted is not None:
            self._local_passes_left -= 1
            detections = self.detector.detect_around(image, predicted)
        else:
            self._local_passes_left = self.config.detect.every - 1
            detections = self.detector.detect_tensor(frame_tensor) if frame_tensor is not None else self.detector(image)
        if self.config.detect.refind_lost:
            detections = self._refind_lost(image, detections, t)
        return detections

    def _refind_lost(self, image: np.ndarray, detections: Detections, t: float) -> Detections:
        """``detections`` and the faces found again around the tracks they leave unmatched, each
        searched at its last eye-line angle and a quarter and half turn from it (``faces.roll.TURNS``:
        the tracker's angle comes from the detector's keypoints, which can read level on a face
        rolled far past its range)."""
        boxes, rolls = self.tracker.lost(detections, t)
        if len(boxes) == 0:
            return detections
        angles = (rolls[:, None] + np.asarray(TURNS)).ravel()
        found = self.detector.detect_rolled(image, np.repeat(boxes, len(TURNS), axis=0), angles)
        if len(found) and len(detections):  # only faces this frame's detections do not already have
            found = found[box_iou(found.boxes, detections.boxes).max(axis=1) < REFOUND_OVERLAP]
        if len(found):
            log.debug("found %d lost face(s) again by turned search", len(found))
        return detections + found

    def hide_known_faces(self, image: np.ndarray) -> np.ndarray:
        """Blur every face the tracker knows of at its predicted place, without detecting.

        The fail-closed path for live streams: when a frame cannot be processed in time (or a
        stage fails), it still goes out with every known face hidden.
        """
        out = image.copy()
        for track in self.tracker.tracks:
            hide_face(out, track.cover_box, "blur", self.config.replace)
        return out

    def _generate_faces(
        self, image: np.ndarray, out: np.ndarray, tracks: list[TrackedFace], t: float, frame_index: int,
        timer: StageClock = NULL_TIMER, frame_tensor=None,
    ) -> dict[int, np.ndarray]:
        """Replace detected faces by generated ones in ``out``; return the track ids done, each with
        the (68, 2) landmarks its new face was given (frame pixels).
        ``frame_index`` seeds the pasted faces' matched noise; ``frame_tensor``: ``image`` on the
        detector's device, which the device paste may reuse."""
        if not tracks:
            return {}
        from .faces.landmarks import landmarks_fit_boxes

        try:
            with timer.stage("landmarks"):
                boxes = np.stack([tr.raw_box if tr.raw_box is not None else tr.box for tr in tracks])
                # Detector keypoints place dlib's box far better than the box alone (NME 0.039 vs 0.067
                # on AFW); a NaN row makes the predictor fall back to the box for that face.
                keypoints = np.stack(
                    [tr.keypoints if tr.keypoints is not None else np.full((5, 2), np.nan, np.float32) for tr in tracks]
                )
                if self.roll_checker is not None:  # keypoints the network saw upright, at any roll
                    keypoints = self.roll_checker(image, [tr.track_id for tr in tracks], boxes, keypoints)
                # On a GPU the landmark and alignment crops are sampled on the uploaded frame.
                on_device = frame_tensor if samples_on_device(frame_tensor) else None
                points = self.landmarks.predict(image, boxes, keypoints, frame=on_device)
                # Points away from their face would put the generated face beside the real one:
                # such a face is left out here, so it is hidden like any face not generated.
                fits = landmarks_fit_boxes(points, boxes)
                if not fits.all():
                    log.debug("landmarks of %d face(s) miss their boxes; hiding them", int((~fits).sum()))
                    tracks, points = [tr for tr, ok in zip(tracks, fits) if ok], points[fits]
                    if not tracks:
                        return {}
            with timer.stage("track"):  # landmark smoothing is part of tracking
                smoothed = [self.tracker.set_landmarks(tr.track_id, pts, t) for tr, pts in zip(tracks, points)]
            with timer.stage("align"):
                aligned = self._align(image, smoothed, [tr.track_id for tr in tracks], on_device)
            with timer.stage("guard"):
                aligned, latents, ways = self._identities_for(image, aligned, t, frame_index)
            if not aligned:
                return {}
            self.compositor(image, out, aligned, latents, ways, timer, frame=frame_tensor, frame_index=frame_index)
        except Exception:  # noqa: BLE001 - any failure here falls back to blur for these faces
            log.exception("generation failed for %d face(s); blurring them", len(tracks))
            return {}
        landmarks_of = {tr.track_id: pts for tr, pts in zip(tracks, smoothed)}
        return {face.track_id: np.asarray(landmarks_of[face.track_id], np.float32) for face in aligned}

    def _align(self, image: np.ndarray, landmarks: list[np.ndarray], track_ids: list[int], frame) -> list[AlignedFace]:
        """The faces' aligned crops, sampled on ``frame`` (the frame on a GPU) when given. If that
        fails (e.g. a CUDA error) the host warps take over for the rest of the run, rather than
        every face being blurred from then on."""
        from .faces.align import align_faces

        size = self.config.generate.crop_size
        if frame is not None and self._aligns_on_device:
            try:
                return align_faces(image, landmarks, size, track_ids, frame=frame)
            except RuntimeError:
                log.warning("aligning faces on the device failed; the host aligns them from now on", exc_info=True)
                self._aligns_on_device = False
        return align_faces(image, landmarks, size, track_ids)

    def _frame_view(self, image: np.ndarray, face: AlignedFace, frame_index: int, copy: bool = False) -> View:
        """The guard's view of a face: a region of the frame around it, where a candidate is
        pasted exactly as the composite stage will paste it in frame ``frame_index`` (matched
        noise included). ``copy``: the region is copied, for a view used after the caller may have
        reused the frame's buffer (the guard's thread)."""
        from .faces.align import points_to_frame
        from .generate.guard import View

        points = points_to_frame(face.landmarks, face.matrix)
        lo, hi = points.min(axis=0), points.max(axis=0)
        pad = 0.6 * float((hi - lo).max())  # dlib's face chip reaches past the landmarks
        height, width = image.shape[:2]
        x0, y0 = (max(0, int(np.floor(v - pad))) for v in lo)
        x1, y1 = min(width, int(np.ceil(hi[0] + pad))), min(height, int(np.ceil(hi[1] + pad)))
        region = image[y0:y1, x0:x1].copy() if copy else image[y0:y1, x0:x1]
        matrix = np.asarray(face.matrix, np.float64).copy()
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)  # region -> crop
        alpha = self.compositor.alpha(face)
        placement = self.compositor.placement(face, region.shape, matrix)  # once for all candidates
        seed = self.compositor.noise_seed(face, frame_index)

        def paste(shown: np.ndarray) -> np.ndarray:
            composed = region.copy()
            if placement is not None:
                paste_placed(composed, shown, *placement, alpha, seed)
            return composed

        return View(region, (points - [x0, y0]).astype(np.float32), paste)

    def _identities_for(
        self, image: np.ndarray, aligned: list[AlignedFace], t: float, frame_index: int
    ) -> tuple[list[AlignedFace], np.ndarray, list[str]]:
        """The faces that may be generated this frame, their latents (B, latent_dim) and the
        post-processing of each: without a guard every track with its own latent, with one as
        :class:`~streamanon.generate.identities.TrackIdentities` decides."""
        if self.identities is None:
            codes = self.generator.latents([face.track_id for face in aligned]).cpu().numpy()
            return aligned, codes, ["full"] * len(aligned)
        known = {track.track_id for track in self.tracker.tracks}
        return self.identities.select(
            aligned, t, known, lambda face, copy: self._frame_view(image, face, frame_index, copy)
        )
