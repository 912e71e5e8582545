"""Score every stored trajectory that lacks a score for a student, shard by shard, storing as shards finish."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

import rsr.metric
import rsr_tasks.score
from rsr.config import RaySpec, ScoringSpec
from rsr.metric import METRIC_VERSION, R_MAX
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.writer import Store
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


# What a Ray worker needs from the flow's environment: where converted students live (RSR_MODELS, else
# RSR_HOME/models), the Hugging Face cache and offline switches, quiet Prefect. Never the DuckDB path: workers
# only compute. Ray workers on other hosts do not inherit the driver's environment, so it travels explicitly.
FORWARDED_ENV = (
    "RSR_HOME",
    "RSR_MODELS",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "DO_NOT_TRACK",
    "PREFECT_LOGGING_LEVEL",
)


def ray_init_kwargs(ray: RaySpec) -> dict:
    """ray.init arguments (used when this process starts or joins Ray; ignored where Ray is already up)."""
    if ray.address is None:
        # A temporary local Ray instance for this flow run (a laptop, a test): one model per CPU, at most 8.
        # "local": never join a cluster that `ray start` left running on this host (use "auto" for that).
        return {"address": "local", "num_cpus": min(os.cpu_count() or 1, 8), "include_dashboard": False}
    # A cluster's workers may run another checkout (or none): ship ours, so they run this code. Local paths are
    # only allowed in the job's runtime_env, hence here and not per task. Dependencies (torch, transformers,
    # prefect, the embedded student's wheel) must be installed on the cluster's hosts.
    # Ray names a shipped folder's module by the folder: tasks/ installs as rsr_tasks, so it ships as a copy so named.
    shipped = Path(tempfile.mkdtemp(prefix="rsr-ray-")) / "rsr_tasks"
    shutil.copytree(Path(rsr_tasks.score.__file__).parent, shipped, ignore=shutil.ignore_patterns("__pycache__"))
    modules = [str(Path(rsr.metric.__file__).parent), str(shipped)]
    return {"runtime_env": {"py_modules": modules, "excludes": ["__pycache__", "*.pyc"]}}


def ray_remote_options(ray: RaySpec, api_url: str | None = None) -> dict:
    """Ray options for one scoring task: its GPU/CPU share, a long-lived worker, and the env it needs."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return {
        "num_gpus": ray.num_gpus_per_task,
        "num_cpus": ray.num_cpus_per_task,
        # Ray ends a GPU task's worker after each call by default (max_calls=1): the model would be loaded
        # again for every shard. 0 = unlimited, so the lru_cache in rsr_tasks.score keeps one model per worker.
        "max_calls": 0,
        # Merged with the job's runtime_env (its py_modules stay).
        "runtime_env": {"env_vars": env},
    }


def _check_cluster(ray: RaySpec, api_url: str) -> None:
    """Warn about what would otherwise fail late or wait forever."""
    import ray as ray_api

    logger = get_run_logger()
    host = urlparse(api_url).hostname
    if ray.address not in (None, "auto", "local") and host in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "Ray workers on other hosts cannot reach this flow's Prefect API at %s: run `prefect server start "
            "--host 0.0.0.0` on the head and set PREFECT_API_URL=http://HEAD:4200/api (docs/scaling.md)",
            api_url,
        )
    gpus = ray_api.cluster_resources().get("GPU", 0)
    if ray.num_gpus_per_task > gpus:
        # Not an error: an autoscaling cluster adds GPU nodes when the tasks ask for them.
        logger.warning(
            "each scoring task asks Ray for %s GPU but the cluster has %s now: tasks wait until GPU nodes join "
            "(set ray.num_gpus_per_task: 0 in the pipeline YAML to score on CPUs)",
            ray.num_gpus_per_task,
            gpus,
        )


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
    size = scoring.shard_size
    task = score_shard.with_options(retries=scoring.retries)
    shard_args = (
        (student, registered.student_id, _shard(home, todo[i : i + size]), key["max_tokens"])
        for i in range(0, len(todo), size)
    )
    stored = errors = 0
    for scores in _finished_shards(task, shard_args, ray):
        with Store.open(home.duckdb) as store:  # the flow is the only writer; workers never open DuckDB
            stored += store.add_scores(scores, run_id)
        errors += sum(1 for s in scores if s.error)
    return Scored(registered.student_id, student.ref, stored, errors, -(-len(todo) // size), **key, notes=notes)


def _shard(home: StateDir, ids: list[str]) -> list[tuple[str, list[dict], list[dict] | None]]:
    with Store.open(home.duckdb) as store:
        return [(t.trajectory_id, [m.model_dump() for m in t.messages], t.tools) for t in store.get_trajectories(ids)]


def _finished_shards(task, shard_args: Iterator[tuple], ray: RaySpec | None) -> Iterator[list]:
    """Score lists as shards finish. In-process, one shard in flight, stored before the next starts: a crash
    costs at most one shard. On Ray, up to 16 shards are in flight (one per free GPU runs)."""
    window, options = 1, nullcontext()
    if ray is not None:
        # Each scoring task asks Ray for its GPU share, so GPU nodes take the scoring and nothing else. A worker
        # must report its task runs to this flow run's API: without PREFECT_API_URL it would start its own server.
        from prefect_ray.context import remote_options

        api_url = str(FlowRunContext.get().client.api_url).rstrip("/")
        _check_cluster(ray, api_url)
        window, options = 16, remote_options(**ray_remote_options(ray, api_url))
    pending: list = []
    with options:
        for a in shard_args:
            pending.append(task.submit(*a))
            if len(pending) >= window:
                done = next(as_completed(pending))
                pending.remove(done)
                yield done.result()
    for future in as_completed(pending):
        yield future.result()


def run_score_student(
    home: StateDir, run_id: str, student: StudentSpec, scoring, ray, include_contaminated: bool = False
) -> Scored:
    """score_student on its task runner: in-process one shard at a time (torch already uses every core for each
    batch), or Ray."""
    if ray is None:
        runner = ThreadPoolTaskRunner(max_workers=1)
    else:
        from prefect_ray import RayTaskRunner

        runner = RayTaskRunner(address=ray.address, init_kwargs=ray_init_kwargs(ray))
    return score_student.with_options(task_runner=runner)(home, run_id, student, scoring, ray, include_contaminated)
