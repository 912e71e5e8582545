"""How one input is read, decided once from its first records and the user's mapping: the row format and, for each
of our fields, the column (or dotted path) it comes from. The ingest prints it and the run records it.

    plan = make_plan("messages", head, {"answer": "messages.0.info.reference_answer"})
    plan.describe()   # "format messages; messages <- messages, answer <- messages.0.info.reference_answer"

Given a mapping, a column is a field only if it is mapped (plus the format's own structure: `messages`,
`conversations`, `generations`, and a table's required `problem` and `response` under their own names when they are
not mapped: their absence is the row's error, never a silent read); without one, each field is read under its own
name and the gold under the first of GOLD_COLUMNS the records hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rsr.curate.ingest._common import MISSING, lookup

TABLE_FIELDS = (
    "problem", "response", "reasoning", "teacher", "answer", "id", "system", "problem_id", "declared_answer",
    "correctness", "prompt", "tools",
)  # fmt: skip
CHAT_FIELDS = (
    "messages", "problem", "reasoning", "teacher", "answer", "id", "system", "problem_id", "declared_answer", "tools",
)  # fmt: skip
FIELDS = tuple(dict.fromkeys((*TABLE_FIELDS, *CHAT_FIELDS)))
GOLD_COLUMNS = ("answer", "expected_answer", "reference_answer", "ground_truth")  # golds found without a mapping
_TEXTS = ("problem", "response", "reasoning", "prompt", "messages")  # never two of these from one column
_OWN_NAME_SKIPS = {"messages": ("reasoning", "system"), "sharegpt": ("reasoning",)}  # read only when mapped
CORRECTNESS_COLUMNS = ("correctness_math_verify", "correctness")
ID_COLUMNS = ("uuid", "id")


@dataclass(frozen=True)
class ReadPlan:
    format: str  # the row format: messages | sharegpt | generations | zeroeval | table
    fields: dict[str, str]  # field -> the column or dotted path it is read from
    shown: tuple[str, ...] = ()  # the fields the first records hold (what describe() names)
    gold_found: bool = True  # a gold column was found (or mapped)

    def describe(self) -> str:
        pairs = ", ".join(f"{f} <- {self.fields[f]}" for f in self.shown) or "none of our fields"
        # only a fact here: golds may still come from --problems; the ingest's no-gold count says what to do
        gold = "" if self.gold_found else f"; no gold column in the file (looked for {', '.join(GOLD_COLUMNS)})"
        return f"format {self.format}; {pairs}{gold}"


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


def format_with_mapping(fmt: str, given: Mapping[str, str]) -> str:
    """A detected format read another way because of what the mapping names: `messages=` reads a chat from that
    column; `response=` or `prompt=` on a chat (or ZeroEval) file reads it as a table."""
    if "messages" in given and fmt not in ("messages", "sharegpt"):
        return "messages"
    if fmt == "zeroeval" and given:
        return "table"
    if fmt in ("messages", "sharegpt") and ({"response", "prompt"} & set(given)):
        return "table"
    return fmt


def make_plan(fmt: str, head: Sequence[Any], mapping: Mapping[str, str] | str | Sequence[str] | None) -> ReadPlan:
    """The plan for rows in `fmt` (already detected or given), from the first records and the mapping."""
    given = explicit_pairs(mapping)
    fmt = format_with_mapping(fmt, given)
    rows = [r for r in head if isinstance(r, dict)]
    if fmt == "zeroeval":
        fields = {"problem": "problem", "response": "output", "answer": "answer", "id": "id", "teacher": "generator"}
        return ReadPlan(fmt, fields, _present(fields, rows, ()), True)
    fields = {**_preset(fmt, rows), **given}
    if "messages" in given and fmt == "sharegpt":
        fields.pop("system", None)
    gold = fields.get("answer")
    if given:  # the required texts still under their own names, unless mapped or taken (absent: the row's error)
        used = set(fields.values())
        required = ("response",) if "prompt" in fields else ("problem", "response")
        for f in required if fmt in ("table", "generations") else ():
            if f not in fields and f not in used:
                fields[f] = f
    else:
        gold = next((c for c in GOLD_COLUMNS if _holds(rows, c)), None)
        used = set(fields.values()) | ({gold} if gold else set())
        own = CHAT_FIELDS if fmt in ("messages", "sharegpt") else TABLE_FIELDS
        for f in own:
            if f not in fields and f not in used and f not in _OWN_NAME_SKIPS.get(fmt, ()) and f != "answer":
                fields[f] = f
        if gold:
            fields["answer"] = gold
    _check_texts(fields)
    return ReadPlan(fmt, fields, _present(fields, rows, given), gold is not None and _holds(rows, gold))


def _preset(fmt: str, rows: list[dict]) -> dict[str, str]:
    """The columns a format's own structure lives in."""
    if fmt == "messages":
        return {"messages": "messages"}
    if fmt == "sharegpt":
        return {"messages": "conversations", "system": "system"}
    if fmt == "generations":
        out = {"response": "generations"}
        out["correctness"], out["id"] = "|".join(CORRECTNESS_COLUMNS), "|".join(ID_COLUMNS)  # per row, the first held
        return out
    return {}


def _check_texts(fields: Mapping[str, str]) -> None:
    for i, a in enumerate(_TEXTS):
        for b in _TEXTS[i + 1 :]:
            if a in fields and fields.get(b) == fields[a]:
                raise ValueError(f"mapping sends {a} and {b} to the same column {fields[a]!r}")


def _holds(rows: list[dict], column: str) -> bool:
    return any(lookup(r, column) not in (MISSING, None) for r in rows)


def _present(fields: Mapping[str, str], rows: list[dict], given: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(f for f, column in fields.items() if f in given or _holds(rows, column))
