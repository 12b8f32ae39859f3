"""NumPy/OpenCV reference of the seed paper's photometric post-processing (see DESIGN.md).

Three steps bring a generated face (``anon``) into the lighting and colour of the original face
(``orig``) it replaces, all on batches of aligned crops:

1. relighting: ``I_relit = A_anon * S_orig`` with shading ``S = BF(gray(I))`` and albedo ``A = I / S``;
2. Laplacian refinement: the coarsest Gaussian level of the result is replaced by the original's;
3. colour transfer: Cb and Cr statistics over the face mask are matched to the original's.

Conventions shared with the CUDA backend (``photometric/cuda.py`` offers the same functions):

- images are batches ``(B, S, S, 3)`` RGB; ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``;
  masks are ``(B, S, S)`` floating in ``[0, 1]``;
- every step changes only the mask region: ``out = base + mask * (step(base) - base)``, so pixels
  whose mask is 0 come back bit-identical;
- internally everything is float32 in ``[0, 1]``; :func:`postprocess` rounds to ``uint8`` once, at
  the end (``floor(x * 255 + 0.5)``), so chained steps do not accumulate quantisation.

Array shape/dtype mismatches are programming errors and raise ``ValueError``; settings that come
from the user's configuration and cannot work raise :class:`~streamanon.errors.UserError`.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import PhotometricConfig
from ..errors import UserError
from .resample import SHADING_DOWNSAMPLE_FACTORS, reduced_shading

# BT.601 luma: the grey image of the shading and the Y of YCbCr use the same weights.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Full-range BT.601 (JPEG) YCbCr on [0, 1] values: ycc = rgb @ RGB_TO_YCBCR.T + YCBCR_OFFSET.
RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    dtype=np.float64,
)
YCBCR_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float64)
# The exact inverse (not the rounded textbook constants), so RGB -> YCbCr -> RGB is lossless.
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)

# Added to the shading before dividing: keeps the albedo finite in black regions.
SHADING_EPS = 1e-3
# Floor of the anon's chroma standard deviation (one 8-bit level): a flat-coloured generated face
# must not get its quantisation noise amplified without bound by std_orig / std_anon.
CHROMA_STD_FLOOR = 1.0 / 255.0
# Total mask weight below which a face has no region to take statistics over.
MASK_WEIGHT_MIN = 1e-6


# --------------------------------------------------------------------------------------------
# input handling


def _to_unit(images: np.ndarray) -> np.ndarray:
    """``uint8`` -> float32 in [0, 1]; floating input is taken to be in [0, 1] already."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1.0 / 255.0)
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32, copy=False)
    raise ValueError(f"images must be uint8 or floating, got {images.dtype}")


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounding half up (the CUDA backend rounds the same way)."""
    return np.floor(np.clip(images, 0.0, 1.0) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def _check_images(images: np.ndarray, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be a batch of RGB crops (B, H, W, 3), got shape {images.shape}")
    return images


def _check_batch(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate one (anon, orig, mask) batch; returns anon and orig as float32 [0, 1], mask as float32."""
    anon = _check_images(anon, "anon")
    orig = _check_images(orig, "orig")
    mask = np.asarray(mask)
    if anon.shape != orig.shape:
        raise ValueError(f"anon {anon.shape} and orig {orig.shape} must have the same shape")
    if mask.shape != anon.shape[:3]:
        raise ValueError(f"mask must have shape {anon.shape[:3]} (B, H, W), got {mask.shape}")
    if not np.issubdtype(mask.dtype, np.floating):
        raise ValueError(f"mask must be floating in [0, 1], got {mask.dtype}")
    return _to_unit(anon), _to_unit(orig), np.clip(mask.astype(np.float32, copy=False), 0.0, 1.0)


def _check_config(cfg: PhotometricConfig) -> None:
    if cfg.bilateral_diameter < 1:
        raise UserError(f"photometric.bilateral_diameter must be >= 1, got {cfg.bilateral_diameter}")
    if cfg.bilateral_sigma_color <= 0 or cfg.bilateral_sigma_space <= 0:
        raise UserError(
            "photometric.bilateral_sigma_color and bilateral_sigma_space must be > 0, got "
            f"{cfg.bilateral_sigma_color} and {cfg.bilateral_sigma_space}"
        )
    if cfg.pyramid_levels < 1:
        raise UserError(f"photometric.pyramid_levels must be >= 1, got {cfg.pyramid_levels}")
    _check_downsample(cfg.shading_downsample, "photometric.shading_downsample")


