#!/usr/bin/env bash
# On the GPU host, from the repository root, with the bundle beside it (bundle.sh):
#   bash benchmarks/gpu/run.sh bench --devices cuda         # benchmarks/bench_scorer.py, its GPU table
#   bash benchmarks/gpu/run.sh ab 2                         # batch_ab.py: batch_tokens and head chunking A/B
# Results go to $OUT (default /tmp/out).
set -euo pipefail
BUNDLE=${BUNDLE:-$PWD/.devbench}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$BUNDLE"/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD RSR_MODELS=/tmp/rsr-models RSR_HOME=/tmp/rsr-home RSR_SHARED_DATA=$BUNDLE/data
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
python3 benchmarks/gpu/make_models.py "$BUNDLE/models"
what=$1; shift
case $what in
  bench) python3 benchmarks/bench_scorer.py --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt" ;;
  ab) python3 benchmarks/gpu/batch_ab.py "$@" 2>&1 | grep -v "it/s" | tee "$OUT/ab.txt" ;;
  *) echo "run.sh: bench | ab" >&2; exit 2 ;;
esac
