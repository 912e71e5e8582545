"""`rsr score` input and output: records read by the same reader as the DAG's ingest (every format it knows), one
JSON line of statistics per trajectory (a row with several generations gives several), one per rejected record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rsr.ingest import iter_ingest
from rsr.metric import TrajectoryStats, dataset_rsr
from rsr.records import Trajectory
from rsr.student import ScoredTrajectory

# The coverage and rendering a score records, written beside its statistics.
_COVERAGE = ("n_reasoning_tokens", "n_answer_tokens", "n_tool_tokens", "render")


@dataclass
class ScoreInput:
    """What a file holds for `rsr score`: its trajectories in file order, the records it rejected (line, reason),
    and how many records repeated an earlier one exactly (scored once)."""

    trajectories: list[Trajectory] = field(default_factory=list)
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)  # (line, the record's id, why)
    repeats: int = 0


def read_score_input(path: Path, fmt: str | None = None, mapping: Mapping[str, str] | None = None) -> ScoreInput:
    """Every record of the file, through the ingest's adapters (format detected unless given)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = ScoreInput()
    for chunk in iter_ingest(path, teacher="input", fmt=fmt, mapping=mapping):
        out.trajectories += chunk.trajectories
        out.rejected += [(r.source_line, _own_id(r.raw), f"{path}:{r.source_line}: {r.reason}") for r in chunk.rejected]
        out.repeats += chunk.duplicates_skipped
    return out


def _own_id(raw: str) -> str | None:
    """A rejected record's own `id`, when its raw text is still a JSON object that has one."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    rid = value.get("id") if isinstance(value, dict) else None
    return None if rid is None else str(rid)


def record_id(t: Trajectory) -> str:
    """The record's own id (else its line), with the generation index for rows holding several."""
    rid = t.source_id if t.source_id is not None else str(t.source_line)
    return rid if t.generation is None else f"{rid}#{t.generation}"


def output_rows(items: ScoreInput, results: list[ScoredTrajectory], student_id: str) -> list[dict]:
    """One row per trajectory and per rejected record, in file order."""
    rows = [(line, 0, {"id": rid or str(line), "line": line, "error": why}) for line, rid, why in items.rejected]
    for t, r in zip(items.trajectories, results, strict=True):
        row = {"id": record_id(t), "line": t.source_line}
        if r.stats is None:
            row["error"] = r.error or "not scored"
        else:
            made = r.to_score(t.trajectory_id, student_id).model_dump(include=set(_COVERAGE))
            row |= r.stats.as_dict() | made | {"dtype": r.dtype, "max_tokens": r.max_tokens}
        rows.append((t.source_line, t.generation or 0, row))
    return [row for *_, row in sorted(rows, key=lambda x: x[:2])]


def summary(results: list[ScoredTrajectory]) -> tuple[int, int, int, float]:
    """(scored, failed, truncated among the scored, dataset RSR over the scored that are not truncated)."""
    stats: list[TrajectoryStats] = [r.stats for r in results if r.stats is not None]
    whole = [s for s in stats if not s.truncated]
    return len(stats), len(results) - len(stats), len(stats) - len(whole), dataset_rsr(whole)
