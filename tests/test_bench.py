"""streamanon bench: real stage timings, planted faces really detected, honest labels, one-line errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import streamanon.models
from conftest import shared_path
from streamanon import cli as cli_module
from streamanon.bench import (
    PAPER_TABLE_II,
    SCHEMA,
    UNAVAILABLE_NO_WEIGHTS,
    UNTRAINED_LABEL,
    BenchSettings,
    render,
    run_benchmark,
    write_json,
)
from streamanon.bench.compare import compare_with_deface, find_deface
from streamanon.bench.scenes import SceneSpec, build_scene
from streamanon.bench.stats import median_of_summaries, percentiles, summarize_stage
from streamanon.cli import main
from streamanon.config import EncodeConfig
from streamanon.timing import NULL_TIMER, StageTimer

BLUR_STAGES = {"decode", "detect", "track", "copy", "hide", "encode"}
GENERATE_STAGES = {"decode", "detect", "track", "landmarks", "align", "guard", "generate", "photometric", "composite",
                   "copy", "encode"}


@pytest.fixture(scope="module")
def no_weights():
    """No generator weights anywhere the registry looks (whether or not some exist on this machine)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("STREAMANON_MODELS", raising=False)
        mp.setattr(streamanon.models, "PACKAGE_WEIGHTS", streamanon.models.PACKAGE_WEIGHTS / "__absent__")
        yield


@pytest.fixture(scope="module")
def faces_dir():
    return shared_path("faces/utkface")


@pytest.fixture(scope="module")
def tiny_report(faces_dir, no_weights):
    settings = BenchSettings(
        clip=None, resolutions=((640, 360),), face_counts=(1, 2), modes=("blur", "generate"), frames=3, warmup=1,
        repeats=2, faces_dir=faces_dir, deface=False,
    )
    return run_benchmark(settings)


def _triples(summary: dict):
    for unit in ("per_frame", "per_face"):
        if summary[unit] is not None:
            yield summary[unit]


def _check_percentiles(summary: dict) -> None:
    for p in _triples(summary):
        values = [p["p50"], p["p95"], p["p99"]]
        assert all(math.isfinite(v) and v > 0 for v in values), p
        assert values[0] <= values[1] <= values[2], p


def test_tiny_run_times_every_stage_of_the_real_pipeline(tiny_report):
    ok = [s for s in tiny_report["scenarios"] if s["status"] == "ok"]
    assert [(s["mode"], s["faces"]["planted"]) for s in ok] == [("blur", 1), ("blur", 2)]
    for scenario in ok:
        median = scenario["median"]
        assert set(median["stages"]) == BLUR_STAGES
        for summary in [*median["stages"].values(), median["process"], median["total"]]:
            _check_percentiles(summary)
        assert median["fps"] > 0
        assert len(scenario["repeats"]) == 2
        for repeat in scenario["repeats"]:
            assert repeat["summary"]["frames"] == 3  # warm-up frame excluded
            for summary in repeat["summary"]["stages"].values():
                _check_percentiles(summary)
            frame = repeat["per_frame"]
            assert frame["index"] == [1, 2, 3]
            for i, total in enumerate(frame["total_s"]):
                # Stages are disjoint intervals inside the frame's wall time.
                assert sum(v[i] for v in frame["stages_s"].values() if v[i] is not None) <= total


def test_planted_faces_are_really_detected(tiny_report):
    for scenario in (s for s in tiny_report["scenarios"] if s["status"] == "ok"):
        planted = scenario["faces"]["planted"]
        assert scenario["faces"]["ok"] is True
        for repeat in scenario["repeats"]:
            assert repeat["per_frame"]["detected"] == [planted] * 3
            assert repeat["per_frame"]["found"] == [planted] * 3
        stages = scenario["median"]["stages"]
        # Per face is per frame divided by the face count.
        assert stages["detect"]["per_face"]["p50"] == pytest.approx(stages["detect"]["per_frame"]["p50"] / planted)


