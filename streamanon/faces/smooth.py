"""One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) for boxes and landmarks.

The filter is a first-order low-pass whose cutoff rises with the signal's speed:
at rest a low cutoff removes jitter, in motion a higher cutoff removes lag::

    cutoff = min_cutoff + beta * |dx/dt|

It works element-wise on an array of any shape (a box ``(4,)``, landmarks ``(68, 2)``)
and is driven by timestamps in seconds, so variable frame rates need no special care.

**Scale normalisation.** ``beta`` multiplies a speed, and a speed in pixels means very
different things for a 40-pixel face and a 400-pixel one. Passing ``scale`` (the face
size in pixels, e.g. the square root of the box area) measures the speed in pixels of a
face :data:`REFERENCE_SIZE` pixels across instead::

    speed = |dx/dt| * REFERENCE_SIZE / scale

so one ``beta`` gives the same smoothing for small and large faces, and for a face of
``REFERENCE_SIZE`` pixels it means exactly what the paper's ``beta`` means. Without
``scale`` the speed is in the input's own units.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from ..config import SmoothConfig
from ..errors import UserError

#: Face size (pixels) in whose units a scaled speed is measured; see the module docstring.
REFERENCE_SIZE: float = 100.0

#: Time step used when a timestamp does not advance (equal or decreasing): such a sample
#: barely moves the output instead of dividing by zero.
MIN_DT: float = 1e-3


class Smoother(Protocol):
    """What the tracker needs from a filter: the One-Euro filter or the passthrough."""

    def __call__(self, x: np.ndarray, t: float, scale: float | None = None) -> np.ndarray: ...

    def reset(self) -> None: ...


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of an exponential low-pass with ``cutoff`` Hz at time step ``dt``."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def _output_dtype(x: np.ndarray) -> np.dtype:
    # float32 in, float32 out (boxes); integers become float64.
    return np.result_type(x.dtype, np.float32)


class OneEuroFilter:
    """Speed-adaptive low-pass filter, element-wise over an array of any fixed shape.

    Args:
        min_cutoff: cutoff frequency (Hz) at rest; lower is smoother but lags more.
        beta: how fast the cutoff rises with speed; higher lags less in motion.
        d_cutoff: cutoff frequency (Hz) of the low-pass on the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if not (math.isfinite(min_cutoff) and min_cutoff > 0):
            raise UserError(f"smooth.min_cutoff must be a positive number of Hz, got {min_cutoff}")
        if not (math.isfinite(beta) and beta >= 0):
            raise UserError(f"smooth.beta must be zero or positive, got {beta}")
        if not (math.isfinite(d_cutoff) and d_cutoff > 0):
            raise UserError(f"smooth.d_cutoff must be a positive number of Hz, got {d_cutoff}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the state; the next sample is passed through as a first sample."""
        self._x: np.ndarray | None = None  # filtered value, float64
        self._dx: np.ndarray | None = None  # filtered speed, float64, units per second
        self._t: float | None = None

    @property
    def value(self) -> np.ndarray | None:
        """The last filtered value, or None before the first sample."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x: np.ndarray, t: float, scale: float | None = None) -> np.ndarray:
        """Filter one sample ``x`` taken at time ``t`` (seconds); return the smoothed value.

        ``scale`` is the face size in pixels for speed normalisation (module docstring).
        Equal or decreasing timestamps are treated as a step of :data:`MIN_DT` seconds.
        """
        x = np.asarray(x)
        out_dtype = _output_dtype(x)
        value = x.astype(np.float64)
        if not np.all(np.isfinite(value)):
            raise ValueError("OneEuroFilter got a non-finite sample")
        t = float(t)
        if self._x is None or self._t is None:
            self._x, self._dx, self._t = value, np.zeros_like(value), t
            return value.astype(out_dtype)
        if value.shape != self._x.shape:
            raise ValueError(f"OneEuroFilter got shape {value.shape}, expected {self._x.shape}")

        dt = t - self._t
        if not (dt > MIN_DT):  # also catches NaN
            dt = MIN_DT
        # The filter keeps following the newest time even after a step back (a seek or a
        # restarted stream), so later samples get normal time steps again.
        self._t = t

        speed = (value - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (speed - self._dx)
        magnitude = np.abs(self._dx)
        if scale is not None and math.isfinite(scale) and scale > 0:
            magnitude = magnitude * (REFERENCE_SIZE / float(scale))
        cutoff = self.min_cutoff + self.beta * magnitude
        self._x = self._x + _alpha(cutoff, dt) * (value - self._x)
        return self._x.astype(out_dtype)


class PassThroughFilter:
    """The disabled filter: returns each sample unchanged (as float)."""

    def reset(self) -> None:
        """Nothing to forget."""

    def __call__(self, x: np.ndarray, t: float, scale: float | None = None) -> np.ndarray:
        """Return ``x`` as a new float array."""
        x = np.asarray(x)
        return x.astype(_output_dtype(x), copy=True)


def make_filter(cfg: SmoothConfig) -> Smoother:
    """A new filter for ``cfg``: a :class:`OneEuroFilter`, or a passthrough when disabled."""
    if not cfg.enabled:
        return PassThroughFilter()
    return OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff)
