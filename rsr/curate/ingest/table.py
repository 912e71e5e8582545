"""`table` adapter: flat rows (JSONL, JSON list, CSV/TSV, Parquet, HF) with a field mapping.

The mapping names, for each of our fields, the column holding it, e.g.
`{"problem": "question", "response": "output", "teacher": "model", "answer": "gold", "id": "qid"}`.
Fields left out of the mapping are looked up under their own name, unless that column is mapped to another field.
Required: problem, response.

Reasoning in its own column (`reasoning`) is joined into the response (join_reasoning). A list column expands:
`response=generations` gives one trajectory per element; a `reasoning` list pairs with a response list of equal
length, and a scalar or one-element list on either side is shared by all (s1K's one-element
`thinking_trajectories` beside a string `attempt`). `correctness`: a bool, or a list of bools aligned with the
responses, kept as teacher_correct.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from rsr.curate.ingest._common import (
    RecordError,
    answer_str,
    invalid_reason,
    opt_id,
    opt_str,
    pick_teacher,
    req_str,
    type_name,
)
from rsr.records import THINK_OPEN, Message, Trajectory, join_reasoning

FIELDS = (
    "problem", "response", "reasoning", "teacher", "answer", "id", "system", "problem_id", "declared_answer",
    "correctness",
)  # fmt: skip
REQUIRED = ("problem", "response")
_TEXTS = ("problem", "response", "reasoning")  # never two of these from one column
_BOOLS = {"true": True, "false": False, "1": True, "0": False}  # CSV cells hold text


def explicit_pairs(mapping: Mapping[str, str] | str | Sequence[str] | None) -> dict[str, str]:
    """The fields a mapping names: a dict, the string "problem=question response=output" or the CLI's
    ["problem=question", ...]; a malformed item or an unknown field is a usage error (ValueError)."""
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
    return pairs


def parse_mapping(
    mapping: Mapping[str, str] | str | Sequence[str] | None, defaults: Mapping[str, str] | None = None
) -> dict[str, str]:
    """field -> column for every field read: the mapping's, else `defaults`' (a format's preset), else the field's
    own name - but a field is left out (not read) when its own-name column is mapped to another field, so that
    `response=reasoning` never also reads that column as the reasoning. Two text fields in one column: ValueError."""
    fields = {**(defaults or {}), **explicit_pairs(mapping)}
    for a in _TEXTS:
        for b in _TEXTS[_TEXTS.index(a) + 1 :]:
            if a in fields and fields.get(b) == fields[a]:
                raise ValueError(f"mapping sends {a} and {b} to the same column {fields[a]!r}")
    used = set(fields.values())
    for field in FIELDS:
        if field not in fields and field not in used:
            fields[field] = field
    return {f: fields[f] for f in FIELDS if f in fields}


def record_to_trajectories(
    rec: dict, line: int, *, source_file: str, teacher: str | None, mapping: dict[str, str]
) -> list[Trajectory | RecordError]:
    """One trajectory per response (a list column gives several, each with its generation index); a bad
    generation is one RecordError in the list, a problem with the whole row is raised."""

    def get(field: str) -> tuple[Any, str]:
        """The value of our field in this row, and how an error names it."""
        column = mapping.get(field)
        if column is None:
            return None, field
        return rec.get(column), f"column `{column}`" + (f" (mapped to {field})" if column != field else "")

    for field in REQUIRED:
        if mapping[field] not in rec:
            hint = "" if mapping[field] != field else " (pass a mapping, e.g. problem=question response=output)"
            raise RecordError(f"missing {get(field)[1]}{hint}")
    problem = req_str(*get("problem"))
    (response_value, response_what), (reasoning_value, reasoning_what) = get("response"), get("reasoning")
    if response_value is None:
        req_str(response_value, response_what)  # raises "missing column ..."
    responses, reasonings = _listed(response_value, response_what), _listed(reasoning_value, reasoning_what)
    n = _width(responses, reasonings, response_what, reasoning_what)
    correct = _correctness(*get("correctness"), n)
    system = opt_str(*get("system"))
    common = {
        "teacher": pick_teacher(*get("teacher"), teacher),
        "problem": problem,
        "problem_id": opt_id(*get("problem_id")),
        "source_id": opt_id(*get("id")),
        "gold_answer": answer_str(*get("answer")),
        "declared_answer": answer_str(*get("declared_answer")),
        "source_file": source_file,
        "source_line": line,
    }
    several = isinstance(response_value, list) or n > 1  # a row of generations: each one numbered
    out: list[Trajectory | RecordError] = []
    for i in range(n):
        response = responses[i % len(responses)]  # a one-item side is shared by all
        reasoning = reasonings[i % len(reasonings)] if reasonings else None
        try:
            content = _content(response, reasoning, response_what, reasoning_what)
            turns = [Message(role="system", content=system)] if system else []
            turns += [Message(role="user", content=problem), Message(role="assistant", content=content)]
            gen = i if several else None
            out.append(Trajectory.build(messages=turns, generation=gen, teacher_correct=correct[i], **common))
        except RecordError as e:
            out.append(RecordError(f"generation {i} of {n}: {e}") if several else e)
        except ValidationError as e:
            out.append(RecordError(f"generation {i} of {n}: {invalid_reason(e)}" if several else invalid_reason(e)))
    return out


def _listed(value: Any, what: str) -> list[Any]:
    """A column's values: a list as it is (an empty one is an error), a scalar as one, null as none."""
    if value is None:
        return []
    if isinstance(value, list):
        if not value:
            raise RecordError(f"{what} is an empty list")
        return value
    return [value]


def _width(responses: list, reasonings: list, response_what: str, reasoning_what: str) -> int:
    """How many trajectories the row gives: the responses and reasonings pair up, one item is shared by all."""
    n, m = len(responses), len(reasonings)
    if m in (0, 1) or n == 1 or m == n:
        return max(n, m)
    raise RecordError(f"{reasoning_what} has {m} items but {response_what} has {n}: they must pair up")


def _content(response: Any, reasoning: Any, response_what: str, reasoning_what: str) -> str:
    """One response's text with its reasoning joined in front; reasoning both apart and inline is ambiguous."""
    response = req_str(response, response_what)
    if reasoning is None or opt_str(reasoning, reasoning_what) is None:
        return response
    if THINK_OPEN in response:
        raise RecordError(
            f"{reasoning_what} is given but {response_what} already holds a {THINK_OPEN} block: ambiguous"
        )
    return join_reasoning(reasoning, response)


def _correctness(value: Any, what: str, n: int) -> list[bool | None]:
    """teacher_correct for each of the n responses: a list of equal length, or one flag for one response."""
    if value is None:
        return [None] * n
    values = value if isinstance(value, list) else [value]
    if len(values) != n:
        raise RecordError(f"{what} has {len(values)} value(s) but the row has {n} response(s): they must align")
    return [_flag(v, what) for v in values]


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    if isinstance(value, str) and not value.strip():
        return None
    raise RecordError(f"{what} must hold booleans, got {type_name(value)} {str(value)[:20]!r}")