def test_generate_without_weights_is_unavailable_not_a_number(tiny_report):
    assert tiny_report["generator"]["status"] == "unavailable"
    rows = [s for s in tiny_report["scenarios"] if s["mode"] == "generate"]
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "unavailable"
        assert row["label"] == UNAVAILABLE_NO_WEIGHTS
        assert row["median"] is None and row["repeats"] == []
    text = render(tiny_report)
    lines = [line for line in text.splitlines() if "generate" in line and "640x360" in line]
    assert lines and all(UNAVAILABLE_NO_WEIGHTS in line for line in lines)
    assert not any(re.search(r"\d\.\d{3}", line) for line in lines)


def test_json_report_schema(tiny_report, tmp_path):
    path = write_json(tiny_report, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert {"benchmarked", "description", "cpu", "cores", "usable_cores", "gpu"} <= set(data["device"])
    assert data["device"]["benchmarked"] == "cpu" and data["device"]["cores"] >= 1
    assert data["versions"]["streamanon"] and data["versions"]["python"]
    assert data["settings"]["frames"] == 3 and data["settings"]["repeats"] == 2
    assert data["pipeline_config"]["device"] == "cpu"
    assert set(data["load_average"]) == {"start", "end"}
    for scenario in data["scenarios"]:
        assert {"name", "source", "mode", "width", "height", "status", "label", "faces", "repeats", "median"} <= set(
            scenario
        )
        for repeat in scenario["repeats"]:
            assert {"frames", "wall_s", "encode_flush_s", "fps", "stages", "process", "total"} <= set(repeat["summary"])
            for column in repeat["per_frame"]["stages_s"].values():
                assert len(column) == repeat["summary"]["frames"]
    rows = {r["method"]: r["seconds_per_face"] for r in data["paper_table_ii"]["rows"]}
    assert rows == dict(PAPER_TABLE_II)
    assert "GPU" in data["paper_table_ii"]["device"]


def test_printed_table_has_paper_rows_beside_ours(tiny_report):
    text = render(tiny_report)
    for method, seconds in PAPER_TABLE_II:
        assert re.search(rf"{re.escape(method)}\s+{seconds:.2f}\s+GPU \(paper\)", text), method
    assert re.search(r"streamanon blur, synthetic 640x360, 2 faces\s+\d+\.\d{4}\s+cpu \(this run", text)
    assert "p50" in text and "p95" in text and "p99" in text


def test_untrained_generator_is_timed_and_labelled(faces_dir, no_weights):
    settings = BenchSettings(
        clip=None, resolutions=((640, 360),), face_counts=(1,), modes=("generate",), frames=2, warmup=1, repeats=1,
        faces_dir=faces_dir, deface=False, untrained_generator=True,
    )
    report = run_benchmark(settings)
    assert report["generator"]["status"] == "untrained"
    assert report["pipelines"] == {"generate": "generate (eager)"}  # dlib landmarks, host paste on a CPU
    (scenario,) = report["scenarios"]
    assert scenario["status"] == "ok" and scenario["label"] == UNTRAINED_LABEL
    assert set(scenario["median"]["stages"]) == GENERATE_STAGES  # no fallback to blur
    assert scenario["faces"]["fallback_faces"] == 0
    _check_percentiles(scenario["median"]["stages"]["generate"])
    text = render(report)
    scenario_lines = [line for line in text.splitlines() if "streamanon generate" in line or "| generate" in line]
    assert scenario_lines and all(UNTRAINED_LABEL in line for line in scenario_lines)


def test_stage_timer_accumulates_and_resets():
    timer = StageTimer()
    for _ in range(3):
        with timer.stage("align"):
            sum(range(1000))
    with timer.stage("generate"):
        pass
    first = timer.take()
    assert list(first) == ["align", "generate"] and all(v > 0 for v in first.values())
    assert timer.take() == {}
    with NULL_TIMER.stage("detect"):
        pass


def test_percentile_helpers():
    p = percentiles(list(np.linspace(0.001, 0.1, 101)))
    assert p["p50"] == pytest.approx(0.0505) and p["p50"] <= p["p95"] <= p["p99"]
    assert percentiles([]) is None
    summary = summarize_stage([0.04, 0.02, 0.0], [4, 2, 0])
    assert summary["frames"] == 3 and summary["per_face"]["p99"] == pytest.approx(0.01)
    merged = median_of_summaries([summary, summarize_stage([0.5], [0])])
    assert merged["per_face"] == summary["per_face"]  # a repeat without faces has no per-face values


def _one_line_error(capsys, args: list[str], code: int, needle: str) -> None:
    assert main(args) == code, args
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("streamanon: error:") and needle in err, err


def test_bad_options_one_line_nonzero(capsys, tmp_path):
    _one_line_error(capsys, ["bench", "--resolutions", "640by360"], 2, "640by360")
    _one_line_error(capsys, ["bench", "--face-counts", "1,x"], 2, "1,x")
    _one_line_error(capsys, ["bench", "--frames", "0"], 2, "--frames")
    _one_line_error(capsys, ["bench", "--mode", "banana"], 2, "banana")
    _one_line_error(capsys, ["bench", "--no-clip", "--clip", str(tmp_path / "a.mp4")], 2, "--no-clip")
    _one_line_error(capsys, ["bench", "--clip", str(tmp_path / "missing.mp4"), "--no-synthetic"], 1, "missing.mp4")
    _one_line_error(capsys, ["bench", "--no-clip", "--no-synthetic"], 1, "nothing to benchmark")
    _one_line_error(capsys, ["bench", "--no-clip", "--resolutions", "641x360"], 1, "641x360")
    import torch

    if not torch.cuda.is_available():
        _one_line_error(capsys, ["bench", "--no-clip", "--device", "cuda"], 1, "CUDA is not available")
    assert not list(tmp_path.iterdir())


def test_cli_run_writes_json_and_prints_table(capsys, tmp_path, faces_dir):
    out = tmp_path / "stages.json"
    code = main(["bench", "--no-clip", "--faces-dir", str(faces_dir), "--resolutions", "640x360", "--face-counts",
                 "1", "--frames", "2", "--warmup", "0", "--repeats", "1", "--mode", "pixelate", "--no-deface",
                 "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(out.read_text())
    (scenario,) = data["scenarios"]
    assert scenario["mode"] == "pixelate" and scenario["faces"]["ok"]
    assert "synthetic 640x360, 1 face | pixelate" in captured.out and str(out) in captured.out


def test_bench_registered_and_every_command_in_the_cli_docstring():
    cli_module._register_optional_commands()
    assert "bench" in cli_module.cli.commands
    names = [n for n in cli_module.cli.commands if n != "train"]
    names += [f"train {n}" for n in cli_module.cli.commands["train"].commands]
    doc = cli_module.__doc__
    for name in names:
        assert f"``{name}``" in doc, name


def test_missing_deface_is_unavailable(tmp_path, faces_dir):
    scene = build_scene(SceneSpec(320, 180, 1), faces_dir, 2, tmp_path)
    result = compare_with_deface(scene.clip, 2, 1, tmp_path, "cpu", EncodeConfig(), deface_exe=str(tmp_path / "nope"))
    assert result["deface"]["status"].startswith("unavailable")
    assert result["deface"]["median_s"] is None and result["deface_over_streamanon"] is None
    assert result["streamanon"]["status"] == "ok" and result["streamanon"]["median_s"] > 0


@pytest.mark.slow
def test_deface_comparison_on_the_same_clip(tmp_path, faces_dir):
    if find_deface() is None:
        pytest.skip("deface executable not installed")
    scene = build_scene(SceneSpec(320, 180, 1), faces_dir, 4, tmp_path)
    result = compare_with_deface(scene.clip, 4, 1, tmp_path, "cpu", EncodeConfig())
    assert result["deface"]["status"] == "ok", result["deface"]
    assert result["deface"]["version"] and result["deface"]["args"][:3] == ["INPUT", "-o", "OUTPUT"]
    assert result["deface_over_streamanon"] > 0


def test_results_carry_no_machine_specific_paths(tmp_path):
    from streamanon.bench.report import portable_paths

    doc = {"clip": "/data/videos/a.mp4", "cmd": ["/opt/venv/bin/deface", "-o", "relative.mp4"], "n": 3}
    out = portable_paths(doc, base=Path("/data/project"))
    assert out == {"clip": "../videos/a.mp4", "cmd": ["../../opt/venv/bin/deface", "-o", "relative.mp4"], "n": 3}


def test_face_path_benchmark_times_both_paste_paths_and_writes_json(tmp_path):
    """benchmarks/bench_face_path.py, tiny: the template face (no shards), one face, both paths, on a
    grainy frame (the paste measures and adds noise)."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_face_path.py"
    out = tmp_path / "face_path.json"
    args = ["--resolutions", "320x180", "--face-counts", "1,2", "--frames", "2", "--warmup", "1", "--repeats", "1",
            "--data", str(tmp_path / "no-shards"), "--out", str(out), "--sensor-noise", "4"]  # fmt: skip
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["faces"] == "template" and report["generator"]["backend"] == "eager"
    assert report["settings"]["sensor_noise"] == 4.0 and report["settings"]["match_noise"]
    assert [(r["composite"], r["faces"]) for r in report["rows"]] == [("host", 1), ("host", 2), ("cpu", 1), ("cpu", 2)]
    for row in report["rows"]:
        total = row["stages"]["total"]
        assert all(row["stages"][stage]["per_frame"]["p50"] > 0 for stage in ("generate", "photometric", "composite"))
        assert total["per_face"]["p50"] == pytest.approx(total["per_frame"]["p50"] / row["faces"])
    assert "<= 5 ms/face" in run.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sensor_noise", [0.0, 6.0])
def test_privacy_audit_finds_no_leak_frame_on_a_speaker_clip(tmp_path, sensor_noise):
    """benchmarks/privacy_audit.py on one GRID clip: generate mode end to end, then eval; the JSON
    summary it writes, and no frame in which dlib still matches the generated face to the speaker.
    With simulated sensor noise (and a near-lossless output, so the encoder keeps it), the face
    carries the camera's noise."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "grid_speaker_00.mpg").symlink_to(shared_path("videos/grid_speaker_00.mpg"))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "privacy_audit.py"
    args = ["--videos", str(videos), "--out", str(tmp_path / "results")]
    if sensor_noise:
        args += ["--sensor-noise", str(sensor_noise), "--", "--crf", "4"]
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    (report,) = (tmp_path / "results").glob("privacy-audit-*.json")
    summary = json.loads(report.read_text())
    (clip,) = summary["clips"]
    assert clip["frames"] == clip["faces"] == 75
    switches = len(clip["identity_switch_frames"])
    assert summary["totals"] == {"clips": 1, "faces": 75, "leak_frames": 0, "identity_switches": switches,
                                 "distance_mean_range": [clip["distance_mean"]] * 2}  # fmt: skip
    assert clip["leak_frames"] == [] and clip["distance_mean"] > 0.6
    assert "1 clips, 75 faces: 0 leak frames" in run.stdout
    assert summary["sensor_noise"] == sensor_noise
    if sensor_noise:
        assert clip["clip"] == "grid_speaker_00_noisy.mp4"
        assert 0.8 < clip["noise_ratio_mean"] < 1.25
    else:
        assert clip["clip"] == "grid_speaker_00.mpg"
        assert clip["noise_ratio_mean"] is None  # a clean, compressed clip: no noise to match
