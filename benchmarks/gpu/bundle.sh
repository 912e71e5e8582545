#!/usr/bin/env bash
# Pack what a bare GPU host without network needs to run the scorer benchmarks, into $1 (default .devbench):
# the students' configs and tokenizers (no weights: make_models.py builds random ones there; tokenizer files
# over 1 MB xz-compressed, run.sh unpacks them), the first 80 records of each teacher in
# ../shared/data/zeroeval-math-l5, and Python 3.12 wheels of pydantic(-settings) and their needs.
# RAY=1 adds Ray for bench_long.py's phase h (the host has none): its 76 MB wheel is over the 64 MiB that a device
# call carries, so it travels installed and stripped of what a Python-only local instance never loads (the Java
# jar, the dashboard's web client, RLlib/Tune/Train/Serve/LLM), as one xz tarball of ~23 MB.
set -euo pipefail
PLATFORMS=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:-$REPO/.devbench}
DATA=${RSR_SHARED_DATA:-$REPO/../shared/data}
MODELS=${RSR_MODELS:-$REPO/.rsr-cache/models}
mkdir -p "$DEST/whl" "$DEST/models" "$DEST/data/zeroeval-math-l5"
for m in smollm2-135m gemma3-270m; do
  [ -d "$MODELS/$m" ] || { echo "bundle.sh: $MODELS/$m missing: run 'rsr score' once with that student here" >&2; exit 2; }
  mkdir -p "$DEST/models/$m"
  for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja rsr_student.json; do
    [ -f "$MODELS/$m/$f" ] || continue
    if [ "$(stat -c %s "$MODELS/$m/$f")" -gt 1000000 ]; then xz -9 -T0 -c "$MODELS/$m/$f" >"$DEST/models/$m/$f.xz"
    else cp "$MODELS/$m/$f" "$DEST/models/$m/"; fi
  done
done
python3 - "$DATA/zeroeval-math-l5" "$DEST/data/zeroeval-math-l5" <<'PY'
import json, pathlib, sys
src, dst = map(pathlib.Path, sys.argv[1:])
for f in src.glob("*.json"):
    if f.name != "summary.json":
        (dst / f.name).write_text(json.dumps(json.loads(f.read_text())[:80]))
PY
python3 -m pip download -q --no-deps "${PLATFORMS[@]}" -d "$DEST/whl" pydantic==2.14.4 pydantic_core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 pydantic-settings==2.16.3 python-dotenv==1.2.4
if [ "${RAY:-0}" = 1 ]; then
  tmp=$(mktemp -d)
  # The host has click, filelock, msgpack, packaging, protobuf, pyyaml, requests and attrs; jsonschema it lacks.
  python3 -m pip download -q --no-deps "${PLATFORMS[@]}" -d "$tmp/whl" ray==2.60.0 jsonschema==4.26.0 \
    jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  # pip, not unzip: it keeps the executable bits of Ray's gcs_server and raylet.
  python3 -m pip install -q --no-deps --no-index --no-compile "${PLATFORMS[@]}" --target "$tmp/site" "$tmp"/whl/*.whl
  rm -rf "$tmp/site/bin" "$tmp/site/ray/jars" "$tmp/site/ray/dashboard/client/build" \
    "$tmp/site/ray/"{rllib,tune,train,serve,llm}
  tar -C "$tmp/site" -cf - . | xz -9 -T0 >"$DEST/ray-site.tar.xz"
  rm -rf "$tmp"
fi
du -sh "$DEST"
