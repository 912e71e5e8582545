"""Which adapter reads a row, by one set of rules for every container (JSONL, JSON list, Parquet, HF datasets)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from rsr.curate.ingest import messages, table, zeroeval
from rsr.curate.ingest._common import IngestResult, RecordFn, collect
from rsr.curate.ingest._io import RawRecord
from rsr.curate.ingest.plan import ReadPlan

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


def adapter_for(plan: ReadPlan, *, source_file: str, teacher: str | None) -> RecordFn:
    """The per-record function of a plan's row format, reading the plan's columns. generations is the table
    adapter with its preset columns; sharegpt the messages adapter with ShareGPT's roles."""
    if plan.format in ("table", "generations"):
        return partial(table.record_to_trajectories, source_file=source_file, teacher=teacher, mapping=plan.fields)
    if plan.format in ("messages", "sharegpt"):
        one = partial(messages.record_to_trajectory, source_file=source_file, teacher=teacher, fields=plan.fields)
        return partial(one, sharegpt=plan.format == "sharegpt")
    return partial(zeroeval.record_to_trajectory, source_file=source_file, teacher=teacher)


def read_planned(
    raws: Iterator[RawRecord], source: str, plan: ReadPlan, teacher: str | None, chunk_size: int
) -> Iterator[IngestResult]:
    """A source's raw records through the plan's adapter, each chunk stamped with the plan it was read by."""
    one = adapter_for(plan, source_file=source, teacher=teacher)
    for chunk in collect(raws, source, one, chunk_size):
        chunk.format, chunk.fields, chunk.plan = plan.format, dict(plan.fields), plan.describe()
        yield chunk
