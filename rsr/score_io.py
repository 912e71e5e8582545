"""`rsr score` input and output: conversations from JSONL/Parquet, one JSON line of statistics per record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rsr.metric import TrajectoryStats, dataset_rsr
from rsr.student import ScoredTrajectory


@dataclass
class ScoreInput:
    line: int  # 1-based line (JSONL) or 0-based row (Parquet)
    id: str | None
    messages: list | None
    error: str | None = None


def read_score_input(path: Path) -> list[ScoreInput]:
    """Every record of the file, in order; unreadable ones carry an error naming the file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [_record(path, i, row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    with open(path, "rb") as fh:
        return [_record(path, n, raw) for n, raw in enumerate(fh, start=1) if raw.strip()]


def _record(path: Path, n: int, row: object) -> ScoreInput:
    """One record from a Parquet row, or from a JSONL line (bytes, parsed here)."""
    if isinstance(row, bytes):
        try:
            row = json.loads(row.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return ScoreInput(n, None, None, f"{path}:{n}: not valid JSON ({err})")
    if not isinstance(row, dict):
        return ScoreInput(n, None, None, f"{path}:{n}: a record must be a JSON object")
    rid = None if row.get("id") is None else str(row["id"])
    messages = row.get("messages")
    if not isinstance(messages, list):
        return ScoreInput(n, rid, None, f"{path}:{n}: `messages` must be a list of {{role, content}}")
    return ScoreInput(n, rid, messages)


def output_row(item: ScoreInput, result: ScoredTrajectory | None) -> dict:
    rid = item.id if item.id is not None else str(item.line)
    if item.error:
        return {"id": rid, "error": item.error}
    if result is None or result.stats is None:
        return {"id": rid, "error": result.error if result else "not scored"}
    return {"id": rid, **result.stats.as_dict(), "dtype": result.dtype, "max_tokens": result.max_tokens}


def summary(results: list[ScoredTrajectory]) -> tuple[int, int, float]:
    stats: list[TrajectoryStats] = [r.stats for r in results if r.stats is not None]
    return len(stats), len(results) - len(stats), dataset_rsr(stats)
