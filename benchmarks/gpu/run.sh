#!/usr/bin/env bash
# One prepared GPU session (H100/H200, no network): build with CUDA for sm_90, run the CUDA tests,
# the GPU benchmarks, compute-sanitizer (memcheck, racecheck) over a short op script and the copy
# bandwidth roofline; write JSON + logs to OUTDIR. The lease is short (15 device minutes in all,
# machine start included), so every step after the build gets a slice of one time budget
# (DALE_GPU_BUDGET_S, default 480 s from the start of this script), in order of importance:
# correctness first, then speed, then the sanitizers. A step that no longer fits is skipped and
# says so in status.txt. The machine has no .git: pass DALE_GIT_COMMIT=<sha> for the records.
#
#   benchmarks/gpu/run.sh OUTDIR            # on the GPU machine
#   DALE_GPU_DRY_RUN=1 benchmarks/gpu/run.sh /tmp/out   # on a CPU machine: every step that can run
set -uo pipefail
OUT=${1:?usage: run.sh OUTDIR}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)   # absolute: the script changes directory next
# The device tool returns at most 8 files: every log goes to OUTDIR/all, which ends up packed into
# OUTDIR/logs.tgz beside copies of the main files.
FINAL=$OUT
OUT=$FINAL/all
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DRY=${DALE_GPU_DRY_RUN:-0}
BUDGET=${DALE_GPU_BUDGET_S:-480}
# which steps after the build run (a short rerun can leave some out)
STEPS=${DALE_GPU_STEPS:-tests,bench,sanitizer,profile,ncu}
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
START=$(date +%s)
export PYTHONUNBUFFERED=1
log() { echo "[run.sh +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run.log"; }
status() { echo "$1=$2" >> "$OUT/status.txt"; }
: > "$OUT/status.txt"
# seconds for a step: its cap, or what is left of the budget if that is less (0: skip the step)
slice() {
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt "${2:-20}" ]; then echo 0; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

log "environment"
{ nvidia-smi || true; nvcc --version || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available()); \
p = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None; print(p)"
  echo "commit ${DALE_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}"; nproc; } > "$OUT/env.txt" 2>&1

if [ "$DRY" = 1 ]; then
  log "dry run: using the installed (CPU) build"
  status build skipped-dry-run
else
  log "build (CUDA ON, sm_90)"
  export TORCH_CUDA_ARCH_LIST=9.0
  if timeout 300 $PY -m pip install --no-build-isolation --no-deps -v -C build-dir=build/gpu \
       -C cmake.define.DALE_EXT_CUDA=ON -C cmake.define.CMAKE_CUDA_FLAGS="-Xptxas=-v" -e . > "$OUT/build.log" 2>&1; then
    status build ok
  else
    status build failed; log "build failed (see build.log)"; tail -40 "$OUT/build.log"; exit 1
  fi
  grep -E "ptxas info|spill" "$OUT/build.log" > "$OUT/ptxas.txt" || true
  log "build done"
fi

t=$(slice 170); want tests || t=0
if [ "$t" -gt 0 ]; then
  log "CUDA tests: ops and trainer (and the CPU side of each CPU=CUDA comparison), ${t}s at most"
  timeout "$t" $PY -m pytest -q -p no:cacheprovider python_tests/ops python_tests/train -m "needs_cuda" -rs \
    --junitxml="$OUT/cuda_tests.xml" > "$OUT/cuda_tests.log" 2>&1; status cuda_tests $?
  tail -15 "$OUT/cuda_tests.log"
else status cuda_tests skipped-no-time; fi

t=$(slice 150); want bench || t=0
if [ "$t" -gt 0 ]; then
  log "benchmarks (CUDA only: the CPU ones are recorded on the CPU machines), ${t}s at most"
  # the one-hot reference at the GPU-only shape takes 0.57 s a call (30 s of the slice): left out
  BENCH_K="cuda and not (reference_onehot and 24x64x224x224x2)"; [ "$DRY" = 1 ] && BENCH_K="cpu and float32 and kernel"
  timeout "$t" $PY -m pytest -q -p no:cacheprovider benchmarks -k "$BENCH_K" --benchmark-only \
    --benchmark-json="$OUT/bench.json" --benchmark-columns=median,iqr,rounds > "$OUT/bench.log" 2>&1
  status bench $?
  tail -3 "$OUT/bench.log"
else status bench skipped-no-time; fi

if [ "$DRY" = 1 ] || ! want sanitizer || ! command -v compute-sanitizer > /dev/null; then
  log "compute-sanitizer: skipped (dry run or not installed)"; status sanitizer skipped
else
  for tool in memcheck racecheck; do
    t=$(slice 110 30)
    if [ "$t" -eq 0 ]; then status "sanitizer_$tool" skipped-no-time; continue; fi
    log "compute-sanitizer --tool $tool, ${t}s at most"
    # no caching allocator: an access past a tensor's end then leaves its allocation
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "$t" compute-sanitizer --tool "$tool" --error-exitcode 9 \
      $PY benchmarks/gpu/sanitize_ops.py > "$OUT/sanitizer_$tool.log" 2>&1; status "sanitizer_$tool" $?
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^OK" "$OUT/sanitizer_$tool.log" | tail -3
  done
fi

t=$(slice 60 25); want profile || t=0
if [ "$DRY" != 1 ] && [ "$t" -gt 0 ]; then
  log "profile of wasserstein_loss (torch.profiler), ${t}s at most"
  timeout "$t" $PY -m benchmarks.gpu.profile_wasserstein > "$OUT/profile_wasserstein.txt" 2>&1; status profile $?
else status profile skipped; fi

t=$(slice 90 30); want ncu || t=0
if [ "$DRY" != 1 ] && [ "$t" -gt 0 ] && command -v ncu > /dev/null; then
  log "Nsight Compute on the statistics kernels of one loss step, ${t}s at most"
  # clocks left alone (METHOD.md); the first five matching launches: sums and moments for each
  # side, then the backward
  timeout "$t" ncu --clock-control none -k 'regex:sums_kernel|moments_kernel|backward_kernel' -c 5 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    --metrics l1tex__t_sector_hit_rate.pct,lts__t_sector_hit_rate.pct,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum \
    $PY -m benchmarks.gpu.ncu_wasserstein > "$OUT/ncu.txt" 2>&1; status ncu $?
  tail -5 "$OUT/ncu.txt"
else status ncu skipped; fi

log "roofline (device-to-device copy bandwidth) and summary"
t=$(slice 60 10); [ "$t" -eq 0 ] && t=10
timeout "$t" $PY -m benchmarks.gpu.roofline "$OUT" > "$OUT/roofline.log" 2>&1; status roofline $?
$PY -m benchmarks.summarise "$OUT/bench.json" > "$OUT/bench.md" 2>> "$OUT/run.log" || true
log "done"
cat "$OUT/status.txt"
head -40 "$OUT/bench.md" 2>/dev/null
tail -25 "$OUT/roofline.log"
tar czf "$FINAL/logs.tgz" -C "$FINAL" all
for f in status.txt gpu.json bench.json bench.md cuda_tests.log profile_wasserstein.txt ncu.txt; do
  [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FINAL/"
done
rm -rf "$OUT"
