#!/usr/bin/env bash
# On the GPU host, from the repository root, with the bundle beside it (bundle.sh):
#   bash benchmarks/gpu/run.sh long                         # benchmarks.gpu.bench_long: issue 11's table (1B, 7B)
#   bash benchmarks/gpu/run.sh bench --devices cuda         # benchmarks.bench_scorer, its GPU table
# Results go to $OUT (default /tmp/out).
set -euo pipefail
BUNDLE=${BUNDLE:-$PWD/.devbench}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$BUNDLE"/whl/*.whl
# The bundle's large tokenizer files travel xz-compressed, Ray (if bundled) as a tarball of an installed site.
python3 - "$BUNDLE" /tmp/bundle-models /tmp/ray-site <<'PY'
import lzma, pathlib, shutil, sys, tarfile
bundle, models, ray_site = map(pathlib.Path, sys.argv[1:])
for f in (bundle / "models").rglob("*"):
    if f.is_file():
        out = models / f.relative_to(bundle / "models")
        out.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".xz":
            out.with_suffix("").write_bytes(lzma.decompress(f.read_bytes()))
        else:
            shutil.copy(f, out)
if (bundle / "ray-site.tar.xz").is_file():
    with tarfile.open(bundle / "ray-site.tar.xz") as tar:
        tar.extractall(ray_site, filter="tar")  # keeps the executable bits of gcs_server and raylet
PY
# Ray's site goes last: it only adds packages the host lacks.
export PYTHONPATH=/tmp/site:$PWD:/tmp/ray-site RSR_MODELS=/tmp/rsr-models RSR_HOME=/tmp/rsr-home
export RSR_SHARED_DATA=$BUNDLE/data HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
what=$1; shift
case $what in
  long) python3 -m benchmarks.gpu.bench_long --out "$OUT" --tokenizers /tmp/bundle-models "$@" 2>&1 | tee "$OUT/long.txt" ;;
  bench) python3 -m benchmarks.gpu.make_models /tmp/bundle-models
         python3 -m benchmarks.bench_scorer --out "$OUT" "$@" 2>&1 | tee "$OUT/log.txt" ;;
  *) echo "run.sh: long | bench" >&2; exit 2 ;;
esac
