"""Input files -> Trajectory records. One adapter per format; bad records are quarantined, never dropped.

One line of stages, each room visited once: read bytes (_io: open_bytes, decompressing; _csv) -> records (_io:
RawRecord per line/row/item, a bad one carrying its reason) -> adapt (plan: the format and the column of each
field, decided once; adapters -> messages/table/zeroeval) -> account (_common.collect: stored, repeat or
quarantined, chunks of CHUNK records or CHUNK_BYTES of text) -> store (rsr_tasks.curate, one chunk a transaction).

result = ingest_file("runs/gpt-4o.json")                     # format detected: zeroeval
result = ingest_file("out.csv", mapping={"problem": "question", "response": "output"}, teacher="m")
result = ingest_file("am.jsonl", mapping={"answer": "messages.0.info.reference_answer"})  # dotted paths, indices
result = ingest_file("open-r1/OpenR1-Math-220k", fmt="hf", teacher="r1", hf_options={"split": "train"})
top_reasons(result.rejected)                                 # the most frequent quarantine reasons, with counts
result.trajectories, result.rejected, result.problems
for chunk in iter_ingest("big.jsonl.zst", teacher="m"):      # the same, a chunk at a time (CHUNK records or
    store(chunk)                                             # CHUNK_BYTES of text: flat memory); chunk.plan says how
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any, Literal, get_args

from rsr.curate.ingest._common import CHUNK, CHUNK_BYTES, IngestResult, reason_pattern, top_reasons
from rsr.curate.ingest._io import input_digest, iter_records, require_path, suffix_of
from rsr.curate.ingest.adapters import ROW_FORMATS, detect_rows, read_planned
from rsr.curate.ingest.hf import check_options, ingest_hf, is_saved_dataset
from rsr.curate.ingest.plan import FIELDS, GOLD_COLUMNS, ReadPlan, explicit_pairs, make_plan
from rsr.curate.ingest.problems import ProblemIndex, join_gold, load_problem_index, load_problems
from rsr.curate.ingest.zeroeval import parse_teacher_json
from rsr.records import Trajectory

Format = Literal["messages", "sharegpt", "generations", "zeroeval", "table", "hf"]
FORMATS: tuple[str, ...] = get_args(Format)
assert set(FORMATS) == {*ROW_FORMATS, "hf"}

__all__ = [
    "CHUNK_BYTES",
    "FIELDS",
    "FORMATS",
    "GOLD_COLUMNS",
    "ReadPlan",
    "explicit_pairs",
    "Format",
    "IngestResult",
    "detect_format",
    "ingest_file",
    "input_digest",
    "iter_ingest",
    "load_problems",
    "make_plan",
    "parse_teacher_json",
    "reason_pattern",
    "top_reasons",
]

_SNIFF_RECORDS = 20


def detect_format(path: str | Path) -> Format:
    """hf: a save_to_disk folder; CSV/TSV: table; else by most of the first records (adapters.detect_rows):
    zeroeval (a JSON list of `output` + `problem`), generations, messages, sharegpt (`conversations`), table."""
    path = require_path(Path(path))
    if path.is_dir():
        if is_saved_dataset(path):
            return "hf"
        raise ValueError(f"{path} is a directory but not a saved HF dataset (no dataset_info.json / state.json)")
    if suffix_of(path) in ("csv", "tsv"):
        return "table"
    return detect_rows(_head(path), json_list=suffix_of(path) == "json")  # type: ignore[return-value]


def _head(path: Path) -> list:
    """A few parsed records from the top (Parquet: its first rows, which all hold every column); bad ones skipped."""
    return list(islice((raw.value for raw in iter_records(path) if raw.error is None), _SNIFF_RECORDS))


def iter_ingest(
    path: str | Path,
    *,
    teacher: str | None = None,
    fmt: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
    problems: str | Path | None = None,
    chunk_size: int = CHUNK,
    hf_options: Mapping[str, Any] | None = None,
) -> Iterator[IngestResult]:
    """Read one input `chunk_size` records at a time: each chunk holds its trajectories (golds joined from
    `problems`), its rejects and the problems it saw. Memory stays flat however large the file (a JSON list,
    ZeroEval's format, is the exception: it is parsed whole). hf_options: {"config", "split", "revision"} of an
    HF dataset (a hub id with fmt="hf", or a saved folder: split picks one split, config a sub-folder).

    Raises FileNotFoundError for a missing path and ValueError for a wrong call (unknown format, bad mapping, a
    bad problems file), before the first chunk; anything wrong with the data itself is a chunk's `rejected`."""
    index = _problem_index(fmt, problems)
    for chunk in _chunks(path, fmt, teacher, mapping, chunk_size, hf_options):
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
    hf_options: Mapping[str, Any] | None = None,
) -> IngestResult:
    """Read one input whole into trajectories (+ rejects, + the problems seen): all chunks joined, for
    inputs that fit in memory. Equal trajectory ids: the first is kept, later ones counted in duplicates_skipped."""
    index = _problem_index(fmt, problems)
    result, trajectories = IngestResult(), []
    for chunk in _chunks(path, fmt, teacher, mapping, CHUNK, hf_options):
        trajectories += chunk.trajectories
        result.rejected += chunk.rejected
        result.duplicates_skipped += chunk.duplicates_skipped
        result.dropped_turns += chunk.dropped_turns
    # golds joined over all chunks at once: each problem gets the first gold known for it in the whole input
    joined, result.problems = join_gold(trajectories, index)
    first: dict[str, Trajectory] = {}  # equal ids across chunks or splits are repeats, not errors
    for traj in joined:
        first.setdefault(traj.trajectory_id, traj)
    result.duplicates_skipped += len(joined) - len(first)
    result.trajectories = list(first.values())
    return result


def _chunks(
    path: str | Path,
    fmt: str | None,
    teacher: str | None,
    mapping: Mapping[str, str] | str | None,
    chunk_size: int,
    hf_options: Mapping[str, Any] | None = None,
) -> Iterator[IngestResult]:
    """The input's chunks through its adapter. A directory (or a hub id, with fmt="hf") is an HF dataset whose rows
    are read in the named row format, or the detected one; hf_options only apply there."""
    check_options(hf_options)  # a usage error, raised before any record
    if fmt == "hf" and not Path(path).exists():  # a hub id rather than a folder
        return ingest_hf(str(path), teacher=teacher, mapping=mapping, chunk_size=chunk_size, hf_options=hf_options)
    p = require_path(Path(path))
    if p.is_dir() and fmt == "zeroeval":
        raise ValueError(f"{p} is a directory; zeroeval files are JSON lists (a directory is a save_to_disk folder)")
    if p.is_dir() or fmt == "hf":
        row_fmt = None if fmt in (None, "hf") else fmt
        return ingest_hf(p, teacher=teacher, mapping=mapping, chunk_size=chunk_size, fmt=row_fmt, hf_options=hf_options)
    if hf_options and any(hf_options.values()):
        raise ValueError(f"{p} is a file: config/split/revision apply to HF datasets (a hub id or a saved folder)")
    head = _head(p)
    plan = make_plan(fmt or detect_format(p), head, mapping)
    if plan.format == "zeroeval":  # upstream names files by model: the stem, unless a teacher is given
        teacher = teacher or p.stem or None
    return read_planned(iter_records(p), str(p), plan, teacher, chunk_size)
