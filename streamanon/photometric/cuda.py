"""CuPy backend of the photometric steps: :mod:`streamanon.photometric.reference` as CUDA kernels.

The same public functions with the same signatures and conventions as the NumPy/OpenCV
reference (:data:`streamanon.photometric.API`, plus ``rgb_to_ycbcr``/``ycbcr_to_rgb``), every
kernel batched over the faces of a call:

- images are batches ``(B, S, S, 3)`` RGB, ``uint8`` or floating in ``[0, 1]``; masks are
  ``(B, S, S)`` floating in ``[0, 1]``; every step changes only the mask region
  (``out = base + mask * (step(base) - base)``), so pixels whose mask is 0 come back bit-identical;
- everything runs in float32; the uint8 results are rounded once, at the end, as
  ``floor(clip(x, 0, 1) * 255 + 0.5)`` (the kernel uses non-fused ``__fmul_rn``/``__fadd_rn``, so
  it rounds exactly like NumPy);
- **array kind**: inputs may be NumPy or CuPy arrays. A function returns CuPy arrays (on the
  current CuPy device) when its first array argument (``images``, ``anon``, ``relit``, ``image`` or
  ``pyramid[0]``) is a CuPy array, and NumPy arrays otherwise (copied back to the host). Work
  happens on CuPy's current device: select another one with ``with cupy.cuda.Device(n):``.
  Floating inputs come back as float32 (the reference keeps float64 in its pyramids).

Which kernel mirrors which part of the reference:

- ``sa_gray`` (RawKernel): ``images @ GRAY_WEIGHTS`` in :func:`reference.shading_albedo`.
- ``sa_bilateral_lut`` + ``sa_bilateral`` (RawKernels): ``cv2.bilateralFilter`` on float32, as
  :func:`reference.shading_albedo` calls it once per face: a window of radius ``diameter // 2``
  (``cvRound(1.5 * sigma_space)`` for ``diameter <= 0``, at least 1) restricted to a disc, the
  centre with weight 1, reflect-101 border (BORDER_DEFAULT), and OpenCV's range weights: a
  4096-bin ``exp`` table over each face's own ``[min, max]``, linearly interpolated. A face with
  ``max - min < FLT_EPSILON``, or a sigma ``<= 1e-6``, comes back unfiltered, as in OpenCV.
- ``sa_pyr_down`` (RawKernel): ``cv2.pyrDown`` in ``_gaussian_pyramid``: 5-tap
  ``[1 4 6 4 1] / 16`` both ways, reflect-101 border, output ``ceil(size / 2)``.
- ``sa_pyr_up`` (RawKernel): ``cv2.pyrUp(src, dstsize)`` in ``_up``: zero insertion and the same
  kernel times 4 (taps ``1 6 1`` on even, ``4 4`` on odd outputs, / 64), with OpenCV's border:
  reflect-101 before the first sample, replicate past the last (odd destination sizes too).
- ``_RGB_TO_YCC``, ``_YCC_TO_RGB`` (ElementwiseKernels): :func:`reference.rgb_to_ycbcr`,
  :func:`reference.ycbcr_to_rgb`, with the same float32 matrices.
- ``_CHROMA_TRANSFER`` (ElementwiseKernel): the Cb/Cr remap, clip and back-to-RGB of
  ``reference._color_transfer``.
- ``_MASKED_SUM``, ``_MASKED_SQ_DEV`` (ReductionKernels, over axes 1 and 2): the per-face sums of
  ``reference._masked_mean_std``, the variance from a second, centred pass (float64 accumulators).
- ``_WITHIN_MASK``, ``_ROUND_U8`` (ElementwiseKernels): ``reference._within_mask`` and
  ``reference._to_uint8``, both without fused multiply-adds.

Parity status: written without GPU access; tests/test_photometric_cuda.py checks it on a CUDA
machine (max error 1/255 on uint8 results, mask-0 pixels bit-identical). Before that, the kernel
source compiled with nvcc, and the same test file passed on a CPU with a NumPy stand-in for CuPy
that ran these kernel sources through g++; CuPy's own launch, broadcasting and reduction
machinery and the GPU's arithmetic were not exercised. tests/test_cuda_source.py keeps the first
check on every CPU run: nvcc compiles the RawModule source and the elementwise and reduction
bodies (wrapped as CuPy wraps them) for sm_90, and every kernel name launched is defined.

Importing this module imports CuPy (:func:`streamanon.photometric.get_backend` guards that); it
compiles nothing until a kernel first runs.
"""

from __future__ import annotations

import functools
import math

import cupy as cp
import numpy as np

from ..config import PhotometricConfig
from ..errors import UserError
from . import API
from .reference import (
    CHROMA_STD_FLOOR,
    GRAY_WEIGHTS,
    MASK_WEIGHT_MIN,
    RGB_TO_YCBCR,
    SHADING_EPS,
    YCBCR_OFFSET,
    YCBCR_TO_RGB,
    _check_config,
    _check_downsample,
    _max_levels,
)
from .resample import reduced_shading

__all__ = [*API, "rgb_to_ycbcr", "ycbcr_to_rgb"]