def _check_downsample(factor: int, name: str = "downsample") -> None:
    if factor not in SHADING_DOWNSAMPLE_FACTORS:
        raise UserError(f"{name} must be one of {', '.join(map(str, SHADING_DOWNSAMPLE_FACTORS))}, got {factor}")


def _run_step(step, anon: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    """What every public single step does around its float32 core ``step(anon, orig, mask, cfg)``:
    check the inputs, pass an empty batch through, round to uint8 once at the end."""
    _check_config(cfg)
    anon_f, orig_f, mask_f = _check_batch(anon, orig, mask)
    if len(anon_f) == 0:
        return np.zeros(anon_f.shape, np.uint8)
    return _to_uint8(step(anon_f, orig_f, mask_f, cfg))


def _one_original(orig: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``orig[:1], mask[:1]`` when every face of the batch has the same original and mask (the
    identity guard renders a face's candidates in batches of 8 over one original), else both as
    they are. The original's side of each step (shading, coarsest level, chroma statistics) is then
    computed once and broadcast: per face it is the same computation, so the same bits."""
    if len(orig) > 1 and all(np.array_equal(o, orig[0]) and np.array_equal(m, mask[0])
                             for o, m in zip(orig[1:], mask[1:])):  # fmt: skip
        return orig[:1], mask[:1]
    return orig, mask


def _within_mask(base: np.ndarray, changed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``base + mask * (changed - base)``: the step applies inside the face region only."""
    return base + mask[..., None] * (changed - base)


# --------------------------------------------------------------------------------------------
# 1. relighting


def shading_albedo(
    images: np.ndarray,
    diameter: int,
    sigma_color: float,
    sigma_space: float,
    eps: float = SHADING_EPS,
    downsample: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a batch of images into albedo and shading.

    ``S = BF(gray(I))`` and ``A_c = I_c / (S + eps)`` for each channel ``c``, where
    ``gray(I) = 0.299 R + 0.587 G + 0.114 B`` and ``BF`` is OpenCV's bilateral filter on float32
    (square window of ``diameter`` restricted to a disc, spatial Gaussian ``sigma_space`` in pixels,
    range Gaussian ``sigma_color`` in [0, 1] intensity units, reflect-101 border).

    Args:
        images: ``(B, H, W, 3)`` uint8, or floating in [0, 1].
        diameter: bilateral window diameter in pixels (>= 1).
        sigma_color: range sigma in [0, 1] intensity units.
        sigma_space: spatial sigma in pixels.
        eps: added to the shading before dividing.
        downsample: filter a copy shrunk by this factor (1, 2 or 4; see :mod:`.resample`) with the
            window and ``sigma_space`` shrunk alike, and grow the shading back bilinearly.

    Returns:
        ``(albedo, shading)``: float32 ``(B, H, W, 3)`` and float32 ``(B, H, W)``, in [0, 1] units
        (the albedo can exceed 1 where a pixel is brighter than its smoothed surroundings).
    """
    _check_downsample(downsample)
    images = _to_unit(_check_images(images, "images"))
    gray = np.ascontiguousarray(images @ GRAY_WEIGHTS)  # (B, H, W) float32
    shading = reduced_shading(gray, int(downsample), _bilateral, diameter, sigma_color, sigma_space, np)
    albedo = images / (shading[..., None] + np.float32(eps))
    return albedo, shading


def _bilateral(gray: np.ndarray, diameter: int, sigma_color: float, sigma_space: float) -> np.ndarray:
    """cv2.bilateralFilter of each face of a float32 ``(B, H, W)`` stack."""
    shading = np.empty_like(gray)
    # cv2.bilateralFilter is 2-D only; one call per face also keeps each face's result
    # independent of the rest of the batch (OpenCV scales its range table per image).
    for i in range(gray.shape[0]):
        shading[i] = cv2.bilateralFilter(gray[i], int(diameter), float(sigma_color), float(sigma_space))
    return shading


def _relight(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    params = (cfg.bilateral_diameter, cfg.bilateral_sigma_color, cfg.bilateral_sigma_space, SHADING_EPS)
    albedo_anon, _ = shading_albedo(anon, *params, downsample=cfg.shading_downsample)
    _, shading_orig = shading_albedo(_one_original(orig, mask)[0], *params, downsample=cfg.shading_downsample)
    relit = np.clip(albedo_anon * shading_orig[..., None], 0.0, 1.0)  # (1, H, W) broadcasts
    return _within_mask(anon, relit, mask)


def relight(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    """Give the generated face the original's shading: ``I_relit = A_anon * S_orig``.

    ``A_anon`` and ``S_orig`` come from :func:`shading_albedo` with the bilateral settings of
    ``cfg``; the result is clipped to [0, 1] and applied inside ``mask`` only
    (``out = anon + mask * (I_relit - anon)``).

    Args:
        anon: generated faces ``(B, S, S, 3)`` uint8 (or floating in [0, 1]).
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1].
        cfg: photometric settings (bilateral filter parameters).

    Returns:
        ``(B, S, S, 3)`` uint8.
    """
    return _run_step(_relight, anon, orig, mask, cfg)


# --------------------------------------------------------------------------------------------
# 2. Laplacian refinement


def _max_levels(height: int, width: int) -> int:
    """How many pyramid levels an image allows (halving until a side reaches one pixel)."""
    levels, size = 1, min(height, width)
    while size > 1:
        size = (size + 1) // 2
        levels += 1
    return levels


def _gaussian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """``[G_0 = image, G_1 = down(G_0), ...]`` for one ``(H, W)`` or ``(H, W, C)`` image."""
    levels = min(levels, _max_levels(image.shape[0], image.shape[1]))
    pyramid = [image]
    for _ in range(levels - 1):
        down = cv2.pyrDown(pyramid[-1])
        # OpenCV drops a trailing channel axis of size 1; keep the caller's layout.
        pyramid.append(down.reshape(down.shape[:2] + image.shape[2:]))
    return pyramid


def _up(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Upsample ``image`` to the height and width of ``like`` (cv2.pyrUp keeps odd sizes exact)."""
    up = cv2.pyrUp(image, dstsize=(like.shape[1], like.shape[0]))
    # OpenCV drops a trailing channel axis of size 1; keep the caller's layout.
    return up.reshape(like.shape[:2] + image.shape[2:])


def _laplacian_single(image: np.ndarray, levels: int) -> list[np.ndarray]:
    gaussian = _gaussian_pyramid(image, levels)
    residuals = [g - _up(g_next, g) for g, g_next in zip(gaussian[:-1], gaussian[1:])]
    return residuals + [gaussian[-1]]


def _reconstruct_single(pyramid: list[np.ndarray]) -> np.ndarray:
    image = pyramid[-1]
    for residual in reversed(pyramid[:-1]):
        image = residual + _up(image, residual)
    return image


def _per_face(fn, images: np.ndarray, batched: bool) -> list[np.ndarray]:
    """Run a one-image pyramid function per face and stack each level over the batch."""
    if not batched:
        return fn(np.ascontiguousarray(images))
    # One cv2 call per face (not faces stacked as channels): OpenCV's SIMD paths round
    # differently for different channel counts, and a face must not depend on its batch.
    per_face = [fn(np.ascontiguousarray(face)) for face in images]
    return [np.stack(level) for level in zip(*per_face)]


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid ``[L_0, ..., L_{n-2}, G_{n-1}]`` of a float image or batch.

    ``G_0 = I``, ``G_{k+1} = down(G_k)``, ``L_k = G_k - up(G_{k+1})``, where ``down`` and ``up``
    are OpenCV's ``pyrDown``/``pyrUp`` (5-tap binomial kernel ``[1 4 6 4 1] / 16``, reflect-101
    border; ``up`` restores the exact size of the finer level, odd sizes included).

    Args:
        image: float32 ``(H, W)``, ``(H, W, C)`` or a batch ``(B, H, W, C)``.
        levels: number of entries ``n`` of the pyramid (>= 1); capped where a side would fall
            below one pixel. ``levels == 1`` returns ``[image]``.

    Returns:
        ``n`` float arrays, finest first; the last is the coarsest Gaussian level ``G_{n-1}``.
        For a batch every entry keeps the leading batch axis.
    """
    if levels < 1:
        raise UserError(f"pyramid levels must be >= 1, got {levels}")
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"laplacian_pyramid needs a floating image, got {image.dtype}")
    if image.ndim not in (2, 3, 4) or image.size == 0:
        raise ValueError(f"image must be a non-empty (H, W), (H, W, C) or (B, H, W, C), got shape {image.shape}")
    return _per_face(lambda face: _laplacian_single(face, levels), image, batched=image.ndim == 4)


def reconstruct_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Invert :func:`laplacian_pyramid`: ``G_k = L_k + up(G_{k+1})`` from the coarsest level up.

    Exact (to float rounding) for an unmodified pyramid. Accepts single images or batches,
    as produced by :func:`laplacian_pyramid`.
    """
    if not pyramid:
        raise ValueError("cannot reconstruct an empty pyramid")
    if pyramid[0].ndim != 4:
        return _reconstruct_single(pyramid)
    return np.stack([_reconstruct_single([level[i] for level in pyramid]) for i in range(pyramid[0].shape[0])])


def _laplacian_refine(relit: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    # The face in the surroundings it will have once pasted back: a generated background that
    # differs from the original's would otherwise bleed into the face's low frequencies.
    in_context = _within_mask(orig, relit, mask)
    pyramid = laplacian_pyramid(in_context, cfg.pyramid_levels)
    # Only the original's coarsest Gaussian level is needed, not its whole Laplacian pyramid.
    coarsest = _per_face(lambda face: _gaussian_pyramid(face, cfg.pyramid_levels)[-1:], _one_original(orig, mask)[0],
                         batched=True)[0]  # fmt: skip
    pyramid[-1] = np.broadcast_to(coarsest, (len(orig), *coarsest.shape[1:]))
    refined = np.clip(reconstruct_pyramid(pyramid), 0.0, 1.0)
    return _within_mask(relit, refined, mask)


def laplacian_refine(relit: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    """Take the lowest frequencies from the original face, the rest from the relit one.

    Builds the Laplacian pyramid (:func:`laplacian_pyramid`, ``cfg.pyramid_levels`` entries) of
    the relit face in its original surroundings, ``X = orig + mask * (relit - orig)`` (the
    context it will have once pasted back; ``X == relit`` wherever the generator kept the
    original background), replaces its coarsest Gaussian level ``G_{n-1}(X)`` by
    ``G_{n-1}(orig)``, reconstructs by upsample-and-add, clips to [0, 1] and applies the result
    inside ``mask`` only (``out = relit + mask * (refined - relit)``).

    Args:
        relit: faces to refine ``(B, S, S, 3)`` uint8 (or floating in [0, 1]).
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1].
        cfg: photometric settings (``pyramid_levels``).

    Returns:
        ``(B, S, S, 3)`` uint8.
    """
    return _run_step(_laplacian_refine, relit, orig, mask, cfg)


# --------------------------------------------------------------------------------------------
# 3. colour transfer


def rgb_to_ycbcr(images: np.ndarray) -> np.ndarray:
    """Full-range BT.601 YCbCr of float RGB in [0, 1]: ``Y = 0.299 R + 0.587 G + 0.114 B``,
    ``Cb = 0.5 + 0.564 (B - Y)``, ``Cr = 0.5 + 0.713 (R - Y)``; channels ordered Y, Cb, Cr."""
    return (images @ RGB_TO_YCBCR.T.astype(np.float32)) + YCBCR_OFFSET.astype(np.float32)


def ycbcr_to_rgb(images: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (exact matrix inverse, no clipping)."""
    return (images - YCBCR_OFFSET.astype(np.float32)) @ YCBCR_TO_RGB.T.astype(np.float32)


def _masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask-weighted mean and std over each face of ``values`` (B, H, W, C); also the weight sums.

    Weighted sums are batched matrix products (BLAS); the variance takes a second, centred pass
    rather than ``E[c^2] - E[c]^2``, which cancels badly in float32.
    """
    b = values.shape[0]
    w = mask.reshape(b, 1, -1)
    v = values.reshape(b, -1, values.shape[-1])
    weight = mask.reshape(b, -1).sum(axis=1, dtype=np.float64)  # (B,)
    safe = np.maximum(weight, MASK_WEIGHT_MIN).astype(np.float32)[:, None]
    mean = (w @ v)[:, 0] / safe  # (B, C)
    centred = v - mean[:, None, :]
    var = (w @ (centred * centred))[:, 0] / safe
    return mean, np.sqrt(var), weight


def _color_transfer(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ycc_anon = rgb_to_ycbcr(anon)
    orig_once, mask_once = _one_original(orig, mask)
    mean_a, std_a, weight = _masked_mean_std(ycc_anon[..., 1:], mask)
    mean_o, std_o, _ = _masked_mean_std(rgb_to_ycbcr(orig_once)[..., 1:], mask_once)
    mean_o = np.broadcast_to(mean_o, mean_a.shape).copy()  # (1, 2) for one shared original
    scale = std_o / np.maximum(std_a, CHROMA_STD_FLOOR)
    # A face with an empty mask has no statistics; leave it as it is.
    empty = weight < MASK_WEIGHT_MIN
    scale[empty], mean_o[empty] = 1.0, mean_a[empty]
    scale, mean_a, mean_o = (v[:, None, None, :] for v in (scale, mean_a, mean_o))
    chroma = np.clip((ycc_anon[..., 1:] - mean_a) * scale + mean_o, 0.0, 1.0)
    transferred = np.concatenate([ycc_anon[..., :1], chroma], axis=-1)
    rgb = np.clip(ycbcr_to_rgb(transferred), 0.0, 1.0)
    return _within_mask(anon, rgb, mask)


def color_transfer(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    """Match the chroma of the generated face to the original's, leaving its luma alone.

    In full-range BT.601 YCbCr (:func:`rgb_to_ycbcr`), for ``c`` in Cb and Cr:
    ``c' = (c - mean_anon) * (std_orig / max(std_anon, 1/255)) + mean_orig``, with means and
    standard deviations weighted by ``mask`` over each face; ``Y`` is untouched; ``c'`` is clipped
    to [0, 1], converted back to RGB (clipped again) and applied inside ``mask`` only. A face
    whose mask is empty is returned unchanged.

    Args:
        anon: faces to recolour ``(B, S, S, 3)`` uint8 (or floating in [0, 1]).
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1]; also the statistics' weights.
        cfg: photometric settings (no colour-specific ones yet; kept for a uniform signature).

    Returns:
        ``(B, S, S, 3)`` uint8.
    """
    return _run_step(lambda a, o, m, _cfg: _color_transfer(a, o, m), anon, orig, mask, cfg)


# --------------------------------------------------------------------------------------------
# all steps


def postprocess(anon: np.ndarray, orig: np.ndarray, mask: np.ndarray, cfg: PhotometricConfig) -> np.ndarray:
    """Run the enabled steps in order relight -> Laplacian refinement -> colour transfer.

    ``out = color(laplacian(relight(anon)))`` with each step skipped when ``cfg.relight``,
    ``cfg.laplacian`` or ``cfg.color_transfer`` is False. The steps chain in float32 and the
    result is rounded to uint8 once; with every step off the input comes back unchanged, and
    pixels whose mask is 0 always do. An empty batch (``B == 0``) gives an empty result.

    Args:
        anon: generated faces ``(B, S, S, 3)`` uint8.
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1].
        cfg: photometric settings.

    Returns:
        ``(B, S, S, 3)`` uint8 (a new array).
    """
    _check_config(cfg)
    anon_f, orig_f, mask_f = _check_batch(anon, orig, mask)
    if len(anon_f) == 0:
        return np.zeros(anon_f.shape, np.uint8)
    if not (cfg.relight or cfg.laplacian or cfg.color_transfer):
        anon = np.asarray(anon)
        return anon.copy() if anon.dtype == np.uint8 else _to_uint8(anon_f)
    out = anon_f
    if cfg.relight:
        out = _relight(out, orig_f, mask_f, cfg)
    if cfg.laplacian:
        out = _laplacian_refine(out, orig_f, mask_f, cfg)
    if cfg.color_transfer:
        out = _color_transfer(out, orig_f, mask_f)
    return _to_uint8(out)
