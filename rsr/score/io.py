"""`rsr score` input and output: records read by the same reader as the DAG's ingest (every format it knows), one
JSON line of statistics per trajectory (a row with several generations gives several), one per rejected record."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from rsr.curate.ingest import iter_ingest
from rsr.metric import TrajectoryStats, dataset_rsr
from rsr.records import Trajectory
from rsr.score.student import ScoredTrajectory, Student

# The coverage and rendering a score records, written beside its statistics.
_COVERAGE = ("n_reasoning_tokens", "n_answer_tokens", "n_tool_tokens", "render")


@dataclass
class ScoreInput:
    """What a file holds for `rsr score`: its trajectories in file order, the records it rejected (line, reason),
    and how many records repeated an earlier one exactly (scored once)."""

    trajectories: list[Trajectory] = field(default_factory=list)
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)  # (line, the record's id, why)
    repeats: int = 0
    plan: str = ""  # how it was read: the format and the column of each field

    @property
    def records(self) -> int:
        return len(self.trajectories) + self.repeats + len(self.rejected)


def read_score_input(path: Path, fmt: str | None = None, mapping: Mapping[str, str] | None = None) -> ScoreInput:
    """Every record of the file, through the ingest's adapters (format detected unless given)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out = ScoreInput()
    for chunk in iter_ingest(path, teacher="input", fmt=fmt, mapping=mapping):
        out.trajectories += chunk.trajectories
        out.rejected += [(r.source_line, _own_id(r.raw), f"{path}:{r.source_line}: {r.reason}") for r in chunk.rejected]
        out.repeats += chunk.duplicates_skipped
        out.plan = chunk.plan
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
            if r.dropped_tool_calls:  # the coverage says what was not scored: the template drops tool calls
                row["dropped_tool_calls"] = r.dropped_tool_calls
        if t.dropped_turns:  # turns after the last assistant turn, dropped at reading (an agent's closing turn)
            row["dropped_turns"] = t.dropped_turns
        rows.append((t.source_line, t.generation or 0, row))
    return [row for *_, row in sorted(rows, key=lambda x: x[:2])]


TOKEN_COLUMNS = {  # one row per scored token; the record's sums are made from exactly these values
    "id": "string",  # the record's id, as in the JSONL output
    "trajectory_id": "string",
    "position": "int32",  # the token's position in the rendered sequence (predicted from position - 1)
    "token_id": "int32",
    "token": "string",  # the token's text
    "kind": "string",  # reasoning | answer | tool
    "rank": "int64",  # unclipped; the score's sum_rank sums min(rank, r_max)
    "surprisal": "float32",  # natural log, as computed
    "entropy": "float32",  # the student's full-vocabulary entropy at the position that predicts it (nats)
}
SCORE_CHUNK = 64  # trajectories scored per call: what is held at once when per-token rows are written


def score_stream(
    student: Student, trajectories: list[Trajectory], max_tokens: int | None, tokens: Path | None
) -> list[ScoredTrajectory]:
    """Score in chunks; with `tokens`, per-token rows are appended to that Parquet file as each chunk finishes, so
    memory stays flat however many tokens there are. Results keep only their sums."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in TOKEN_COLUMNS.items()])
    results: list[ScoredTrajectory] = []
    with (
        pq.ParquetWriter(tokens, schema) if tokens else nullcontext() as writer,
        tqdm(total=len(trajectories), unit="traj", desc=f"scoring ({student.ref})") as bar,
    ):
        for start in range(0, len(trajectories), SCORE_CHUNK):
            chunk = trajectories[start : start + SCORE_CHUNK]
            got = student.score(
                [t.messages for t in chunk], max_tokens=max_tokens, progress=False, keep_tokens=bool(tokens),
                **tools_of(chunk),
            )  # fmt: skip
            if writer is not None:
                writer.write_table(pa.Table.from_pylist(_token_rows(student, chunk, got), schema=schema))
            for r in got:
                r.tokens = None  # written: do not hold them
            results += got
            bar.update(len(chunk))
    return results


def tools_of(trajectories: list[Trajectory]) -> dict:
    """`tools=` for Student.score, one list (or None) per chat, passed only when some trajectory offers tools: the
    student's chat template renders them into the prompt, as apply_chat_template(..., tools=...) does."""
    tools = [t.tools for t in trajectories]
    return {"tools": tools} if any(tools) else {}


def _token_rows(student: Student, chunk: list[Trajectory], results: list[ScoredTrajectory]) -> list[dict]:
    rows = []
    for t, r in zip(chunk, results, strict=True):
        if r.tokens is None:
            continue
        tk = r.tokens
        texts = student.tokenizer.batch_decode([[i] for i in tk.ids])
        common = {"id": record_id(t), "trajectory_id": t.trajectory_id}
        entropies = tk.entropies.tolist() if tk.entropies is not None else [None] * len(tk.ids)
        for pos, tid, text, kind, rank, s, h in zip(
            tk.positions, tk.ids, texts, tk.kinds, tk.ranks.tolist(), tk.surprisals.tolist(), entropies, strict=True
        ):
            row = {"position": pos, "token_id": tid, "token": text, "kind": kind, "rank": rank, "surprisal": s}
            rows.append(common | row | {"entropy": h})
    return rows


def tokens_written(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def summary(results: list[ScoredTrajectory]) -> tuple[int, int, int, float]:
    """(scored, failed, truncated among the scored, dataset RSR over the scored that are not truncated)."""
    stats: list[TrajectoryStats] = [r.stats for r in results if r.stats is not None]
    whole = [s for s in stats if not s.truncated]
    return len(stats), len(results) - len(stats), len(stats) - len(whole), dataset_rsr(whole)