# OpenCV's bilateralFilter_32f: 4096 bins of its exp table per channel, 2 more for interpolation.
_EXP_BINS = 4096
_LUT_SIZE = _EXP_BINS + 2
# OpenCV copies the source unfiltered for sigmas at or below this.
_SIGMA_MIN = 1e-6
_INV_255 = np.float32(1.0 / 255.0)  # the reference's uint8 -> [0, 1] factor
_THREADS = 256
_MAX_BLOCKS = 65535  # grid-stride loops cover what does not fit


def _f32(value: float) -> str:
    """A float32 constant as a CUDA C literal (the float32 value's shortest repr, so exact)."""
    return f"({float(np.float32(value))!r}f)"


# --------------------------------------------------------------------------------------------
# RawKernels: one thread per output element in a grid-stride loop; contiguous float32 arrays.

_DEFINES = f"""
#define EXP_BINS {_EXP_BINS}
#define LUT_SIZE {_LUT_SIZE}
#define FLT_EPSILON_D 1.1920928955078125e-07
#define GRAY_R {_f32(GRAY_WEIGHTS[0])}
#define GRAY_G {_f32(GRAY_WEIGHTS[1])}
#define GRAY_B {_f32(GRAY_WEIGHTS[2])}
"""

_KERNELS = r"""
#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// OpenCV's borderInterpolate for BORDER_REFLECT_101 (BORDER_DEFAULT): gfedcb|abcdefgh|gfedcba.
__device__ __forceinline__ int reflect101(int p, int n)
{
    if (n == 1) return 0;
    while (p < 0 || p >= n) p = (p < 0) ? -p : 2 * n - 2 - p;
    return p;
}

// BT.601 luma of interleaved RGB: gray[i] = 0.299 R + 0.587 G + 0.114 B.
extern "C" __global__ void sa_gray(const float* __restrict__ rgb, float* __restrict__ gray, long long n)
{
    GRID_STRIDE_LOOP(i, n) {
        const float* p = rgb + 3 * i;
        gray[i] = p[0] * GRAY_R + p[1] * GRAY_G + p[2] * GRAY_B;
    }
}

// OpenCV's range-weight table of one face: lut[k] = (float)exp(v * v * color_coeff) with
// v = (float)k / scale_index (float division, as OpenCV), scale_index = EXP_BINS / (max - min).
// exp is monotonic, so OpenCV's "zero from the first zero on" rule needs no special case.
extern "C" __global__ void sa_bilateral_lut(const float* __restrict__ vmin, const float* __restrict__ vmax,
                                            double color_coeff, float* __restrict__ lut, int batch)
{
    const long long n = (long long)batch * LUT_SIZE;
    GRID_STRIDE_LOOP(i, n) {
        const int b = (int)(i / LUT_SIZE);
        const int k = (int)(i % LUT_SIZE);
        const float len = (float)((double)vmax[b] - (double)vmin[b]);
        const float scale_index = (float)EXP_BINS / len;
        const double v = (double)((float)k / scale_index);
        lut[i] = (float)exp(v * v * color_coeff);
    }
}

// cv2.bilateralFilter on one float32 channel, per face of a (batch, height, width) stack.
// The window (without its centre) is the list (ofs_y[k], ofs_x[k], space_w[k]), k < maxk, in
// OpenCV's order; the centre pixel enters with weight 1.
extern "C" __global__ void sa_bilateral(const float* __restrict__ src, float* __restrict__ dst,
                                        const float* __restrict__ vmin, const float* __restrict__ vmax,
                                        const float* __restrict__ lut, const int* __restrict__ ofs_y,
                                        const int* __restrict__ ofs_x, const float* __restrict__ space_w,
                                        int maxk, int batch, int height, int width)
{
    const long long plane = (long long)height * width;
    const long long n = (long long)batch * plane;
    GRID_STRIDE_LOOP(i, n) {
        const int b = (int)(i / plane);
        const int y = (int)((i % plane) / width);
        const int x = (int)(i % width);
        const float* img = src + (long long)b * plane;
        const float rval = src[i];
        const double range = (double)vmax[b] - (double)vmin[b];
        if (fabs(range) < FLT_EPSILON_D) {  // a flat face: OpenCV copies it
            dst[i] = rval;
            continue;
        }
        const float scale_index = (float)EXP_BINS / (float)range;
        const float* table = lut + (long long)b * LUT_SIZE;
        float sum = 0.0f;
        float wsum = 0.0f;
        for (int k = 0; k < maxk; k++) {
            const int sy = reflect101(y + ofs_y[k], height);
            const int sx = reflect101(x + ofs_x[k], width);
            const float val = img[(long long)sy * width + sx];
            float alpha = fabsf(val - rval) * scale_index;
            int idx = (int)floorf(alpha);
            if (idx > EXP_BINS) idx = EXP_BINS;  // rounding at the top of the range
            if (idx < 0) idx = 0;
            alpha -= (float)idx;
            const float w = space_w[k] * (table[idx] + alpha * (table[idx + 1] - table[idx]));
            wsum += w;
            sum += val * w;
        }
        dst[i] = (sum + rval) / (wsum + 1.0f);
    }
}

// cv2.pyrDown of a (batch, height, width, channels) stack into (batch, out_h, out_w, channels),
// out = ceil(size / 2): rows then columns of the 5-tap [1 4 6 4 1] kernel, reflect-101, / 256.
extern "C" __global__ void sa_pyr_down(const float* __restrict__ src, float* __restrict__ dst,
                                       int batch, int height, int width, int channels, int out_h, int out_w)
{
    const long long n = (long long)batch * out_h * out_w * channels;
    GRID_STRIDE_LOOP(i, n) {
        const int c = (int)(i % channels);
        long long t = i / channels;
        const int x = (int)(t % out_w);
        t /= out_w;
        const int y = (int)(t % out_h);
        const int b = (int)(t / out_h);
        const float* img = src + (long long)b * height * width * channels + c;
        long long sx[5];
        for (int k = 0; k < 5; k++) sx[k] = (long long)reflect101(2 * x + k - 2, width) * channels;
        float row[5];
        for (int k = 0; k < 5; k++) {
            const float* line = img + (long long)reflect101(2 * y + k - 2, height) * width * channels;
            row[k] = line[sx[2]] * 6.0f + (line[sx[1]] + line[sx[3]]) * 4.0f + line[sx[0]] + line[sx[4]];
        }
        dst[i] = (row[2] * 6.0f + (row[1] + row[3]) * 4.0f + row[0] + row[4]) * 0.00390625f;
    }
}

// Source sample of cv2.pyrUp for tap position p of a source of length n: reflect-101 before the
// first sample (-1 -> 1), replicate past the last (n -> n - 1); a single sample serves all.
__device__ __forceinline__ int up_source(int p, int n)
{
    if (p < 0) return (-p < n - 1) ? -p : n - 1;
    if (p >= n) return n - 1;
    return p;
}

// Taps of destination position pos: even 2s -> (s-1, s, s+1) x (1, 6, 1); odd 2s+1 -> (s, s+1) x (4, 4).
__device__ __forceinline__ int up_taps(int pos, int n, int* idx, float* w)
{
    const int s = pos >> 1;
    if (pos & 1) {
        idx[0] = up_source(s, n);     w[0] = 4.0f;
        idx[1] = up_source(s + 1, n); w[1] = 4.0f;
        return 2;
    }
    idx[0] = up_source(s - 1, n); w[0] = 1.0f;
    idx[1] = up_source(s, n);     w[1] = 6.0f;
    idx[2] = up_source(s + 1, n); w[2] = 1.0f;
    return 3;
}

// cv2.pyrUp(src, dstsize=(out_w, out_h)) of a (batch, height, width, channels) stack, with
// out = 2 * size or 2 * size - 1: zero insertion and the 5-tap kernel times 4, / 64.
extern "C" __global__ void sa_pyr_up(const float* __restrict__ src, float* __restrict__ dst,
                                     int batch, int height, int width, int channels, int out_h, int out_w)
{
    const long long n = (long long)batch * out_h * out_w * channels;
    GRID_STRIDE_LOOP(i, n) {
        const int c = (int)(i % channels);
        long long t = i / channels;
        const int x = (int)(t % out_w);
        t /= out_w;
        const int y = (int)(t % out_h);
        const int b = (int)(t / out_h);
        const float* img = src + (long long)b * height * width * channels + c;
        int ix[3], iy[3];
        float wx[3], wy[3];
        const int nx = up_taps(x, width, ix, wx);
        const int ny = up_taps(y, height, iy, wy);
        float acc = 0.0f;
        for (int ky = 0; ky < ny; ky++) {
            const float* line = img + (long long)iy[ky] * width * channels;
            float row = 0.0f;
            for (int kx = 0; kx < nx; kx++) row += line[(long long)ix[kx] * channels] * wx[kx];
            acc += row * wy[ky];
        }
        dst[i] = acc * 0.015625f;
    }
}
"""

