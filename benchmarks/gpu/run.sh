#!/usr/bin/env bash
# One prepared GPU session (H100/H200, no network): build with CUDA for sm_90, run the CUDA tests,
# compute-sanitizer (memcheck, racecheck) over a short op script, the GPU benchmarks and the copy
# bandwidth roofline; write JSON + logs to OUTDIR. Must finish well inside ten minutes.
#
#   benchmarks/gpu/run.sh OUTDIR            # on the GPU machine
#   DALE_GPU_DRY_RUN=1 benchmarks/gpu/run.sh /tmp/out   # on a CPU machine: every step that can run
set -uo pipefail
OUT=${1:?usage: run.sh OUTDIR}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)   # absolute: the script changes directory next
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DRY=${DALE_GPU_DRY_RUN:-0}
log() { echo "[run.sh $(date +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }
status() { echo "$1=$2" >> "$OUT/status.txt"; }
: > "$OUT/status.txt"

log "environment"
{ nvidia-smi || true; nvcc --version || true; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; git rev-parse HEAD || true; } > "$OUT/env.txt" 2>&1

if [ "$DRY" = 1 ]; then
  log "dry run: using the installed (CPU) build"
  status build skipped-dry-run
else
  log "build (CUDA ON, sm_90)"
  export TORCH_CUDA_ARCH_LIST=9.0
  if $PY -m pip install --no-build-isolation --no-deps -v -C build-dir=build/gpu \
       -C cmake.define.DALE_EXT_CUDA=ON -C cmake.define.CMAKE_CUDA_FLAGS="-Xptxas=-v" -e . > "$OUT/build.log" 2>&1; then
    status build ok
  else
    status build failed; log "build failed (see build.log)"; tail -40 "$OUT/build.log"; exit 1
  fi
  grep -E "ptxas info|spill" "$OUT/build.log" > "$OUT/ptxas.txt" || true
fi

log "CUDA tests (and the CPU op tests, for the CPU=CUDA comparisons' other side)"
timeout 240 $PY -m pytest -q -p no:cacheprovider python_tests/ops -m "needs_cuda" -rs --junitxml="$OUT/cuda_tests.xml" \
  > "$OUT/cuda_tests.log" 2>&1; status cuda_tests $?
tail -3 "$OUT/cuda_tests.log"

if [ "$DRY" = 1 ] || ! command -v compute-sanitizer > /dev/null; then
  log "compute-sanitizer: skipped (dry run or not installed)"; status sanitizer skipped
else
  for tool in memcheck racecheck; do
    log "compute-sanitizer --tool $tool"
    timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 9 $PY benchmarks/gpu/sanitize_ops.py \
      > "$OUT/sanitizer_$tool.log" 2>&1; status "sanitizer_$tool" $?
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer_$tool.log" | tail -2
  done
fi

log "benchmarks"
timeout 300 $PY -m pytest -q -p no:cacheprovider benchmarks --benchmark-only --benchmark-json="$OUT/bench.json" \
  --benchmark-columns=median,iqr,rounds > "$OUT/bench.log" 2>&1; status bench $?
tail -3 "$OUT/bench.log"

log "roofline (device-to-device copy bandwidth) and summary"
timeout 120 $PY benchmarks/gpu/roofline.py "$OUT" > "$OUT/roofline.log" 2>&1; status roofline $?
$PY -m benchmarks.summarise "$OUT/bench.json" > "$OUT/bench.md" 2>> "$OUT/run.log" || true
cat "$OUT/status.txt"
tail -20 "$OUT/roofline.log"
