"""`table` adapter: flat rows (JSONL, JSON list, CSV/TSV, Parquet, HF) with a field mapping.

The mapping names, for each of our fields, the column holding it, e.g.
`{"problem": "question", "response": "output", "teacher": "model", "answer": "gold", "id": "qid"}`.
Fields left out of the mapping are looked up under their own name. Required: problem, response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rsr.ingest._common import RecordError, answer_str, opt_id, opt_str, pick_teacher, req_str
from rsr.records import Message, Trajectory

FIELDS = ("problem", "response", "teacher", "answer", "id", "system", "problem_id", "declared_answer")
REQUIRED = ("problem", "response")


def parse_mapping(mapping: Mapping[str, str] | str | Sequence[str] | None) -> dict[str, str]:
    """A mapping dict, the string "problem=question response=output" or the CLI's ["problem=question", ...];
    a malformed item, an unknown field or problem and response in one column is a usage error (ValueError).
    Unmapped fields map to their own name."""
    if mapping is None or isinstance(mapping, Mapping):
        pairs = dict(mapping or {})
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
    fields = {f: pairs.get(f, f) for f in FIELDS}
    if fields["problem"] == fields["response"]:
        raise ValueError(f"mapping sends problem and response to the same column {fields['problem']!r}")
    return fields


def record_to_trajectory(
    rec: dict, line: int, *, source_file: str, teacher: str | None, mapping: dict[str, str]
) -> Trajectory:
    def get(field: str) -> tuple[Any, str]:
        """The value of our field in this row, and how an error names it."""
        column = mapping[field]
        return rec.get(column), f"column `{column}`" + (f" (mapped to {field})" if column != field else "")

    for field in REQUIRED:
        if mapping[field] not in rec:
            hint = "" if mapping[field] != field else " (pass a mapping, e.g. problem=question response=output)"
            raise RecordError(f"missing {get(field)[1]}{hint}")
    problem = req_str(*get("problem"))
    response = req_str(*get("response"))
    system = opt_str(*get("system"))
    messages = [Message(role="system", content=system)] if system else []
    messages += [Message(role="user", content=problem), Message(role="assistant", content=response)]
    return Trajectory.build(
        teacher=pick_teacher(*get("teacher"), teacher),
        problem=problem,
        messages=messages,
        problem_id=opt_id(*get("problem_id")),
        source_id=opt_id(*get("id")),
        gold_answer=answer_str(*get("answer")),
        declared_answer=answer_str(*get("declared_answer")),
        source_file=source_file,
        source_line=line,
    )
