"""Metric formulas on small planted inputs (no models, no shared data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamanon.errors import UserError
from streamanon.metrics import color, detail, identity, landmarks, lighting, report, stats, temporal
from streamanon.metrics.fid import (
    InceptionFID,
    _build_inception,
    fid_between,
    find_inception_weights,
    frechet_distance,
    frechet_distance_features,
)


def _face_landmarks(rng: np.random.Generator) -> np.ndarray:
    """A plausible 68-point set: random points with eye corners 40 px apart."""
    pts = rng.uniform(30, 90, size=(68, 2))
    pts[36] = [40, 50]
    pts[45] = [80, 50]
    return pts


# -- fine detail ----------------------------------------------------------------------------
def test_detail_ratio_is_one_for_the_same_face_low_when_smoothed_high_with_noise():
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (64, 64, 3)), (0, 0), 1.0)  # structure at a few px
    mask = np.zeros((64, 64), np.float32)
    mask[8:56, 8:56] = 1.0
    assert detail.detail_ratio(texture, texture, mask) == pytest.approx(1.0)
    assert detail.detail_ratio(texture, cv2.GaussianBlur(texture, (0, 0), 3.0), mask) < 0.1
    assert detail.detail_ratio(texture, texture + rng.normal(0, 30, texture.shape), mask) > 1.2
    # Only the inside counts: what lies beyond the (eroded) mask may change freely.
    outside = texture.copy()
    outside[:8] = 0
    assert detail.detail_ratio(texture, outside, mask) == pytest.approx(1.0, abs=0.01)  # the filters' reach
    assert np.isnan(detail.detail_ratio(texture, texture, np.zeros((64, 64), np.float32)))  # no face region
    assert np.isnan(detail.detail_ratio(np.full((64, 64, 3), 9.0), texture, mask))  # a flat original


def test_noise_ratio_reads_the_frames_own_noise_inside_the_face():
    import cv2

    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(60, 200, 200, dtype=np.float32)[None, :, None], (200, 1, 3))
    noisy = np.clip(np.rint(clean + rng.normal(0, 5, clean.shape)), 0, 255).astype(np.uint8)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points = np.stack([100 + 60 * np.cos(angles), 100 + 70 * np.sin(angles)], axis=1)  # a face-sized ring
    assert detail.noise_ratio(noisy, noisy, points) == pytest.approx(1.0)
    assert detail.noise_ratio(noisy, cv2.GaussianBlur(noisy, (0, 0), 2.0), points) < 0.2
    smooth_face = noisy.copy()
    smooth_face[60:140, 60:140] = np.rint(clean[60:140, 60:140])  # a clean face inside the hull
    assert detail.noise_ratio(noisy, smooth_face, points) < 0.5
    assert np.isnan(detail.noise_ratio(np.rint(clean).astype(np.uint8), noisy, points))  # nothing to match


# -- lighting -------------------------------------------------------------------------------


def test_si_mse_ignores_global_scale_but_not_shape():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(16, 16, 3))
    assert lighting.si_mse(x, 0.5 * x) == pytest.approx(0.0, abs=1e-12)
    assert lighting.optimal_scale(x, 0.5 * x) == pytest.approx(2.0)
    # A gradient across the face is a change of lighting: it must count.
    ramp = np.linspace(0.5, 1.5, 16)[None, :, None]
    assert lighting.si_mse(x, x * ramp) > 1e-3


def test_si_mse_matches_closed_form_and_respects_mask():
    x = np.array([1.0, 2.0, 3.0, 100.0])
    y = np.array([1.0, 1.0, 1.0, -50.0])
    mask = np.array([1, 1, 1, 0])
    # Over the first three values alpha = 6 / 3 = 2, residuals (-1, 0, 1).
    assert lighting.si_mse(x, y, mask) == pytest.approx(2.0 / 3.0)
    assert lighting.si_l2(x, y, mask) == pytest.approx(np.sqrt(2.0 / 3.0))
    assert np.isnan(lighting.si_mse(x, y, np.zeros(4)))


def test_shading_maps_of_identical_crops_give_zero_si_l2():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    _, shading = lighting.shading_maps(np.stack([crop, crop]))
    assert shading.shape == (2, 32, 32)
    assert lighting.si_l2(shading[0], shading[1]) == pytest.approx(0.0, abs=1e-9)


# -- colour ---------------------------------------------------------------------------------


def test_color_differences_zero_for_identical_and_grow_with_shift():
    rng = np.random.default_rng(2)
    albedo = rng.uniform(0.6, 1.4, size=(12, 12, 3))
    same = color.albedo_color_differences(albedo, albedo)
    assert same["delta_E"] == pytest.approx(0.0, abs=1e-9)
    assert same["delta_L"] == pytest.approx(0.0, abs=1e-9)
    warmer = albedo * np.array([1.15, 1.0, 0.85])
    shifted = color.albedo_color_differences(albedo, warmer)
    assert shifted["delta_E"] > 2.0
    assert shifted["delta_C"] > 1.0


def test_lab_differences_known_pair():
    # A pure lightness step of 10: dL = 10, dC = 0, and CIEDE2000 of a neutral step.
    lab_a = np.array([[50.0, 0.0, 0.0]])
    lab_b = np.array([[60.0, 0.0, 0.0]])
    d = color.lab_differences(lab_a, lab_b)
    assert d["delta_L"] == pytest.approx(10.0)
    assert d["delta_C"] == pytest.approx(0.0)
    assert 8.0 < d["delta_E"] < 10.0  # CIEDE2000 compresses lightness near L*=50


# -- landmarks ------------------------------------------------------------------------------


def test_nme_of_translation_is_translation_over_iod():
    pts = _face_landmarks(np.random.default_rng(3))
    iod = landmarks.inter_ocular_distance(pts)
    assert iod == pytest.approx(40.0)
    shifted = pts + [6.0, 0.0]
    assert landmarks.pose_nme(pts, shifted) == pytest.approx(6.0 / 40.0)
    assert landmarks.expression_nme(pts, shifted) == pytest.approx(6.0 / 40.0)
    assert landmarks.pose_nme(pts, pts) == 0.0


def test_expression_nme_ignores_the_jaw():
    pts = _face_landmarks(np.random.default_rng(4))
    moved = pts.copy()
    moved[:17] += 10.0  # only the jaw line moves
    assert landmarks.expression_nme(pts, moved) == 0.0
    assert landmarks.pose_nme(pts, moved) == pytest.approx(17 * 20.0 / 68 / 40.0)


# -- identity / temporal ----------------------------------------------------------------------


def test_identity_helpers():
    a = np.array([1.0, 0.0, 0.0])
    assert identity.cosine_similarity(a, a) == pytest.approx(1.0)
    assert identity.cosine_similarity(a, np.array([0.0, 1.0, 0.0])) == pytest.approx(0.0)
    assert identity.embedding_distance(a, a + [0.0, 0.3, 0.4]) == pytest.approx(0.5)
    assert identity.is_reidentified(0.59) and not identity.is_reidentified(0.6)


def test_identity_switch_threshold():
    assert temporal.is_identity_switch(0.945) and not temporal.is_identity_switch(0.983)  # measured swaps / not
    assert not temporal.is_identity_switch(temporal.IDENTITY_SWITCH_COSINE)


def test_jitter_and_flicker():
    pts = _face_landmarks(np.random.default_rng(5))
    assert temporal.landmark_motion(pts, pts + [4.0, 0.0], 40.0) == pytest.approx(0.1)
    # Anonymized landmarks move twice as much as the original's.
    assert temporal.jitter_ratio([0.2, 0.2], [0.1, 0.1]) == pytest.approx(2.0)
    # A still original does not blow the ratio up (floor of 1e-3 per pair).
    assert temporal.jitter_ratio([0.002], [0.0]) == pytest.approx(2.0)
    prev = np.zeros((4, 4, 3), np.uint8)
    cur = np.full((4, 4, 3), 10, np.uint8)
    mask = np.zeros((4, 4))
    mask[:2] = 1
    assert temporal.temporal_difference(prev, cur, mask) == pytest.approx(10.0)
    e = [np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    assert temporal.identity_stability(e) == pytest.approx([1.0, 0.0])


def test_summarize_skips_missing_and_counts_booleans():
    s = stats.summarize([True, False, True, None, float("nan")])
    assert s == {"mean": pytest.approx(2 / 3), "std": pytest.approx(np.std([1, 0, 1])), "n": 3}
    assert stats.summarize([]) == {"mean": None, "std": None, "n": 0}


# -- Fréchet / FID --------------------------------------------------------------------------


def test_frechet_distance_planted_gaussians():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4000, 3))
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)
    mu = np.array([1.0, 2.0, 0.0])
    # Same covariance, shifted mean: the distance is |mu|^2.
    assert frechet_distance(np.zeros(3), np.eye(3), mu, np.eye(3)) == pytest.approx(5.0)
    # Variance 4 vs 1 in one dimension: (2 - 1)^2 = 1.
    assert frechet_distance(np.zeros(1), np.eye(1) * 4, np.zeros(1), np.eye(1)) == pytest.approx(1.0)
    assert np.isnan(frechet_distance_features(x[:1], x))


@pytest.mark.parametrize("n, m, dim", [(6, 9, 40), (60, 50, 5)])
def test_frechet_low_rank_route_matches_sqrtm(n, m, dim):
    """Few samples in many dimensions (SVD route) and many samples (sqrtm route) agree with
    the covariance formula."""
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, dim)), rng.normal(1.0, 2.0, size=(m, dim))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # Reference: Tr sqrt(S1 S2) = Tr sqrt(R S2 R) with R the PSD root of S1 (via eigh).
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance_features(x, y) == pytest.approx(expected, rel=1e-6)


def test_fid_unavailable_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMANON_MODELS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert find_inception_weights() is None
    result = fid_between([np.zeros((8, 8, 3), np.uint8)] * 2, [np.zeros((8, 8, 3), np.uint8)] * 2, None)
    assert result["status"] == "unavailable" and result["value"] is None
    with pytest.raises(UserError):
        find_inception_weights(tmp_path / "missing.pth")


def test_inception_state_dict_loads_strictly_and_gives_pool3_features(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    net = _build_inception()
    state = net.state_dict()
    # The official file has the torchvision layer names and a 1008-way fc layer.
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in state
    assert state["fc.weight"].shape == (1008, 2048)
    # Old exports lack num_batches_tracked: the loader must accept that.
    stripped = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(stripped, path)
    monkeypatch.setenv("STREAMANON_MODELS", str(tmp_path))
    assert find_inception_weights() == path
    fid = InceptionFID(path)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size=(64, 48, 3), dtype=np.uint8) for _ in range(2)]
    feats = fid.features(images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    # A state dict of another network is refused in one line.
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(UserError, match="not the FID Inception"):
        InceptionFID(bad)


# -- report ---------------------------------------------------------------------------------


def _row(label: str, reid: float) -> dict:
    summary = lambda v: {"mean": v, "std": 0.0, "n": 4}  # noqa: E731
    metrics = {name: summary(0.1) for name in report.METRICS}
    metrics["reid"] = summary(reid)
    return {
        "label": label, "original": "a.mp4", "anonymized": "b.mp4", "kind": "video", "frames": 4, "faces": 4,
        "tracks": 1, "metrics": metrics, "tracks_detail": [],
        "temporal": {"identity_stability": summary(0.9), "jitter_ratio": 1.2, "flicker_ratio": 0.8},
        "realism": {"fid": {"status": "unavailable", "value": None}, "frechet_embedding": 0.5},
        "coverage": {"frames_with_faces": 4, "leak_frames": [2], "leak_rate": 0.25,
                     "leaks": [{"frame": 2, "track_id": 1, "distance": 0.4}]},
        "worst": [], "notes": ["a note"],
    }


def test_report_outputs(tmp_path):
    rows = [_row("anonymized", 0.25), _row("blur", 0.0)]
    doc = report.build_document(rows)
    path = tmp_path / "out.json"
    report.write_json(doc, path)
    loaded = json.loads(path.read_text())
    assert loaded["schema"] == report.SCHEMA and [r["label"] for r in loaded["rows"]] == ["anonymized", "blur"]
    table = report.console_table(rows)
    assert "Re-identification rate" in table and "25.0%" in table and "unavailable" in table
    assert report.radar_scores(rows[0])["privacy"] == pytest.approx(0.75)
    thumb = np.zeros((8, 16, 3), np.uint8)
    html = report.render_html(doc, [[{"frame": 2, "track_id": 1, "reason": "re-id distance", "value": 0.4, "image": thumb}], []])
    assert html.count("<polygon") == 4 + 2  # four grid rings + one polygon per row
    import xml.etree.ElementTree as ET

    svg = ET.fromstring(report.radar_svg(rows))  # well-formed SVG
    assert svg.tag.endswith("svg") and len(svg.findall("{http://www.w3.org/2000/svg}polygon")) == 6
    assert "data:image/jpeg;base64," in html and "frame 2" in html
    with pytest.raises(ValueError):
        report.write_json(report.build_document([{"x": float("nan")}]), tmp_path / "nan.json")
