"""Similarity alignment of a face to the canonical square crop, and back.

The canonical crop shows the whole head with some context (DeepPrivacy-style): the face
region (68 landmarks plus the forehead) spans the central ``~60 %`` of the crop. Frame ->
crop is a similarity (rotation, uniform scale, translation) fitted by least squares
(Umeyama) from the inner landmarks (brows, eyes, nose, mouth: the jaw line moves with yaw
and would make the crop breathe) to the template.

Coordinates: pixel centres at integers (as cv2.warpAffine and dlib use); the template is
stored in unit-square coordinates ``u`` and placed in an ``S``-pixel crop at
``u * S - 0.5``, so its geometry is the same at every crop size.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import UserError
from ..types import AlignedFace

# Index of each point's left-right partner in the iBUG 68-point scheme.
MIRROR_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows
    + [27, 28, 29, 30]  # nose bridge
    + list(range(35, 30, -1))  # nostrils
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + list(range(54, 47, -1)) + list(range(59, 54, -1))  # outer lips
    + list(range(64, 59, -1)) + list(range(67, 64, -1)),  # inner lips
    np.int64,
)
ALIGN_POINTS = np.arange(17, 68)  # brows, nose, eyes, mouth
FOREHEAD = 0.45  # forehead extension above the brows, in brow-to-chin distances
MASK_DILATE = 0.03  # mask dilation, in crop sides

TEMPLATE_68: np.ndarray  # defined below (generated)


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) mapping ``src_pts`` onto ``dst_pts`` (Umeyama 1991).

    Rotation + uniform scale + translation, never a reflection. Points are (N, 2), N >= 2.
    """
    src = np.asarray(src_pts, np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise UserError(f"similarity_transform needs two matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c**2).sum() / len(src)
    if var_src <= 1e-12:
        raise UserError("similarity_transform: source points are all identical")
    cov = dst_c.T @ src_c / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # would be a reflection: flip the weakest axis
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = (d * sign).sum() / var_src
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_dst - scale * rot @ mu_src
    return matrix


def points_to_crop(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) frame -> crop matrix to (..., 2) points."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def points_to_frame(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map crop points (..., 2) back to the frame through the inverse of ``matrix``."""
    return points_to_crop(points, cv2.invertAffineTransform(np.asarray(matrix, np.float64)))


def template(size: int, zoom: float = 1.0) -> np.ndarray:
    """The canonical landmarks (68, 2) in an ``size``-pixel crop; ``zoom > 1`` = tighter crop."""
    return ((TEMPLATE_68.astype(np.float64) - 0.5) * zoom + 0.5) * size - 0.5


def face_region_points(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks plus the brows moved up by ``FOREHEAD`` brow-to-chin distances: (78, 2)."""
    landmarks = np.asarray(landmarks, np.float64)
    up = landmarks[17:27].mean(0) - landmarks[8]  # chin -> brows, follows head tilt
    forehead = landmarks[17:27] + FOREHEAD * up
    return np.concatenate([landmarks, forehead])


def face_mask(landmarks_crop: np.ndarray, size: int) -> np.ndarray:
    """The region the generator replaces, (size, size) float32 in {0, 1}.

    Convex hull of all 68 landmarks and the forehead points (jaw and brows extended up),
    dilated by ``MASK_DILATE`` of the crop side so that the edges of the face are covered.
    """
    region = face_region_points(landmarks_crop)
    hull = cv2.convexHull(np.round(region * 16).astype(np.int32))  # 4 fractional bits
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    radius = max(1, round(MASK_DILATE * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel).astype(np.float32)


def crop_padded(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` with edge replication where the window leaves the image."""
    h, w = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:  # entirely outside the frame: nothing to look at
        return np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    crop = image[cy0:cy1, cx0:cx1]
    pads = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
    if any(pads):
        crop = cv2.copyMakeBorder(crop, *pads, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop)


def warp_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` into a ``size`` x ``size`` crop by the frame -> crop ``matrix``.

    When the warp shrinks by more than 1.25x, the source window is first resized with
    INTER_AREA (warpAffine alone samples 4 pixels per output pixel and would alias).
    Outside the frame the edge pixels are replicated.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale >= 0.8:
        return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    corners = np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64)
    src = points_to_frame(corners, matrix)
    x0, y0 = np.floor(src.min(0)).astype(int) - 1
    x1, y1 = np.ceil(src.max(0)).astype(int) + 2
    window = crop_padded(image, x0, y0, x1, y1)
    new_w, new_h = max(1, round(window.shape[1] * scale)), max(1, round(window.shape[0] * scale))
    zx, zy = new_w / window.shape[1], new_h / window.shape[0]
    window = cv2.resize(window, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # frame -> window -> shrunk window (cv2.resize aligns pixel centres: d + .5 = (s + .5) z).
    to_window = np.array([[zx, 0.0, zx * (0.5 - x0) - 0.5], [0.0, zy, zy * (0.5 - y0) - 0.5], [0.0, 0.0, 1.0]])
    composed = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ np.linalg.inv(to_window)
    return cv2.warpAffine(window, composed[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_matrix(landmarks68: np.ndarray, size: int = 128, zoom: float = 1.0) -> np.ndarray:
    """Frame -> crop similarity (2, 3) placing ``landmarks68`` on the template."""
    landmarks68 = np.asarray(landmarks68, np.float64)
    if landmarks68.shape != (68, 2):
        raise UserError(f"expected (68, 2) landmarks, got shape {landmarks68.shape}")
    if not np.isfinite(landmarks68).all():
        raise UserError("landmarks contain NaN or infinite values")
    return similarity_transform(landmarks68[ALIGN_POINTS], template(size, zoom)[ALIGN_POINTS])


def align_face(
    image: np.ndarray, landmarks68: np.ndarray, size: int = 128, track_id: int = 0, zoom: float = 1.0
) -> AlignedFace:
    """Warp the face into the canonical ``size`` x ``size`` crop.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        landmarks68: (68, 2) frame landmarks, dlib order.
        size: crop side in pixels.
        track_id: carried into the record.
        zoom: > 1 shows less context (face larger in the crop), < 1 more.
    """
    if size < 8:
        raise UserError(f"crop size must be at least 8 pixels, got {size}")
    if zoom <= 0:
        raise UserError(f"zoom must be positive, got {zoom}")
    matrix = align_matrix(landmarks68, size, zoom)
    return _aligned(track_id, warp_image(image, matrix, size), matrix, landmarks68)


def align_faces(image: np.ndarray, landmarks: list[np.ndarray], size: int, track_ids: list[int],
                frame=None) -> list[AlignedFace]:  # fmt: skip
    """:func:`align_face` for each face of one frame.

    ``frame``: the same frame as an (H, W, 3) uint8 tensor on a device (the pipeline's upload).
    The crops are then sampled there in one batch (``box_sampling.warp_on_device``: filtered like
    :func:`warp_image`, 1.7 grey levels apart on average for HELEN faces at 128 px) and downloaded
    once, instead of warped on the host face by face (~2 ms a 1080p face on a small CPU).
    """
    if frame is None:
        return [align_face(image, lm, size, tid) for lm, tid in zip(landmarks, track_ids)]
    if size < 8:
        raise UserError(f"crop size must be at least 8 pixels, got {size}")
    from ..gpu import upload
    from .box_sampling import warp_on_device

    matrices = [align_matrix(lm, size) for lm in landmarks]
    to_frame = upload(np.stack([cv2.invertAffineTransform(m) for m in matrices]), frame.device)
    crops = warp_on_device(frame, to_frame, size).cpu().numpy()
    return [_aligned(tid, crop, m, lm) for tid, crop, m, lm in zip(track_ids, crops, matrices, landmarks)]


def _aligned(track_id: int, crop: np.ndarray, matrix: np.ndarray, landmarks68: np.ndarray) -> AlignedFace:
    crop_landmarks = points_to_crop(landmarks68, matrix).astype(np.float32)
    return AlignedFace(
        track_id=int(track_id),
        image=crop,
        matrix=matrix,
        landmarks=crop_landmarks,
        mask=face_mask(crop_landmarks, crop.shape[0]),
    )


def crop_footprint(matrix: np.ndarray, size: int, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Frame box ``(x0, y0, x1, y1)`` (clipped, exclusive end) covered by a ``size`` crop."""
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    src = points_to_frame(corners, matrix)
    h, w = frame_shape[:2]
    x0, y0 = np.clip(np.floor(src.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(src.max(0)).astype(int) + 1, 0, [w, h])
    return int(x0), int(y0), int(x1), int(y1)


def warp_to_frame(
    crop: np.ndarray,
    matrix: np.ndarray,
    frame_shape: tuple[int, ...],
    roi: tuple[int, int, int, int] | None = None,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """Warp a crop-space array (S, S[, C]) back to frame space (the inverse of ``align_face``).

    Returns the full ``frame_shape[:2]`` canvas, or only the ``roi`` = ``(x0, y0, x1, y1)``
    part of it (e.g. ``crop_footprint(...)``: compositing then touches only that box).
    Pixels that fall outside the crop are 0.
    """
    matrix = np.asarray(matrix, np.float64)
    x0, y0, x1, y1 = roi if roi is not None else (0, 0, frame_shape[1], frame_shape[0])
    # dst(x) = crop(M @ (x + roi origin)): shift the frame -> crop matrix to the ROI.
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    return cv2.warpAffine(
        crop,
        shifted,
        (max(x1 - x0, 0), max(y1 - y0, 0)),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


# Canonical landmarks in unit-square crop coordinates (x right, y down), generated by
# ``python benchmarks/make_align_template.py``: generalised Procrustes mean of the 667
# 300-W HELEN-test and AFW ground-truth shapes plus their mirror images (so it is exactly
# symmetric), eyes levelled, scaled so that the face region (``face_region_points``) is 0.6
# of the crop side and centred.
TEMPLATE_68 = np.array(
    [
        [0.2813, 0.4525],
        [0.2835, 0.5101],
        [0.2890, 0.5673],
        [0.3005, 0.6237],
        [0.3224, 0.6765],
        [0.3569, 0.7224],
        [0.3997, 0.7601],
        [0.4466, 0.7905],
        [0.5000, 0.8000],
        [0.5534, 0.7905],
        [0.6003, 0.7601],
        [0.6431, 0.7224],
        [0.6776, 0.6765],
        [0.6995, 0.6237],
        [0.7110, 0.5673],
        [0.7165, 0.5101],
        [0.7187, 0.4525],
        [0.3268, 0.4151],
        [0.3523, 0.3906],
        [0.3890, 0.3823],
        [0.4276, 0.3870],
        [0.4640, 0.3999],
        [0.5360, 0.3999],
        [0.5724, 0.3870],
        [0.6110, 0.3823],
        [0.6477, 0.3906],
        [0.6732, 0.4151],
        [0.5000, 0.4459],
        [0.5000, 0.4824],
        [0.5000, 0.5182],
        [0.5000, 0.5552],
        [0.4565, 0.5814],
        [0.4772, 0.5892],
        [0.5000, 0.5956],
        [0.5228, 0.5892],
        [0.5435, 0.5814],
        [0.3697, 0.4533],
        [0.3933, 0.4406],
        [0.4207, 0.4409],
        [0.4458, 0.4581],
        [0.4196, 0.4621],
        [0.3921, 0.4619],
        [0.5542, 0.4581],
        [0.5793, 0.4409],
        [0.6067, 0.4406],
        [0.6303, 0.4533],
        [0.6079, 0.4619],
        [0.5804, 0.4621],
        [0.4154, 0.6493],
        [0.4470, 0.6368],
        [0.4782, 0.6308],
        [0.5000, 0.6358],
        [0.5218, 0.6308],
        [0.5530, 0.6368],
        [0.5846, 0.6493],
        [0.5541, 0.6795],
        [0.5235, 0.6928],
        [0.5000, 0.6954],
        [0.4765, 0.6928],
        [0.4459, 0.6795],
        [0.4290, 0.6509],
        [0.4780, 0.6482],
        [0.5000, 0.6506],
        [0.5220, 0.6482],
        [0.5710, 0.6509],
        [0.5224, 0.6660],
        [0.5000, 0.6686],
        [0.4776, 0.6660],
    ],
    np.float32,
)
