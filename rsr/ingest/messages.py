"""`messages` adapter: records holding an HF chat (`messages`: [{role, content}, ...]) in JSONL, a JSON list or Parquet.

Optional fields: `id` (-> source_id), `teacher` (else the teacher argument), `answer` (gold), `problem_id`.
The problem is the last user turn; the response is the last assistant turn after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rsr.ingest._common import (
    CHUNK,
    IngestResult,
    RecordError,
    answer_str,
    as_record,
    collect,
    opt_id,
    opt_str,
    parse_messages,
    pick_teacher,
    split_chat,
)
from rsr.ingest._io import iter_records
from rsr.records import Trajectory


def record_to_trajectory(value: Any, line: int, *, source_file: str, teacher: str | None) -> Trajectory:
    rec = as_record(value)
    if "messages" not in rec:
        raise RecordError("missing `messages`")
    messages = parse_messages(rec["messages"])
    problem = split_chat(messages)
    return Trajectory.build(
        teacher=pick_teacher(rec.get("teacher"), teacher),
        problem=problem,
        messages=messages,
        problem_id=opt_str(rec, "problem_id"),
        source_id=opt_id(rec, "id"),
        gold_answer=answer_str(rec.get("answer")),
        declared_answer=answer_str(rec.get("declared_answer"), "`declared_answer`"),
        source_file=source_file,
        source_line=line,
    )


def ingest_messages(path: Path, *, teacher: str | None = None, chunk_size: int = CHUNK) -> Iterator[IngestResult]:
    source = str(path)
    return collect(
        iter_records(path),
        source,
        lambda value, line: record_to_trajectory(value, line, source_file=source, teacher=teacher),
        chunk_size,
    )
