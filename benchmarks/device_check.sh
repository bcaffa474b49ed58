#!/usr/bin/env bash
# The GPU check, unattended, in under 8 minutes on one GPU (see benchmarks/README.md, "GPU"):
#   setup -> CUDA tests -> depthwise conv table (cuDNN vs Triton) -> speed table (+ public code, timm peers)
#   -> torch.compile -> one short AMP epoch per task -> torchrun / nccl.
# Every section has a hard time limit (timeout) and its own time budget inside, prints its elapsed time, and a
# failing section does not stop the others. Results: benchmarks/results/speed_cuda.json and
# benchmarks/results/dwconv_table_cuda.json, copied with the log to $OUT (at most 8 files come back from there).
#
#   bash benchmarks/device_check.sh                       # from the repository root, on the GPU machine
#   bash benchmarks/device_check.sh --public PATH         # with the public unireplknet.py (default: .public/unireplknet.py)
#   bash benchmarks/device_check.sh --dry                 # the same plumbing on CPU with tiny models (~2 min)
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
DRY=0
PUBLIC=${UNIREPLKNET_PUBLIC:-.public/unireplknet.py}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --public) PUBLIC="$2"; shift ;;
    *) echo "device_check.sh: unknown option $1 (expected --dry, --public PATH)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$DRY" = 1 ]; then
  DEV=(--device cpu --tiny)
  OUTDIR=${OUT:-/tmp/unimodal_device_check}
  RES=$OUTDIR
  TESTS=(tests/test_dwconv_cuda.py tests/test_trunk_cuda.py)
  PUBLIC_ARGS=(--public unimodal/models/unireplknet.py --public-package unimodal.models)
else
  DEV=(--device cuda)
  OUTDIR=${OUT:-benchmarks/results/device_check_out}
  RES=benchmarks/results
  TESTS=(tests)
  PUBLIC_ARGS=()
  [ -f "$PUBLIC" ] && PUBLIC_ARGS=(--public "$PUBLIC")
fi
mkdir -p "$OUTDIR" "$RES"
LOG=$OUTDIR/device_check.log
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" UNIMODAL_CACHE=${UNIMODAL_CACHE:-/tmp/unimodal_cache}
SPEED_JSON=$RES/speed_cuda.json
TABLE_JSON=$RES/dwconv_table_cuda.json
# a fresh record: the sections merge into these files, and a section that is killed must not leave an older
# run's numbers looking like this run's
rm -f "$SPEED_JSON" "$TABLE_JSON"

# section NAME LIMIT_S CMD...: run CMD under a hard limit, print its time and the total so far
section() {
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "=== [$(( t0 - START ))s] $name (limit ${limit}s): $*"
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  local t1; t1=$(date +%s)
  [ $rc = 124 ] && echo "=== $name: TIME LIMIT (${limit}s) reached"
  echo "=== $name: rc=$rc, $(( t1 - t0 ))s (total $(( t1 - START ))s)"
  echo "$name rc=$rc $(( t1 - t0 ))s" >> "$OUTDIR/sections.txt"
}
rm -f "$OUTDIR/sections.txt"

echo "device_check: $(date -u) dry=$DRY public=${PUBLIC_ARGS[*]:-none}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'

if [ "$DRY" = 0 ]; then
  # no network there: carried wheels (.whl/, see /work/.library/device/README.md) and the repo without build isolation
  if ls .whl/*.whl >/dev/null 2>&1; then
    section wheels 30 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  section install 30 python3 -m pip install -q --no-deps --no-build-isolation -e .
  section cuda-tests 90 python3 -m pytest -q -p no:cacheprovider --continue-on-collection-errors "${TESTS[@]}" -k cuda
else
  section cuda-tests 60 python3 -m pytest -q -p no:cacheprovider "${TESTS[@]}" -k cuda
fi
# the tests compiled most Triton kernels (Triton's on-disk cache), so the table mostly times
section dwconv-table 55 python3 benchmarks/bench_dwconv.py "${DEV[@]}" --budget-s 45 --out "$TABLE_JSON"
# the sections after this one run with the table just measured (backend and layout chosen per shape by it)
[ -f "$TABLE_JSON" ] && export UNIMODAL_DWCONV_TABLE="$(cd "$(dirname "$TABLE_JSON")" && pwd)/$(basename "$TABLE_JSON")"
section speed 140 python3 benchmarks/bench_cuda.py "${DEV[@]}" --sections speed --budget-s 125 --out "$SPEED_JSON" \
  "${PUBLIC_ARGS[@]}"
section compile 50 python3 benchmarks/bench_cuda.py "${DEV[@]}" --sections compile --budget-s 20 --out "$SPEED_JSON"
section epochs 65 python3 benchmarks/device_runs.py "${DEV[@]}" --sections epochs --timeout-s 58 --out "$SPEED_JSON"
section ddp 35 python3 benchmarks/device_runs.py "${DEV[@]}" --sections ddp --timeout-s 30 --out "$SPEED_JSON"

for f in "$SPEED_JSON" "$TABLE_JSON"; do
  [ -f "$f" ] && [ "$(dirname "$f")" != "$OUTDIR" ] && cp "$f" "$OUTDIR/"
done
echo "device_check: done in $(( $(date +%s) - START ))s; files in $OUTDIR:"
ls -la "$OUTDIR"
