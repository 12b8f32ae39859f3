"""End-to-end comparison with the ``deface`` tool: both as command lines on the same clip.

Both runs are whole processes (start-up, model loading, decode, anonymize, encode), timed by
wall clock and alternated repeat by repeat so that a change in machine load hits both alike;
the ratio of the medians is therefore fair even on a busy machine. deface's encoder is set to
ours (libx264, same CRF and preset, no resizing) so that the comparison is about anonymization,
not about encoder presets (deface's own default is CRF 25, preset medium).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ..config import EncodeConfig

_TIMEOUT_S = 3600


def find_deface(explicit: str | None = None) -> str | None:
    """The deface executable: ``explicit``, the one next to this Python (same venv), or on PATH."""
    if explicit is not None:
        path = Path(explicit)
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    beside = Path(sys.executable).parent / "deface"
    if beside.is_file():
        return str(beside)
    return shutil.which("deface")


def deface_version(exe: str) -> str | None:
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[-1] if text else None


def deface_command(exe: str, clip: Path, out: Path, encode: EncodeConfig) -> list[str]:
    ffmpeg = {
        "codec": encode.codec,
        "quality": None,  # no imageio quality -> crf mapping; our crf below instead
        "macro_block_size": 1,  # keep the frame size (imageio would pad 1080 to 1088)
        "ffmpeg_params": ["-crf", str(encode.crf), "-preset", encode.preset],
    }
    return [exe, str(clip), "-o", str(out), "--replacewith", "blur", "--ffmpeg-config", json.dumps(ffmpeg)]


def streamanon_command(clip: Path, out: Path, device: str, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "streamanon", "file", str(clip), str(out), "--mode", "blur", "--device", device,
            "--quiet", "--overwrite", *(extra or [])]


def _time(command: list[str], out: Path) -> tuple[float | None, str]:
    """Wall-clock seconds of one run (None when it failed) and the last line of its errors."""
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "STREAMANON_DEBUG"}
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    seconds = time.perf_counter() - started
    ok = done.returncode == 0 and out.is_file() and out.stat().st_size > 0
    out.unlink(missing_ok=True)
    last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return (seconds if ok else None), ("" if ok else last)


def _summary(runs: list[float | None], frames: int, errors: list[str]) -> dict:
    good = [r for r in runs if r is not None]
    if len(good) < len(runs):
        return {"status": f"failed: {next(e for e in errors if e)}", "runs_s": runs, "median_s": None, "fps": None}
    median = statistics.median(good)
    return {"status": "ok", "runs_s": runs, "median_s": median, "fps": frames / median}


def compare_with_deface(
    clip: Path,
    frames: int,
    repeats: int,
    workdir: Path,
    device: str,
    encode: EncodeConfig,
    deface_exe: str | None = None,
    ours_args: list[str] | None = None,
) -> dict:
    """Time ``streamanon file`` (plus ``ours_args``) and ``deface`` (blur) on ``clip`` of ``frames``
    frames, alternately."""
    ours_out, theirs_out = workdir / "e2e_streamanon.mp4", workdir / "e2e_deface.mp4"
    ours_cmd = streamanon_command(clip, ours_out, device, ours_args)
    exe = find_deface(deface_exe)
    theirs_cmd = deface_command(exe, clip, theirs_out, encode) if exe else None
    ours_runs, theirs_runs, ours_err, theirs_err = [], [], [], []
    for _ in range(repeats):
        seconds, error = _time(ours_cmd, ours_out)
        ours_runs.append(seconds)
        ours_err.append(error)
        if theirs_cmd is not None:
            seconds, error = _time(theirs_cmd, theirs_out)
            theirs_runs.append(seconds)
            theirs_err.append(error)
    ours = {"command": ours_cmd, **_summary(ours_runs, frames, ours_err)}
    if theirs_cmd is None:
        where = deface_exe or "next to this Python or on PATH"
        theirs = {"status": f"unavailable: deface executable not found ({where})", "version": None,
                  "command": None, "args": None, "runs_s": [], "median_s": None, "fps": None}
    else:
        # The arguments with the temporary paths replaced, for the report.
        args = ["INPUT", "-o", "OUTPUT", *theirs_cmd[4:]]
        theirs = {"version": deface_version(exe), "command": theirs_cmd, "args": args,
                  **_summary(theirs_runs, frames, theirs_err)}
    ratio = None
    if ours["median_s"] and theirs.get("median_s"):
        ratio = theirs["median_s"] / ours["median_s"]
    return {"clip": str(clip), "frames": frames, "repeats": repeats, "mode": "blur", "streamanon": ours,
            "deface": theirs, "deface_over_streamanon": ratio}
