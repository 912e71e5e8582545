"""Which adapter reads a row, by one set of rules for every container (JSONL, JSON list, Parquet, HF datasets)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from rsr.curate.ingest import generations, messages, sharegpt, table, zeroeval
from rsr.curate.ingest._common import RecordFn

ROW_FORMATS = ("messages", "sharegpt", "generations", "zeroeval", "table")


def detect_rows(records: list[Any], *, json_list: bool = False) -> str:
    """The row format most of these sniffed records are in. zeroeval: a JSON list of `output` + `problem`;
    generations: a `generations` list (before messages: OpenR1 rows also hold one of them as `messages`);
    messages; sharegpt: `conversations`; else table (needs a mapping)."""
    rows = [r for r in records if isinstance(r, dict)]

    def most(test: Callable[[dict], bool]) -> bool:  # a few bad records must not flip the format
        return bool(rows) and 2 * sum(1 for r in rows if test(r)) > len(rows)

    if json_list and most(lambda r: "output" in r and "problem" in r):
        return "zeroeval"
    if most(lambda r: isinstance(r.get("generations"), list)):
        return "generations"
    if most(lambda r: "messages" in r):
        return "messages"
    if most(lambda r: "conversations" in r):
        return "sharegpt"
    return "table"


def with_mapping(fmt: str, mapping: Mapping[str, str] | str | None) -> str:
    """A detected chat format read as a table when the caller gave a mapping: the mapping says which columns to
    read, and ignoring it would silently read others. generations takes a mapping over its preset."""
    if mapping and fmt not in ("table", "generations"):
        return "table"
    return fmt


def adapter_for(
    fmt: str, *, source_file: str, teacher: str | None, mapping: Mapping[str, str] | str | None
) -> RecordFn:
    """The per-record function of a row format (a bad mapping is a ValueError now, before any record)."""
    if fmt == "table":
        fields = table.parse_mapping(mapping)
        return partial(table.record_to_trajectories, source_file=source_file, teacher=teacher, mapping=fields)
    if fmt == "generations":
        return generations.adapter(mapping, source_file=source_file, teacher=teacher)
    module = {"messages": messages, "sharegpt": sharegpt, "zeroeval": zeroeval}[fmt]
    return partial(module.record_to_trajectory, source_file=source_file, teacher=teacher)
