"""Input files -> Trajectory records. One adapter per format; bad records are quarantined, never dropped.

result = ingest_file("runs/gpt-4o.json")                     # format detected: zeroeval
result = ingest_file("out.csv", mapping={"problem": "question", "response": "output"}, teacher="m")
result.trajectories, result.rejected, result.problems
for chunk in iter_ingest("big.jsonl", teacher="m"):          # the same, CHUNK records at a time (flat memory)
    store(chunk)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Literal, get_args

from rsr.ingest import messages, table, zeroeval
from rsr.ingest._common import CHUNK, IngestResult, collect
from rsr.ingest._io import input_digest, iter_records, require_path, suffix_of
from rsr.ingest.hf import ingest_hf, is_saved_dataset
from rsr.ingest.problems import ProblemIndex, join_gold, load_problem_index, load_problems
from rsr.ingest.table import parse_mapping
from rsr.ingest.zeroeval import parse_teacher_json
from rsr.records import Trajectory

Format = Literal["messages", "zeroeval", "table", "hf"]
FORMATS: tuple[str, ...] = get_args(Format)

__all__ = [
    "FORMATS",
    "Format",
    "IngestResult",
    "detect_format",
    "ingest_file",
    "input_digest",
    "iter_ingest",
    "load_problems",
    "parse_mapping",
    "parse_teacher_json",
]

_SNIFF_RECORDS = 20


def detect_format(path: str | Path) -> Format:
    """zeroeval: a JSON list whose records have `output` + `problem`; hf: a save_to_disk folder;
    messages: JSONL / JSON list / Parquet whose records have `messages`; anything else: table (needs a mapping)."""
    path = require_path(Path(path))
    if path.is_dir():
        if is_saved_dataset(path):
            return "hf"
        raise ValueError(f"{path} is a directory but not a saved HF dataset (no dataset_info.json / state.json)")
    if suffix_of(path) in ("csv", "tsv"):
        return "table"
    # a few parsed records from the top (Parquet: its first rows, which all hold every column); bad ones are skipped
    top = islice((raw.value for raw in iter_records(path) if raw.error is None), _SNIFF_RECORDS)
    records = [r for r in top if isinstance(r, dict)]

    def most(test) -> bool:  # a few bad records must not flip the format: they are the adapter's to reject
        return bool(records) and 2 * sum(1 for r in records if test(r)) > len(records)

    if suffix_of(path) == "json" and most(lambda r: "output" in r and "problem" in r):
        return "zeroeval"
    if most(lambda r: "messages" in r):
        return "messages"
    return "table"


def iter_ingest(
    path: str | Path,
    *,
    teacher: str | None = None,
    fmt: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
    problems: str | Path | None = None,
    chunk_size: int = CHUNK,
) -> Iterator[IngestResult]:
    """Read one input `chunk_size` records at a time: each chunk holds its trajectories (golds joined from
    `problems`), its rejects and the problems it saw. Memory stays flat however large the file (a JSON list,
    ZeroEval's format, is the exception: it is parsed whole).

    Raises FileNotFoundError for a missing path and ValueError for a wrong call (unknown format, bad mapping, a
    bad problems file), before the first chunk; anything wrong with the data itself is a chunk's `rejected`."""
    index = _problem_index(fmt, problems)
    for chunk in _chunks(path, fmt, teacher, mapping, chunk_size):
        chunk.trajectories, chunk.problems = join_gold(chunk.trajectories, index)
        yield chunk


def _problem_index(fmt: str | None, problems: str | Path | None) -> ProblemIndex | None:
    """The checks of a call that fail before any record is read: the format's name and the problems file."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return load_problem_index(Path(problems)) if problems is not None else None


def ingest_file(
    path: str | Path,
    *,
    teacher: str | None = None,
    fmt: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
    problems: str | Path | None = None,
) -> IngestResult:
    """Read one input whole into trajectories (+ rejects, + the problems seen): all chunks joined, for
    inputs that fit in memory. Equal trajectory ids: the first is kept, later ones counted in duplicates_skipped."""
    index = _problem_index(fmt, problems)
    result, trajectories = IngestResult(), []
    for chunk in _chunks(path, fmt, teacher, mapping, CHUNK):
        trajectories += chunk.trajectories
        result.rejected += chunk.rejected
        result.duplicates_skipped += chunk.duplicates_skipped
    # golds joined over all chunks at once: each problem gets the first gold known for it in the whole input
    joined, result.problems = join_gold(trajectories, index)
    first: dict[str, Trajectory] = {}  # equal ids across chunks or splits are repeats, not errors
    for traj in joined:
        first.setdefault(traj.trajectory_id, traj)
    result.duplicates_skipped += len(joined) - len(first)
    result.trajectories = list(first.values())
    return result


def _chunks(
    path: str | Path, fmt: str | None, teacher: str | None, mapping: Mapping[str, str] | str | None, chunk_size: int
) -> Iterator[IngestResult]:
    if fmt == "hf" and not Path(path).exists():
        return ingest_hf(str(path), teacher=teacher, mapping=mapping)  # a hub id rather than a folder
    p = require_path(Path(path))
    if p.is_dir() and fmt not in (None, "hf"):
        raise ValueError(f"{p} is a directory; only the hf format reads directories (a save_to_disk folder)")
    fmt = fmt or detect_format(p)
    if fmt == "hf":
        return ingest_hf(p, teacher=teacher, mapping=mapping, chunk_size=chunk_size)
    if fmt == "table":
        adapter = partial(table.record_to_trajectory, mapping=parse_mapping(mapping))
    elif fmt == "zeroeval":  # upstream names files by model: the stem, unless a teacher is given
        adapter, teacher = zeroeval.record_to_trajectory, teacher or p.stem or None
    else:
        adapter = messages.record_to_trajectory
    return collect(iter_records(p), str(p), partial(adapter, source_file=str(p), teacher=teacher), chunk_size)
