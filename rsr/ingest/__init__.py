"""Input files -> Trajectory records. One adapter per format; bad records are quarantined, never dropped.

result = ingest_file("runs/gpt-4o.json")                     # format detected: zeroeval
result = ingest_file("out.csv", mapping={"problem": "question", "response": "output"}, teacher="m")
result.trajectories, result.rejected, result.problems
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from rsr.ingest._common import IngestResult, RecordError
from rsr.ingest._io import head_text, iter_jsonl, require_path, suffix_of, whole_file_problem
from rsr.ingest.hf import ingest_hf, is_saved_dataset
from rsr.ingest.messages import ingest_messages
from rsr.ingest.problems import join_gold, load_problem_index, load_problems, problems_of
from rsr.ingest.table import ingest_table, parse_mapping
from rsr.ingest.zeroeval import ingest_zeroeval, parse_teacher_json
from rsr.records import Rejected

Format = Literal["messages", "zeroeval", "table", "hf"]
FORMATS: tuple[str, ...] = ("messages", "zeroeval", "table", "hf")

__all__ = [
    "FORMATS",
    "Format",
    "IngestResult",
    "RecordError",
    "detect_format",
    "ingest_file",
    "load_problems",
    "parse_mapping",
    "parse_teacher_json",
]

_SNIFF_RECORDS = 20


def _first_records(path: Path) -> list[object]:
    """A few parsed records from the top of a file, for format detection (bad lines are skipped here)."""
    kind = suffix_of(path)
    if kind == "json":
        try:
            value = json.loads(path.read_bytes().decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError):
            return []
        return value[:_SNIFF_RECORDS] if isinstance(value, list) else [value]
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return [{name: None for name in pq.read_schema(path).names}]
        except (pa.ArrowException, OSError):
            return []
    if kind in ("csv", "tsv"):
        return []
    out = []
    for raw in iter_jsonl(path):
        if raw.error is None:
            out.append(raw.value)
        if len(out) >= _SNIFF_RECORDS:
            break
    return out


def detect_format(path: str | Path) -> Format:
    """zeroeval: a JSON list whose records have `output` + `problem`; hf: a save_to_disk folder;
    messages: JSONL / JSON list / Parquet whose records have `messages`; anything else: table (needs a mapping)."""
    path = require_path(Path(path))
    if path.is_dir():
        if is_saved_dataset(path):
            return "hf"
        raise ValueError(f"{path} is a directory but not a saved HF dataset (no dataset_info.json / state.json)")
    records = [r for r in _first_records(path) if isinstance(r, dict)]

    def most(test) -> bool:  # a few bad records must not flip the format: they are the adapter's to reject
        return bool(records) and 2 * sum(1 for r in records if test(r)) > len(records)

    if suffix_of(path) == "json" and most(lambda r: "output" in r and "problem" in r):
        return "zeroeval"
    if most(lambda r: "messages" in r):
        return "messages"
    return "table"


def ingest_file(
    path: str | Path,
    *,
    teacher: str | None = None,
    fmt: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
    problems: str | Path | None = None,
) -> IngestResult:
    """Read one input into trajectories (+ rejects, + the problems seen, golds joined from `problems`).

    Raises FileNotFoundError for a missing path and ValueError for a wrong call (unknown format, bad mapping);
    anything wrong with the data itself ends up in `result.rejected` instead.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "hf" and not Path(path).exists():
        result = ingest_hf(str(path), teacher=teacher, mapping=mapping)  # a hub id rather than a folder
    else:
        p = require_path(Path(path))
        if p.is_dir() and fmt not in (None, "hf"):
            raise ValueError(f"{p} is a directory; only the hf format reads directories (a save_to_disk folder)")
        unreadable = whole_file_problem(p)
        if unreadable:
            # detection cannot read such a file either; one quarantined entry says why
            reject = Rejected(source_file=str(p), source_line=0, reason=unreadable, raw=head_text(p))
            result = IngestResult(rejected=[reject])
        else:
            result = _dispatch(p, fmt or detect_format(p), teacher=teacher, mapping=mapping)
    result.trajectories, skipped = _first_of_each(result)
    result.duplicates_skipped += skipped
    index = load_problem_index(Path(problems)) if problems is not None else None
    if index is not None:
        result.trajectories = join_gold(result.trajectories, index)
    result.problems = problems_of(result.trajectories, index)
    return result


def _dispatch(path: Path, fmt: str, *, teacher: str | None, mapping: Mapping[str, str] | str | None) -> IngestResult:
    if fmt == "zeroeval":
        return ingest_zeroeval(path, teacher=teacher)
    if fmt == "messages":
        return ingest_messages(path, teacher=teacher)
    if fmt == "table":
        return ingest_table(path, teacher=teacher, mapping=mapping)
    return ingest_hf(path, teacher=teacher, mapping=mapping)


def _first_of_each(result: IngestResult) -> tuple[list, int]:
    """Equal trajectory ids across splits of one input: the first is kept, later ones are counted, not errors."""
    seen: set[str] = set()
    kept = []
    for traj in result.trajectories:
        if traj.trajectory_id not in seen:
            seen.add(traj.trajectory_id)
            kept.append(traj)
    return kept, len(result.trajectories) - len(kept)
