#!/usr/bin/env python3
"""Carry what the whole pipeline needs onto a lent GPU machine, over several device calls.

The GPU machine has PyTorch, CuPy, onnx and OpenCV but no PyAV, no dlib and none of the model
packages, and it cannot download. Running ``streamanon file`` / ``streamanon bench`` there end to
end needs ~130 MB more: PyAV and dlib-bin wheels, dlib's 68-point predictor (100 MB, 63 MB as xz),
its face ResNet and CenterFace. One call carries 64 MiB with the working tree (~25 MiB), so the
payload is cut into parts that travel in consecutive calls while the machine stays warm; each
call's ``receive`` puts its part into ``/tmp/streamanon-carry`` (outside the checkout, which is
replaced by every call), and ``assemble`` checks every file against its SHA-256 and rebuilds it.

Here (standard library only, so the GPU machine's bare ``python3`` runs it too)::

    python benchmarks/gpu_carry.py stage            # -> .gpu_carry/1 ... N (git-ignored)

There, one call per part, back to back (the machine is given back after ~30 s idle)::

    run(command="python3 benchmarks/gpu_carry.py receive", carry=[".gpu_carry/1"], timeout_s=120)
    ...
    run(command="bash benchmarks/gpu_session.sh 0", carry=[".gpu_carry/N", ".gpu_data"], timeout_s=590)

``gpu_session.sh`` receives the last part itself, assembles, and exports ``STREAMANON_MODELS``
and ``PYTHONPATH`` for what follows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_DIR = ROOT / ".gpu_carry"
RECEIVED = Path("/tmp/streamanon-carry")
MANIFEST = "manifest.json"
MIB = 1 << 20
# The models the pipeline resolves by name (streamanon.models), carried xz-compressed.
MODELS = ("dlib_landmarks68", "dlib_face_embedding", "centerface")
# Wheels for the GPU machine's Python 3.12, at the versions installed here.
WHEELS = ("av", "dlib-bin")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(name: str, dest: Path) -> Path:
    from importlib.metadata import version

    spec = f"{name}=={version(name)}"
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    before = set(dest.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", *platforms, "-d", str(dest), spec],
        check=True,
    )  # fmt: skip
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob(f"{name.replace('-', '_')}-*.whl"))
    if not new:
        raise SystemExit(f"pip downloaded no wheel for {spec}")
    return new[0]


def stage(part_mib: float, work: Path) -> None:
    """Compress the models, fetch the wheels, and cut everything into parts of ``part_mib``."""
    sys.path.insert(0, str(ROOT))
    from streamanon.models import resolve_model

    work.mkdir(parents=True, exist_ok=True)
    items = []  # (file to carry, name to rebuild, kind, sha256 of the rebuilt file)
    for name in MODELS:
        source = resolve_model(name)
        packed = work / f"{source.name}.xz"
        if not packed.exists():
            print(f"compressing {source.name} ({source.stat().st_size / MIB:.1f} MiB) ...", flush=True)
            with source.open("rb") as src, lzma.open(packed, "wb", preset=6) as dst:
                shutil.copyfileobj(src, dst, 4 * MIB)
        items.append((packed, source.name, "model", sha256(source)))
    for name in WHEELS:
        wheel = _download_wheel(name, work)
        items.append((wheel, wheel.name, "wheel", sha256(wheel)))

    parts = pack(items, int(part_mib * MIB), STAGE_DIR)
    for directory in parts:
        size = sum(p.stat().st_size for p in directory.iterdir()) / MIB
        print(f"{directory.relative_to(ROOT)}: {size:.1f} MiB")
    print(f"{len(parts)} parts; carry them in order, one a call: .gpu_carry/1 ... .gpu_carry/{len(parts)} "
          "(the last with .gpu_data, in the gpu_session.sh call)")


def pack(items: list[tuple[Path, str, str, str]], budget: int, stage_dir: Path) -> list[Path]:
    """Cut ``items`` (file, name to rebuild, kind, SHA-256 of the rebuilt file) into numbered part
    folders of at most ``budget`` bytes under ``stage_dir``, each with the whole manifest."""
    shutil.rmtree(stage_dir, ignore_errors=True)
    part, used, manifest = 1, 0, []
    for path, target, kind, digest in items:
        chunks = []
        with path.open("rb") as f:
            while True:
                if used >= budget:
                    part, used = part + 1, 0
                data = f.read(budget - used)
                if not data:
                    break
                chunk = f"{path.name}.{len(chunks):02d}"
                (stage_dir / str(part)).mkdir(parents=True, exist_ok=True)
                (stage_dir / str(part) / chunk).write_bytes(data)
                chunks.append(chunk)
                used += len(data)
        manifest.append({"file": target, "kind": kind, "sha256": digest, "chunks": chunks})
    parts = sorted(stage_dir.iterdir(), key=lambda d: int(d.name))
    for directory in parts:
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return parts


def receive() -> None:
    """Copy the parts carried in this call out of the checkout, into ``RECEIVED``."""
    RECEIVED.mkdir(parents=True, exist_ok=True)
    got = []
    for directory in sorted(STAGE_DIR.glob("*")) if STAGE_DIR.is_dir() else []:
        for path in directory.iterdir():
            shutil.copy2(path, RECEIVED / path.name)
            got.append(path.name)
    have = sorted(p.name for p in RECEIVED.iterdir())
    print(f"received {len(got)} file(s); {RECEIVED} holds {len(have)}: {', '.join(have)}")


def rebuild(received: Path, models: Path, wheels: Path) -> list[Path]:
    """Join each file's chunks from ``received``, decompress the models into ``models``, put the
    wheels into ``wheels``, and check every result against the manifest's SHA-256.
    Raises ``ValueError`` naming what is missing or wrong."""
    manifest_path = received / MANIFEST
    if not manifest_path.exists():
        raise ValueError(f"no {manifest_path}: nothing was received")
    manifest = json.loads(manifest_path.read_text())
    missing = [c for item in manifest for c in item["chunks"] if not (received / c).exists()]
    if missing:
        raise ValueError(f"incomplete: {len(missing)} chunk(s) not received, e.g. {missing[0]}")
    built = []
    for item in manifest:
        folder = models if item["kind"] == "model" else wheels
        folder.mkdir(parents=True, exist_ok=True)
        joined = received / (item["file"] + ".joined")
        with joined.open("wb") as out:
            for chunk in item["chunks"]:
                with (received / chunk).open("rb") as f:
                    shutil.copyfileobj(f, out, 4 * MIB)
        target = folder / item["file"]
        if item["kind"] == "model":
            with lzma.open(joined, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 4 * MIB)
            joined.unlink()
        else:
            joined.replace(target)
        if sha256(target) != item["sha256"]:
            raise ValueError(f"{item['file']}: checksum mismatch")
        built.append(target)
    return built


def assemble(models: Path, site: Path) -> int:
    """Rebuild and check every file; install the wheels into ``site``. Exit 0 only if all is there."""
    wheels = RECEIVED / "wheels"
    try:
        built = rebuild(RECEIVED, models, wheels)
    except ValueError as exc:
        print(f"not assembled: {exc}")
        return 1
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
         "--upgrade", "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))],
    )  # fmt: skip
    if install.returncode:
        print(f"not assembled: pip could not install the wheels into {site} (exit {install.returncode})")
        return 1
    print(f"assembled {len(built)} files: models in {models}, wheels installed in {site}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stage", help="build .gpu_carry/1..N here")
    p.add_argument("--part-mib", type=float, default=36.0, help="size of each part [36]")
    p.add_argument("--work", type=Path, default=ROOT / ".gpu_carry_work", help="compressed models and wheels")
    sub.add_parser("receive", help="on the GPU machine: keep this call's part in /tmp/streamanon-carry")
    p = sub.add_parser("assemble", help="on the GPU machine: rebuild, check, install")
    p.add_argument("--models", type=Path, default=Path("/tmp/streamanon-models"))
    p.add_argument("--site", type=Path, default=Path("/tmp/site"))
    args = parser.parse_args()
    if args.command == "stage":
        stage(args.part_mib, args.work)
        return 0
    if args.command == "receive":
        receive()
        return 0
    return assemble(args.models, args.site)


if __name__ == "__main__":
    sys.exit(main())
