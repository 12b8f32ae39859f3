#!/usr/bin/env bash
# One device-tool call's worth of GPU work, prepared on the CPU so a lent GPU's minutes go to it:
#   1. the CUDA parity tests (CuPy photometric kernels, compiled generator, PyTorch CenterFace,
#      torch paste-back, the device face path end to end),
#   2. the face-path benchmark (generator + photometric + paste per frame, eager and compiled,
#      host and device compositing; JSON in $OUT),
#   3. a timed run of the U-Net GAN trainer (resumes from runs/gpu if carried back in),
#   4. logs (one archive), loss curves, the last sample grid and the EMA weights copied to $OUT
#      (8 files at most come back, 16 MiB each).
#
# Here, first (data that must travel, kept out of git by .git/info/exclude):
#   bash benchmarks/gpu_session.sh --stage      # copies a few shared test files into .gpu_data/
# Then, with the device tool (shards from `streamanon train prepare`, ~40 MiB, in data/faces128):
#   run(command="bash benchmarks/gpu_session.sh 3", carry=["data/faces128", ".gpu_data"], timeout_s=590)
# The argument is the training budget in minutes (0: tests only). The machine has PyTorch, CuPy,
# numpy, OpenCV, onnx, onnxruntime, pytest, click and tqdm; it has no PyAV and no dlib, so the
# tests that need them skip there.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--stage" ]]; then
    shared="${STREAMANON_SHARED_DATA:-../shared/data}"
    mkdir -p .gpu_data/faces/utkface .gpu_data/images
    grep -qx '/.gpu_data/' .git/info/exclude 2>/dev/null || echo '/.gpu_data/' >> .git/info/exclude
    cp "$shared/images/multiface.jpg" .gpu_data/images/
    find "$shared/faces/utkface" -name '*.jpg' | sort | head -10 | xargs -I{} cp {} .gpu_data/faces/utkface/
    du -sh .gpu_data data/faces128 2>/dev/null
    exit 0
fi

minutes="${1:-3}"
OUT="${OUT:-$PWD/out/gpu_session}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export STREAMANON_SHARED_DATA="$PWD/.gpu_data"

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
    python3 -c "import cupy; print('cupy', cupy.__version__)" 2>&1
} > "$OUT/device.txt" 2>&1

# 1. CUDA parity tests (each file also holds CPU tests; -m gpu keeps only the CUDA ones).
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider -rs \
    tests/test_photometric_cuda.py tests/test_export.py tests/test_generate.py tests/test_detect.py \
    tests/test_resnet_torch.py tests/test_composite_torch.py tests/test_compose.py > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests: exit $?" | tee -a "$OUT/device.txt"
tail -n 5 "$OUT/gpu_tests.log"

# 2. The face path's cost per frame (issue #5's <= 5 ms per face): eager, then compiled.
for backend in eager compile; do
    timeout 150 python3 benchmarks/bench_face_path.py --device cuda --backend "$backend" --composite host,device \
        --frames 20 --out "$OUT/face-path-cuda-$backend.json" > "$OUT/face_path_$backend.log" 2>&1
    echo "face path ($backend): exit $?" | tee -a "$OUT/device.txt"
    tail -n 28 "$OUT/face_path_$backend.log"
done

# 3. The GAN trainer on the carried shards, for a fixed wall-clock budget, then a checkpoint.
if [[ "$minutes" != "0" && -f data/faces128/meta.json ]]; then
    timeout $((minutes * 60 + 180)) python3 -m streamanon train run --data data/faces128 --out runs/gpu \
        --device cuda --batch 64 --workers 8 --max-minutes "$minutes" -q > "$OUT/train.log" 2>&1
    echo "training: exit $?" | tee -a "$OUT/device.txt"
    tail -n 3 "$OUT/train.log"
    # The EMA weights (fp16, < 16 MiB) come back; the resumable checkpoint (both networks and
    # their optimizer states, > 100 MiB) is over what $OUT returns, so a later session restarts.
    [[ -f runs/gpu/generator_128.pt ]] && cp runs/gpu/generator_128.pt "$OUT/"
    last_grid=$(ls runs/gpu/samples/*.png 2>/dev/null | tail -n 1)
    tar -czf "$OUT/train_logs.tar.gz" -C runs/gpu losses.csv losses.png ${last_grid:+samples/$(basename "$last_grid")} 2>/dev/null
fi
# At most 8 files come back: the logs travel as one archive.
(cd "$OUT" && tar -czf logs.tar.gz device.txt ./*.log && rm -f ./*.log)
ls -la "$OUT"
