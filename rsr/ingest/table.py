"""`table` adapter: flat rows (JSONL, JSON list, CSV/TSV, Parquet, HF) with a field mapping.

The mapping names, for each of our fields, the column holding it, e.g.
`{"problem": "question", "response": "output", "teacher": "model", "answer": "gold", "id": "qid"}`.
Fields left out of the mapping are looked up under their own name. Required: problem, response.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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
    pick_teacher,
    req_str,
)
from rsr.ingest._io import iter_records
from rsr.records import Message, Trajectory

FIELDS = ("problem", "response", "teacher", "answer", "id", "system", "problem_id", "declared_answer")
REQUIRED = ("problem", "response")


def parse_mapping(mapping: Mapping[str, str] | str | Sequence[str] | None) -> dict[str, str]:
    """A mapping dict, the string "problem=question response=output" or the CLI's ["problem=question", ...];
    a malformed item or an unknown field is a usage error (ValueError). Unmapped fields map to their own name."""
    if mapping is None:
        pairs: dict[str, str] = {}
    elif isinstance(mapping, Mapping):
        pairs = dict(mapping)
    else:
        items = mapping.replace(",", " ").split() if isinstance(mapping, str) else list(mapping)
        pairs = {}
        for item in items:
            key, sep, column = item.partition("=")
            key, column = key.strip(), column.strip()
            if not sep or not key or not column:
                raise ValueError(f"bad mapping item {item!r}: expected field=column, e.g. problem=question")
            pairs[key] = column
    unknown = sorted(set(pairs) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown mapping field(s) {unknown}; expected some of {list(FIELDS)}")
    return {f: pairs.get(f, f) for f in FIELDS}


def _label(field: str, column: str) -> str:
    return f"column `{column}`" + (f" (mapped to {field})" if column != field else "")


def record_to_trajectory(
    value: Any, line: int, *, source_file: str, teacher: str | None, mapping: dict[str, str]
) -> Trajectory:
    rec = as_record(value)
    for field in REQUIRED:
        if mapping[field] not in rec:
            hint = "" if mapping[field] != field else " (pass a mapping, e.g. problem=question response=output)"
            raise RecordError(f"missing {_label(field, mapping[field])}{hint}")
    problem = req_str(rec, mapping["problem"], _label("problem", mapping["problem"]))
    response = req_str(rec, mapping["response"], _label("response", mapping["response"]))
    system = opt_str(rec, mapping["system"], _label("system", mapping["system"]))
    messages = [Message(role="system", content=system)] if system else []
    messages += [Message(role="user", content=problem), Message(role="assistant", content=response)]
    return Trajectory.build(
        teacher=pick_teacher(rec.get(mapping["teacher"]), teacher, _label("teacher", mapping["teacher"])),
        problem=problem,
        messages=messages,
        problem_id=opt_id(rec, mapping["problem_id"], _label("problem_id", mapping["problem_id"])),
        source_id=opt_id(rec, mapping["id"], _label("id", mapping["id"])),
        gold_answer=answer_str(rec.get(mapping["answer"]), _label("answer", mapping["answer"])),
        declared_answer=answer_str(
            rec.get(mapping["declared_answer"]), _label("declared_answer", mapping["declared_answer"])
        ),
        source_file=source_file,
        source_line=line,
    )


def ingest_table(
    path: Path, *, teacher: str | None = None, mapping: Mapping[str, str] | str | None = None, chunk_size: int = CHUNK
) -> Iterator[IngestResult]:
    source, fields = str(path), parse_mapping(mapping)
    if fields["problem"] == fields["response"]:
        raise ValueError(f"mapping sends problem and response to the same column {fields['problem']!r}")
    return collect(
        iter_records(path),
        source,
        lambda value, line: record_to_trajectory(value, line, source_file=source, teacher=teacher, mapping=fields),
        chunk_size,
    )
