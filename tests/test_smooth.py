"""One-Euro filter: jitter removal, lag, speed adaptation, scale normalisation, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from streamanon.config import SmoothConfig
from streamanon.errors import UserError
from streamanon.faces.smooth import OneEuroFilter, PassThroughFilter, make_filter

FPS = 30.0


def _run(filt, signal: np.ndarray, fps: float = FPS, scale: float | None = None) -> np.ndarray:
    """Feed ``signal[i]`` at time ``i / fps``; stack the outputs."""
    return np.stack([filt(x, i / fps, scale=scale) for i, x in enumerate(signal)])


@pytest.mark.parametrize("shape", [(4,), (68, 2)])
def test_noisy_constant_variance_reduced_more_than_5x(shape):
    rng = np.random.default_rng(0)
    truth = rng.uniform(50, 400, size=shape)
    signal = truth + rng.normal(0.0, 2.0, size=(600, *shape))
    out = _run(make_filter(SmoothConfig(min_cutoff=1.0, beta=0.01)), signal, scale=100.0)
    settled = slice(60, None)  # skip the first two seconds while the filter settles
    raw_var = np.var(signal[settled] - truth)
    out_var = np.var(out[settled] - truth)
    assert out.shape == signal.shape
    assert raw_var / out_var > 5.0, (raw_var, out_var)
    # The mean is kept: smoothing must not bias a still face.
    assert abs(float(np.mean(out[settled] - truth))) < 0.3


def test_ramp_lag_is_small_and_beta_reduces_it():
    speed = 120.0  # px/s, a face walking past
    times = np.arange(90) / FPS
    signal = (speed * times)[:, None] * np.ones((1, 2))

    lags = {}
    for beta in (0.0, 0.05):
        out = _run(OneEuroFilter(min_cutoff=1.0, beta=beta, d_cutoff=1.0), signal, scale=100.0)
        lag = signal[-30:] - out[-30:]  # last second, after settling
        assert np.all(lag >= 0), "a low-pass on a rising ramp lags, it never leads"
        # Settled: the lag no longer grows (a filter that stopped following would).
        assert abs(lag[-1, 0] - lag[0, 0]) < 0.05 * speed / FPS + 1e-6
        lags[beta] = float(lag[-1, 0])
    # beta = 0 is a plain exponential filter: lag ~ speed * tau with tau = 1 / (2 pi f_c).
    assert lags[0.0] < speed / (2 * np.pi * 1.0) * 1.05
    assert lags[0.05] < 0.5 * lags[0.0], lags
    assert lags[0.05] < 10.0, "lag of the adaptive filter should be a few pixels"


def test_scale_normalisation_makes_small_and_large_faces_behave_alike():
    rng = np.random.default_rng(1)
    # The same motion, measured in face sizes, for a 40 px face and a 320 px face.
    relative = np.cumsum(rng.normal(0.0, 0.03, size=(120, 4)), axis=0) + np.linspace(0, 2, 120)[:, None]
    small, large = 40.0, 320.0
    kwargs = dict(min_cutoff=1.0, beta=0.05, d_cutoff=1.0)
    out_small = _run(OneEuroFilter(**kwargs), relative * small, scale=small) / small
    out_large = _run(OneEuroFilter(**kwargs), relative * large, scale=large) / large
    np.testing.assert_allclose(out_small, out_large, rtol=1e-6, atol=1e-9)
    # Without normalisation the large face's pixel speed opens the cutoff much more.
    raw_small = _run(OneEuroFilter(**kwargs), relative * small) / small
    raw_large = _run(OneEuroFilter(**kwargs), relative * large) / large
    assert np.max(np.abs(raw_small - raw_large)) > 0.05


def test_first_sample_passes_through_and_reset_forgets():
    filt = OneEuroFilter(1.0, 0.0, 1.0)
    first = np.array([10.0, 20.0, 30.0, 40.0], np.float32)
    out = filt(first, 0.0)
    np.testing.assert_array_equal(out, first)
    assert out.dtype == np.float32
    moved = filt(first + 100, 1 / FPS)
    assert np.all(moved < first + 100) and np.all(moved > first)  # smoothed, not jumped
    filt.reset()
    np.testing.assert_array_equal(filt(first + 100, 2 / FPS), first + 100)


def test_disabled_filter_is_identity():
    filt = make_filter(SmoothConfig(enabled=False))
    assert isinstance(filt, PassThroughFilter)
    rng = np.random.default_rng(2)
    for i in range(20):
        x = rng.normal(0, 50, size=(68, 2)).astype(np.float32)
        out = filt(x, i / FPS, scale=80.0)
        np.testing.assert_array_equal(out, x)
        assert out.dtype == np.float32
        out[0, 0] += 1  # a copy: the caller's array is untouched
        assert out[0, 0] != x[0, 0]
    assert make_filter(SmoothConfig()).__class__ is OneEuroFilter


def test_equal_and_decreasing_timestamps_stay_finite():
    filt = OneEuroFilter(1.5, 0.02, 1.0)
    rng = np.random.default_rng(3)
    outputs = [filt(rng.normal(100, 5, size=4), 1.0) for _ in range(10)]  # all at t = 1.0
    outputs += [filt(rng.normal(100, 5, size=4), 1.0 - k * 0.04) for k in range(5)]  # time runs back
    outputs += [filt(rng.normal(100, 5, size=4), 2.0 + k / FPS) for k in range(5)]  # and forward again
    stacked = np.stack(outputs)
    assert np.all(np.isfinite(stacked))
    # A sample at an unchanged time barely moves the output (tiny time step).
    before = filt.value
    after = filt(before + 50.0, 2.0 + 4 / FPS)
    assert np.max(np.abs(after - before)) < 5.0


def test_bad_parameters_and_inputs():
    with pytest.raises(UserError):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(UserError):
        OneEuroFilter(beta=-1.0)
    with pytest.raises(UserError):
        make_filter(SmoothConfig(d_cutoff=float("nan")))
    filt = OneEuroFilter()
    filt(np.zeros(4), 0.0)
    with pytest.raises(ValueError):
        filt(np.zeros((68, 2)), 0.1)
    with pytest.raises(ValueError):
        filt(np.array([0.0, np.nan, 0.0, 0.0]), 0.2)
    assert np.all(np.isfinite(filt.value)), "a rejected sample must not poison the state"
