#!/usr/bin/env bash
# Pack what a bare GPU host without network needs to run the scorer benchmarks, into $1 (default .devbench):
# the students' configs and tokenizers (no weights: make_models.py builds random ones there), the first 80
# records of each teacher in ../shared/data/zeroeval-math-l5, and Python 3.12 wheels of pydantic and its needs.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DEST=${1:-$REPO/.devbench}
DATA=${RSR_SHARED_DATA:-$REPO/../shared/data}
MODELS=${RSR_MODELS:-$REPO/.rsr-cache/models}
mkdir -p "$DEST/whl" "$DEST/models" "$DEST/data/zeroeval-math-l5"
for m in smollm2-135m gemma3-270m; do
  [ -d "$MODELS/$m" ] || { echo "bundle.sh: $MODELS/$m missing: run 'rsr score' once with that student here" >&2; exit 2; }
  mkdir -p "$DEST/models/$m"
  for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja rsr_student.json; do
    [ -f "$MODELS/$m/$f" ] && cp "$MODELS/$m/$f" "$DEST/models/$m/"
  done
done
python3 - "$DATA/zeroeval-math-l5" "$DEST/data/zeroeval-math-l5" <<'PY'
import json, pathlib, sys
src, dst = map(pathlib.Path, sys.argv[1:])
for f in src.glob("*.json"):
    if f.name != "summary.json":
        (dst / f.name).write_text(json.dumps(json.loads(f.read_text())[:80]))
PY
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST/whl" \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
du -sh "$DEST"
