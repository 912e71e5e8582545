"""Score every stored trajectory that lacks a score for a student, shard by shard, storing as shards finish."""

from __future__ import annotations

from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from rsr.config import RaySpec, ScoringSpec, StateDir, StudentSpec
from rsr.metric import METRIC_VERSION, R_MAX
from rsr.store import Store
from tasks.score import register_student, score_shard


def _task_runner(ray: RaySpec | None):
    if ray is None:
        # One shard at a time in-process: torch already uses every core for each batch.
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_ray import RayTaskRunner

    init = {"num_cpus": 2} if ray.address is None else {}
    return RayTaskRunner(address=ray.address, init_kwargs=init)


@flow(name="score-student")
def score_student(
    state: StateDir,
    run_id: str,
    student: StudentSpec,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    teacher: str | None = None,
) -> dict:
    """Only (trajectory, student digest, metric version, r_max) keys without a score are computed, so a re-run
    after a crash redoes at most the shards that were in flight."""
    scoring = scoring or ScoringSpec()
    info = register_student(state.duckdb, student)
    student_id = info["student_id"]
    with Store.open(state.duckdb) as store:
        todo = store.unscored(student_id, METRIC_VERSION, R_MAX, teacher=teacher)
        trajectories = store.get_trajectories(todo)
    items = [(t.trajectory_id, [m.model_dump() for m in t.messages]) for t in trajectories]
    shards = [items[i : i + scoring.shard_size] for i in range(0, len(items), scoring.shard_size)]
    task = score_shard.with_options(retries=scoring.retries)
    if ray is not None:
        # Each scoring task asks Ray for its GPU share, so GPU nodes take the scoring and nothing else.
        from prefect_ray.context import remote_options

        with remote_options(num_gpus=ray.num_gpus_per_task, num_cpus=ray.num_cpus_per_task):
            futures = [task.submit(student, student_id, s, scoring.batch_tokens, scoring.max_tokens) for s in shards]
    else:
        futures = [task.submit(student, student_id, s, scoring.batch_tokens, scoring.max_tokens) for s in shards]
    stored = errors = 0
    for future in as_completed(futures):
        scores = future.result()
        with Store.open(state.duckdb) as store:  # the flow is the only writer; workers never open DuckDB
            stored += store.add_scores(scores, run_id)
        errors += sum(1 for s in scores if s.error)
    return {"student_id": student_id, "ref": student.ref, "scored": stored, "errors": errors, "shards": len(shards)}


def run_score_student(state: StateDir, run_id: str, student: StudentSpec, scoring, ray, teacher=None) -> dict:
    return score_student.with_options(task_runner=_task_runner(ray))(state, run_id, student, scoring, ray, teacher)