_SOURCE = _DEFINES + _KERNELS
_MODULE = cp.RawModule(code=_SOURCE)  # compiled (once per device) when a kernel first runs


@functools.lru_cache(maxsize=None)
def _kernel(name: str):
    return _MODULE.get_function(name)


def _launch(name: str, n: int, *args) -> None:
    """Run RawKernel ``name`` over ``n`` output elements (grid-stride loop, 256 threads a block).

    Scalars must come as NumPy scalars of the kernel's C types (np.int32, np.int64, np.float64):
    CuPy would pass a Python int as a 64-bit integer."""
    if n <= 0:
        return
    blocks = min((n + _THREADS - 1) // _THREADS, _MAX_BLOCKS)
    _kernel(name)((blocks,), (_THREADS,), args)


# --------------------------------------------------------------------------------------------
# Elementwise and reduction kernels (broadcasting, any strides).


def _dot(row: np.ndarray, names: tuple[str, str, str]) -> str:
    return " + ".join(f"{_f32(c)} * {n}" for c, n in zip(row, names))


_M = RGB_TO_YCBCR.astype(np.float32)
_MI = YCBCR_TO_RGB.astype(np.float32)
_OFF = YCBCR_OFFSET.astype(np.float32)


def _ycc_to_rgb_body(luma: str, cb: str, cr: str, clip: bool) -> str:
    """C statements setting red/green/blue from YCbCr values (the reference's matrix inverse)."""
    lines = [
        f"const float d0 = {luma} - {_f32(_OFF[0])};",
        f"const float d1 = {cb} - {_f32(_OFF[1])};",
        f"const float d2 = {cr} - {_f32(_OFF[2])};",
    ]
    for k, name in enumerate(("red", "green", "blue")):
        value = _dot(_MI[k], ("d0", "d1", "d2"))
        lines.append(f"{name} = fminf(fmaxf({value}, 0.0f), 1.0f);" if clip else f"{name} = {value};")
    return "\n".join(lines)


_RGB_TO_YCC = cp.ElementwiseKernel(
    "float32 red, float32 green, float32 blue",
    "float32 luma, float32 cb, float32 cr",
    "\n".join(
        f"{name} = {_dot(_M[k], ('red', 'green', 'blue'))} + {_f32(_OFF[k])};"
        for k, name in enumerate(("luma", "cb", "cr"))
    ),
    "streamanon_rgb_to_ycbcr",
)

_YCC_TO_RGB = cp.ElementwiseKernel(
    "float32 luma, float32 cb, float32 cr",
    "float32 red, float32 green, float32 blue",
    _ycc_to_rgb_body("luma", "cb", "cr", clip=False),
    "streamanon_ycbcr_to_rgb",
)

# c' = clip((c - mean_anon) * scale + mean_orig, 0, 1) for Cb and Cr, Y kept, back to RGB, clipped.
_CHROMA_TRANSFER = cp.ElementwiseKernel(
    "float32 luma, float32 cb, float32 cr, float32 mean_a_cb, float32 mean_a_cr, "
    "float32 scale_cb, float32 scale_cr, float32 mean_o_cb, float32 mean_o_cr",
    "float32 red, float32 green, float32 blue",
    "const float cb2 = fminf(fmaxf((cb - mean_a_cb) * scale_cb + mean_o_cb, 0.0f), 1.0f);\n"
    "const float cr2 = fminf(fmaxf((cr - mean_a_cr) * scale_cr + mean_o_cr, 0.0f), 1.0f);\n"
    + _ycc_to_rgb_body("luma", "cb2", "cr2", clip=True),
    "streamanon_chroma_transfer",
)

# base + mask * (changed - base) with three separate roundings, as NumPy: where the mask is 0 the
# result is base, bit for bit.
_WITHIN_MASK = cp.ElementwiseKernel(
    "float32 base, float32 changed, float32 weight",
    "float32 blended",
    "blended = __fadd_rn(base, __fmul_rn(weight, __fsub_rn(changed, base)));",
    "streamanon_within_mask",
)

_ROUND_U8 = cp.ElementwiseKernel(
    "float32 value",
    "uint8 level",
    "level = (unsigned char)floorf(__fadd_rn(__fmul_rn(fminf(fmaxf(value, 0.0f), 1.0f), 255.0f), 0.5f));",
    "streamanon_round_u8",
)

# Per-face sums over the pixel axes (call with axis=(1, 2)); float64 accumulators.
_MASKED_SUM = cp.ReductionKernel(
    "float32 weight, float32 value",
    "float64 total",
    "(double)weight * (double)value",
    "a + b",
    "total = a",
    "0",
    "streamanon_masked_sum",
)

_MASKED_SQ_DEV = cp.ReductionKernel(
    "float32 weight, float32 value, float64 mean",
    "float64 total",
    "(double)weight * ((double)value - mean) * ((double)value - mean)",
    "a + b",
    "total = a",
    "0",
    "streamanon_masked_sq_dev",
)


# --------------------------------------------------------------------------------------------
# input handling


def _on_device(array) -> bool:
    return isinstance(array, cp.ndarray)


def _device(array) -> cp.ndarray:
    return array if isinstance(array, cp.ndarray) else cp.asarray(np.asarray(array))


def _like(array: cp.ndarray, on_device: bool):
    """Hand a result back as the kind of array the caller passed in."""
    return array if on_device else cp.asnumpy(array)


def _to_unit(images: cp.ndarray) -> cp.ndarray:
    """``uint8`` -> float32 in [0, 1] (the reference's factor); floating input is taken as is."""
    if images.dtype == np.uint8:
        return images.astype(cp.float32) * _INV_255
    if images.dtype.kind == "f":
        return images.astype(cp.float32, copy=False)
    raise ValueError(f"images must be uint8 or floating, got {images.dtype}")


def _to_uint8(images: cp.ndarray) -> cp.ndarray:
    return _ROUND_U8(images)


def _check_images(images: cp.ndarray, name: str) -> cp.ndarray:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must be a batch of RGB crops (B, H, W, 3), got shape {images.shape}")
    return images


def _check_batch(anon, orig, mask) -> tuple[cp.ndarray, cp.ndarray, cp.ndarray]:
    """Validate one (anon, orig, mask) batch; returns them on the device, float32 in [0, 1]."""
    anon = _check_images(_device(anon), "anon")
    orig = _check_images(_device(orig), "orig")
    mask = _device(mask)
    if anon.shape != orig.shape:
        raise ValueError(f"anon {anon.shape} and orig {orig.shape} must have the same shape")
    if mask.shape != anon.shape[:3]:
        raise ValueError(f"mask must have shape {anon.shape[:3]} (B, H, W), got {mask.shape}")
    if mask.dtype.kind != "f":
        raise ValueError(f"mask must be floating in [0, 1], got {mask.dtype}")
    return _to_unit(anon), _to_unit(orig), cp.clip(mask.astype(cp.float32, copy=False), 0.0, 1.0)


def _within_mask(base: cp.ndarray, changed: cp.ndarray, mask: cp.ndarray) -> cp.ndarray:
    """``base + mask * (changed - base)``: the step applies inside the face region only."""
    return _WITHIN_MASK(base, changed, mask[..., None])


def _empty_result(shape: tuple[int, ...], on_device: bool):
    return cp.zeros(shape, cp.uint8) if on_device else np.zeros(shape, np.uint8)


# --------------------------------------------------------------------------------------------
# 1. relighting


@functools.lru_cache(maxsize=32)
def _space_window(diameter: int, sigma_space: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's bilateral window without its centre, in its order: row and column offsets and
    spatial weights ``(float)exp(r * r * -0.5 / sigma_space**2)`` for ``r = sqrt(i*i + j*j) <= radius``."""
    radius = diameter // 2 if diameter > 0 else int(np.rint(sigma_space * 1.5))  # cvRound: half to even
    radius = max(radius, 1)
    coeff = -0.5 / (sigma_space * sigma_space)
    dy, dx, weights = [], [], []
    for i in range(-radius, radius + 1):
        for j in range(-radius, radius + 1):
            r = math.sqrt(float(i * i + j * j))
            if r > radius or (i == 0 and j == 0):
                continue
            dy.append(i)
            dx.append(j)
            weights.append(math.exp(r * r * coeff))
    return np.array(dy, np.int32), np.array(dx, np.int32), np.array(weights, np.float32)


@functools.lru_cache(maxsize=32)
def _space_window_on_device(diameter: int, sigma_space: float, device_id: int) -> tuple[cp.ndarray, ...]:
    """:func:`_space_window` on device ``device_id``, uploaded once: three uploads from pageable
    memory a call could each make the host wait for the stream's queued work."""
    with cp.cuda.Device(device_id):
        arrays = tuple(cp.asarray(part) for part in _space_window(diameter, sigma_space))
        cp.cuda.get_current_stream().synchronize()  # complete before another thread's stream reads them
    return arrays


def _bilateral(gray: cp.ndarray, diameter: int, sigma_color: float, sigma_space: float) -> cp.ndarray:
    """cv2.bilateralFilter of each face of a contiguous float32 ``(B, H, W)`` stack."""
    if sigma_color <= _SIGMA_MIN or sigma_space <= _SIGMA_MIN:
        return gray.copy()  # what OpenCV does
    b, h, w = gray.shape
    dy, dx, weights = _space_window_on_device(int(diameter), float(sigma_space), gray.device.id)
    flat = gray.reshape(b, h * w)
    vmin = cp.ascontiguousarray(flat.min(axis=1))
    vmax = cp.ascontiguousarray(flat.max(axis=1))
    lut = cp.empty((b, _LUT_SIZE), cp.float32)
    color_coeff = -0.5 / (float(sigma_color) * float(sigma_color))
    _launch("sa_bilateral_lut", b * _LUT_SIZE, vmin, vmax, np.float64(color_coeff), lut, np.int32(b))
    out = cp.empty_like(gray)
    _launch(
        "sa_bilateral",
        b * h * w,
        gray,
        out,
        vmin,
        vmax,
        lut,
        dy,
        dx,
        weights,
        np.int32(len(dy)),
        np.int32(b),
        np.int32(h),
        np.int32(w),
    )
    return out


def _shading_albedo(
    images: cp.ndarray, diameter: int, sigma_color: float, sigma_space: float, eps: float, downsample: int = 1
):
    images = cp.ascontiguousarray(images, dtype=cp.float32)
    b, h, w, _ = images.shape
    gray = cp.empty((b, h, w), cp.float32)
    _launch("sa_gray", b * h * w, images, gray, np.int64(b * h * w))
    shading = reduced_shading(gray, int(downsample), _bilateral, diameter, sigma_color, sigma_space, cp)
    albedo = images / (shading[..., None] + np.float32(eps))
    return albedo, shading


def shading_albedo(
    images,
    diameter: int,
    sigma_color: float,
    sigma_space: float,
    eps: float = SHADING_EPS,
    downsample: int = 1,
):
    """Split a batch of images into albedo and shading: ``S = BF(gray(I))``, ``A_c = I_c / (S + eps)``.

    As :func:`streamanon.photometric.reference.shading_albedo` (OpenCV's float32 bilateral
    filter per face, reflect-101 border), on the GPU.

    Args:
        images: ``(B, H, W, 3)`` uint8, or floating in [0, 1] (NumPy or CuPy).
        diameter: bilateral window diameter in pixels.
        sigma_color: range sigma in [0, 1] intensity units.
        sigma_space: spatial sigma in pixels.
        eps: added to the shading before dividing.
        downsample: filter at 1/``downsample`` of the resolution (1, 2 or 4), as the reference.

    Returns:
        ``(albedo, shading)``: float32 ``(B, H, W, 3)`` and ``(B, H, W)``, CuPy arrays for a CuPy
        ``images``, else NumPy.
    """
    _check_downsample(downsample)
    on_device = _on_device(images)
    images = _to_unit(_check_images(_device(images), "images"))
    if images.shape[0] == 0:
        return _like(images.copy(), on_device), _like(cp.zeros(images.shape[:3], cp.float32), on_device)
    albedo, shading = _shading_albedo(images, diameter, sigma_color, sigma_space, eps, downsample)
    return _like(albedo, on_device), _like(shading, on_device)


def _relight(anon: cp.ndarray, orig: cp.ndarray, mask: cp.ndarray, cfg: PhotometricConfig) -> cp.ndarray:
    params = (cfg.bilateral_diameter, cfg.bilateral_sigma_color, cfg.bilateral_sigma_space, SHADING_EPS)
    albedo_anon, _ = _shading_albedo(anon, *params, cfg.shading_downsample)
    _, shading_orig = _shading_albedo(orig, *params, cfg.shading_downsample)
    relit = cp.clip(albedo_anon * shading_orig[..., None], 0.0, 1.0)
    return _within_mask(anon, relit, mask)


def relight(anon, orig, mask, cfg: PhotometricConfig):
    """Give the generated face the original's shading: ``I_relit = A_anon * S_orig`` inside ``mask``.

    As :func:`streamanon.photometric.reference.relight`, on the GPU.

    Args:
        anon: generated faces ``(B, S, S, 3)`` uint8 (or floating in [0, 1]); NumPy or CuPy.
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1].
        cfg: photometric settings (bilateral filter parameters).

    Returns:
        ``(B, S, S, 3)`` uint8: CuPy for a CuPy ``anon``, else NumPy.
    """
    _check_config(cfg)
    on_device = _on_device(anon)
    anon_f, orig_f, mask_f = _check_batch(anon, orig, mask)
    if anon_f.shape[0] == 0:
        return _empty_result(anon_f.shape, on_device)
    return _like(_to_uint8(_relight(anon_f, orig_f, mask_f, cfg)), on_device)


# --------------------------------------------------------------------------------------------
# 2. Laplacian refinement


def _pyr_down(image: cp.ndarray) -> cp.ndarray:
    """cv2.pyrDown of each face of a ``(B, H, W, C)`` stack -> ``(B, ceil(H/2), ceil(W/2), C)``."""
    image = cp.ascontiguousarray(image, dtype=cp.float32)
    b, h, w, c = image.shape
    oh, ow = (h + 1) // 2, (w + 1) // 2
    out = cp.empty((b, oh, ow, c), cp.float32)
    args = (np.int32(b), np.int32(h), np.int32(w), np.int32(c), np.int32(oh), np.int32(ow))
    _launch("sa_pyr_down", out.size, image, out, *args)
    return out


def _pyr_up(image: cp.ndarray, height: int, width: int) -> cp.ndarray:
    """cv2.pyrUp of each face of a ``(B, h, w, C)`` stack to ``(B, height, width, C)``
    (``height`` is ``2h`` or ``2h - 1``, likewise ``width``)."""
    image = cp.ascontiguousarray(image, dtype=cp.float32)
    b, h, w, c = image.shape
    if not (0 <= 2 * h - height <= 1 and 0 <= 2 * w - width <= 1):
        raise ValueError(f"cannot upsample {h}x{w} to {height}x{width}")
    out = cp.empty((b, height, width, c), cp.float32)
    args = (np.int32(b), np.int32(h), np.int32(w), np.int32(c), np.int32(height), np.int32(width))
    _launch("sa_pyr_up", out.size, image, out, *args)
    return out


def _gaussian(batch: cp.ndarray, levels: int) -> list[cp.ndarray]:
    """``[G_0, ..., G_{n-1}]`` of a float32 ``(B, H, W, C)`` stack, capped like the reference."""
    levels = min(levels, _max_levels(batch.shape[1], batch.shape[2]))
    pyramid = [batch]
    for _ in range(levels - 1):
        pyramid.append(_pyr_down(pyramid[-1]))
    return pyramid


def _laplacian(batch: cp.ndarray, levels: int) -> list[cp.ndarray]:
    gaussian = _gaussian(batch, levels)
    residuals = [g - _pyr_up(g_next, g.shape[1], g.shape[2]) for g, g_next in zip(gaussian[:-1], gaussian[1:])]
    return residuals + [gaussian[-1]]


def _reconstruct(pyramid: list[cp.ndarray]) -> cp.ndarray:
    image = pyramid[-1]
    for residual in reversed(pyramid[:-1]):
        image = residual + _pyr_up(image, residual.shape[1], residual.shape[2])
    return image


def _as_batch(image: cp.ndarray) -> cp.ndarray:
    """(H, W), (H, W, C) or (B, H, W, C) -> contiguous float32 (B, H, W, C)."""
    if image.ndim == 2:
        image = image[None, :, :, None]
    elif image.ndim == 3:
        image = image[None]
    return cp.ascontiguousarray(image, dtype=cp.float32)


def _from_batch(batch: cp.ndarray, ndim: int) -> cp.ndarray:
    if ndim == 2:
        return batch[0, :, :, 0]
    if ndim == 3:
        return batch[0]
    return batch


def laplacian_pyramid(image, levels: int) -> list:
    """Laplacian pyramid ``[L_0, ..., L_{n-2}, G_{n-1}]`` of a float image or batch.

    As :func:`streamanon.photometric.reference.laplacian_pyramid` (cv2.pyrDown/pyrUp semantics),
    on the GPU; all faces of a batch go through each level's kernel together.

    Args:
        image: floating ``(H, W)``, ``(H, W, C)`` or a batch ``(B, H, W, C)``; NumPy or CuPy.
        levels: number of entries ``n`` (>= 1), capped where a side would fall below one pixel.

    Returns:
        ``n`` float32 arrays, finest first, with the input's layout: CuPy for a CuPy ``image``,
        else NumPy.
    """
    if levels < 1:
        raise UserError(f"pyramid levels must be >= 1, got {levels}")
    on_device = _on_device(image)
    image = _device(image)
    if image.dtype.kind != "f":
        raise ValueError(f"laplacian_pyramid needs a floating image, got {image.dtype}")
    if image.ndim not in (2, 3, 4) or image.size == 0:
        raise ValueError(f"image must be a non-empty (H, W), (H, W, C) or (B, H, W, C), got shape {image.shape}")
    pyramid = _laplacian(_as_batch(image), levels)
    return [_like(_from_batch(level, image.ndim), on_device) for level in pyramid]


def reconstruct_pyramid(pyramid: list):
    """Invert :func:`laplacian_pyramid`: ``G_k = L_k + up(G_{k+1})`` from the coarsest level up.

    Accepts single images or batches as :func:`laplacian_pyramid` returns them; the result is a
    CuPy array when ``pyramid[0]`` is one, else NumPy.
    """
    if not pyramid:
        raise ValueError("cannot reconstruct an empty pyramid")
    on_device = _on_device(pyramid[0])
    ndim = pyramid[0].ndim
    levels = [_as_batch(_device(level)) for level in pyramid]
    return _like(_from_batch(_reconstruct(levels), ndim), on_device)


def _laplacian_refine(relit: cp.ndarray, orig: cp.ndarray, mask: cp.ndarray, cfg: PhotometricConfig) -> cp.ndarray:
    # The face in the surroundings it will have once pasted back (see the reference).
    in_context = _within_mask(orig, relit, mask)
    pyramid = _laplacian(in_context, cfg.pyramid_levels)
    pyramid[-1] = _gaussian(cp.ascontiguousarray(orig), cfg.pyramid_levels)[-1]
    refined = cp.clip(_reconstruct(pyramid), 0.0, 1.0)
    return _within_mask(relit, refined, mask)


def laplacian_refine(relit, orig, mask, cfg: PhotometricConfig):
    """Take the lowest frequencies from the original face, the rest from the relit one.

    As :func:`streamanon.photometric.reference.laplacian_refine`, on the GPU.

    Args:
        relit: faces to refine ``(B, S, S, 3)`` uint8 (or floating in [0, 1]); NumPy or CuPy.
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1].
        cfg: photometric settings (``pyramid_levels``).

    Returns:
        ``(B, S, S, 3)`` uint8: CuPy for a CuPy ``relit``, else NumPy.
    """
    _check_config(cfg)
    on_device = _on_device(relit)
    relit_f, orig_f, mask_f = _check_batch(relit, orig, mask)
    if relit_f.shape[0] == 0:
        return _empty_result(relit_f.shape, on_device)
    return _like(_to_uint8(_laplacian_refine(relit_f, orig_f, mask_f, cfg)), on_device)


# --------------------------------------------------------------------------------------------
# 3. colour transfer


def _channels(images: cp.ndarray) -> tuple[cp.ndarray, cp.ndarray, cp.ndarray]:
    return images[..., 0], images[..., 1], images[..., 2]


def rgb_to_ycbcr(images):
    """Full-range BT.601 YCbCr of float RGB in [0, 1] (as the reference's); same kind of array back."""
    on_device = _on_device(images)
    images = _device(images)
    out = cp.empty(images.shape, cp.float32)
    _RGB_TO_YCC(*_channels(images.astype(cp.float32, copy=False)), *_channels(out))
    return _like(out, on_device)


def ycbcr_to_rgb(images):
    """Inverse of :func:`rgb_to_ycbcr` (the reference's exact matrix inverse, no clipping)."""
    on_device = _on_device(images)
    images = _device(images)
    out = cp.empty(images.shape, cp.float32)
    _YCC_TO_RGB(*_channels(images.astype(cp.float32, copy=False)), *_channels(out))
    return _like(out, on_device)


def _masked_mean_std(values: tuple[cp.ndarray, ...], mask: cp.ndarray, safe: cp.ndarray):
    """Mask-weighted mean and std per face of each ``(B, H, W)`` array in ``values``: two
    ``(B, len(values))`` float64 arrays (centred second pass for the variance)."""
    means, stds = [], []
    for value in values:
        mean = _MASKED_SUM(mask, value, axis=(1, 2)) / safe
        var = _MASKED_SQ_DEV(mask, value, mean[:, None, None], axis=(1, 2)) / safe
        means.append(mean)
        stds.append(cp.sqrt(var))
    return cp.stack(means, axis=1), cp.stack(stds, axis=1)


def _color_transfer(anon: cp.ndarray, orig: cp.ndarray, mask: cp.ndarray) -> cp.ndarray:
    luma_a, cb_a, cr_a = _RGB_TO_YCC(*_channels(anon))
    _, cb_o, cr_o = _RGB_TO_YCC(*_channels(orig))
    weight = mask.sum(axis=(1, 2), dtype=cp.float64)  # (B,)
    safe = cp.maximum(weight, MASK_WEIGHT_MIN)
    mean_a, std_a = _masked_mean_std((cb_a, cr_a), mask, safe)
    mean_o, std_o = _masked_mean_std((cb_o, cr_o), mask, safe)
    scale = std_o / cp.maximum(std_a, CHROMA_STD_FLOOR)
    # A face with an empty mask has no statistics; leave it as it is.
    empty = (weight < MASK_WEIGHT_MIN)[:, None]
    scale = cp.where(empty, 1.0, scale)
    mean_o = cp.where(empty, mean_a, mean_o)

    def per_face(stat: cp.ndarray, k: int) -> cp.ndarray:
        return stat[:, k].astype(cp.float32).reshape(-1, 1, 1)

    out = cp.empty(anon.shape, cp.float32)
    _CHROMA_TRANSFER(
        luma_a,
        cb_a,
        cr_a,
        per_face(mean_a, 0),
        per_face(mean_a, 1),
        per_face(scale, 0),
        per_face(scale, 1),
        per_face(mean_o, 0),
        per_face(mean_o, 1),
        *_channels(out),
    )
    return _within_mask(anon, out, mask)


def color_transfer(anon, orig, mask, cfg: PhotometricConfig):
    """Match the chroma (Cb, Cr) of the generated face to the original's over ``mask``; luma untouched.

    As :func:`streamanon.photometric.reference.color_transfer`, on the GPU.

    Args:
        anon: faces to recolour ``(B, S, S, 3)`` uint8 (or floating in [0, 1]); NumPy or CuPy.
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1]; also the statistics' weights.
        cfg: photometric settings (kept for a uniform signature).

    Returns:
        ``(B, S, S, 3)`` uint8: CuPy for a CuPy ``anon``, else NumPy.
    """
    _check_config(cfg)
    on_device = _on_device(anon)
    anon_f, orig_f, mask_f = _check_batch(anon, orig, mask)
    if anon_f.shape[0] == 0:
        return _empty_result(anon_f.shape, on_device)
    return _like(_to_uint8(_color_transfer(anon_f, orig_f, mask_f)), on_device)


# --------------------------------------------------------------------------------------------
# all steps


def postprocess(anon, orig, mask, cfg: PhotometricConfig):
    """Run the enabled steps in order relight -> Laplacian refinement -> colour transfer.

    As :func:`streamanon.photometric.reference.postprocess`: the steps chain in float32 on the GPU
    and the result is rounded to uint8 once; with every step off the input comes back unchanged,
    and pixels whose mask is 0 always do.

    Args:
        anon: generated faces ``(B, S, S, 3)`` uint8; NumPy or CuPy.
        orig: original faces, same shape.
        mask: face regions ``(B, S, S)`` float32 in [0, 1].
        cfg: photometric settings.

    Returns:
        ``(B, S, S, 3)`` uint8 (a new array): CuPy for a CuPy ``anon``, else NumPy.
    """
    _check_config(cfg)
    on_device = _on_device(anon)
    if not on_device:
        anon = np.asarray(anon)
    anon_f, orig_f, mask_f = _check_batch(anon, orig, mask)
    if anon_f.shape[0] == 0:
        return _empty_result(anon_f.shape, on_device)
    if not (cfg.relight or cfg.laplacian or cfg.color_transfer):
        return anon.copy() if anon.dtype == np.uint8 else _like(_to_uint8(anon_f), on_device)
    out = anon_f
    if cfg.relight:
        out = _relight(out, orig_f, mask_f, cfg)
    if cfg.laplacian:
        out = _laplacian_refine(out, orig_f, mask_f, cfg)
    if cfg.color_transfer:
        out = _color_transfer(out, orig_f, mask_f)
    return _like(_to_uint8(out), on_device)
