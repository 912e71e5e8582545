"""Score every stored trajectory that lacks a score for a student, shard by shard, storing as shards finish."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

from rsr.config import RaySpec, ScoringSpec
from rsr.metric import METRIC_VERSION, R_MAX
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.writer import Store
from rsr_flows.executors import executor_for, finished
from rsr_flows.publish import Published
from rsr_tasks.score import register_student, score_shard


@dataclass(frozen=True)
class Scored:
    """One student's scoring run: what was stored, in which setting, and what the user must be told."""

    student_id: str
    ref: str
    scored: int  # scores stored (failed ones included)
    errors: int
    shards: int
    dtype: str
    max_tokens: int
    notes: list[str] = field(default_factory=list)
    published: Published | None = None  # rescore with publish: the dataset its new scores made
    filled: int = 0  # rows scored before the companion metrics that got them (scoring.fill_metrics)


@flow(name="score-student")
def score_student(
    home: StateDir,
    run_id: str,
    student: StudentSpec,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    include_contaminated: bool = False,
) -> Scored:
    """Only keys (trajectory, student digest, dtype, max_tokens, r_max, metric version) without a score are
    computed, shard by shard: the driver holds one shard's trajectories at a time, and a re-run after a crash
    redoes at most the shards that were in flight. Trajectories holding a benchmark problem (decontaminate) are
    not scored unless `include_contaminated`."""
    scoring = scoring or ScoringSpec()
    registered = register_student(home.duckdb, student)
    info = registered.info
    # The effective setting is part of every score's key: None would mean "the context" and never match a row.
    # Positions past the student's context were never trained: a larger limit is capped, and said so.
    context = info["context_length"]
    key = {"dtype": info["dtype"], "max_tokens": min(scoring.max_tokens or context, context)}
    notes = [f"max_tokens {scoring.max_tokens} is above {student.ref}'s context of {context}: capped to {context}"]
    notes = notes if (scoring.max_tokens or 0) > context else []
    if info.get("render_mode") == "generation":  # the user must know what the template does to what is scored
        notes.append(f"{student.ref}: {info['render_note']}")
    for note in notes:
        get_run_logger().warning(note)
    with Store.open(home.duckdb) as store:
        todo = store.unscored(
            registered.student_id, METRIC_VERSION, R_MAX, **key, include_contaminated=include_contaminated
        )
        # On request only (the default costs nothing more): rows scored before the companion metrics existed.
        fill = scoring.fill_metrics
        refill = store.missing_metrics(registered.student_id, METRIC_VERSION, R_MAX, **key) if fill else []
    todo += refill
    size = scoring.shard_size
    task = score_shard.with_options(retries=scoring.retries)
    shard_args = (
        (student, registered.student_id, _shard(home, todo[i : i + size]), key["max_tokens"])
        for i in range(0, len(todo), size)
    )
    stored = errors = filled = 0
    api_url = str(FlowRunContext.get().client.api_url).rstrip("/")  # where a Ray worker reports its task runs
    for scores in finished(executor_for(ray), task, shard_args, api_url):
        with Store.open(home.duckdb) as store:  # the flow is the only writer; workers never open DuckDB
            stored += store.add_scores(scores, run_id)
            filled += store.fill_metrics(scores) if refill else 0
        errors += sum(1 for s in scores if s.error)
    if refill:
        notes.append(f"companion metrics (mean_entropy, top1_share) filled in on {filled} of {len(refill)} older rows")
    shards = -(-len(todo) // size)
    return Scored(registered.student_id, student.ref, stored, errors, shards, **key, notes=notes, filled=filled)


def _shard(home: StateDir, ids: list[str]) -> list[tuple[str, list[dict], list[dict] | None]]:
    with Store.open(home.duckdb) as store:
        return [(t.trajectory_id, [m.model_dump() for m in t.messages], t.tools) for t in store.get_trajectories(ids)]


def run_score_student(
    home: StateDir, run_id: str, student: StudentSpec, scoring, ray, include_contaminated: bool = False
) -> Scored:
    """score_student where `ray` says its shards run (flows/executors.py): in this process, or on Ray."""
    executor = executor_for(ray)
    with executor.session():
        runner = executor.task_runner()
        return score_student.with_options(task_runner=runner)(home, run_id, student, scoring, ray, include_contaminated)
