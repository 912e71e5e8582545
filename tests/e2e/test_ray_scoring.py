"""Scoring on Ray (prefect-ray's RayTaskRunner) gives the same scores as in-process, and only the flow writes.

A local Ray instance (2 CPUs and one *declared* GPU, so the GPU path runs on a CPU-only box) scores a few demo
trajectories for the embedded student. Its workers get a setup hook that makes any DuckDB open raise and logs
every model load with the worker's pid and environment.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or importlib.util.find_spec("prefect_ray") is None,
    reason="ray / prefect-ray are the optional extra `ray`: pip install -e '.[ray]' (make test installs it)",
)

N_TRAJECTORIES = 6
SHARD_SIZE = 2


def test_what_travels_to_a_worker_pickles():
    """A scoring task, its arguments and its result cross process (and host) boundaries by cloudpickle."""
    import cloudpickle

    from rsr.records import Score
    from rsr.spec import StudentSpec
    from rsr_tasks.score import score_shard

    spec = StudentSpec(ref="smollm2-135m", dtype="bfloat16")
    items = [("t-1", [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}])]
    task, spec2, items2 = cloudpickle.loads(cloudpickle.dumps((score_shard.with_options(retries=1), spec, items)))
    assert (task.name, task.retries, spec2, items2) == ("score-shard", 1, spec, items)
    score = Score(trajectory_id="t-1", student_id="s@1", metric_version="v", r_max=100, n_tokens=3, rsr=1.5)
    assert cloudpickle.loads(cloudpickle.dumps(score)) == score


def test_ray_options_ask_for_the_gpu_share_and_forward_the_env(monkeypatch):
    from rsr.config import RaySpec
    from rsr_flows.executors import ray_remote_options, shipped_code

    monkeypatch.setenv("RSR_MODELS", "/models")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = ray_remote_options(RaySpec(num_gpus_per_task=0.5, num_cpus_per_task=2), "http://head:4200/api")
    assert (options["num_gpus"], options["num_cpus"], options["max_calls"]) == (0.5, 2, 0)
    env = options["runtime_env"]["env_vars"]
    assert env["RSR_MODELS"] == "/models" and env["HF_HUB_OFFLINE"] == "1"
    assert env["PREFECT_API_URL"] == "http://head:4200/api"

    with shipped_code(RaySpec()) as local:
        assert "runtime_env" not in local  # a local instance imports the installed package
    with shipped_code(RaySpec(address="ray://head:10001")) as remote:
        by_name = {Path(m).name: Path(m) for m in remote["runtime_env"]["py_modules"]}
        assert sorted(by_name) == ["rsr", "rsr_tasks"]  # rsr_tasks ships as a copy so named
        assert (by_name["rsr"] / "config.py").is_file() and (by_name["rsr_tasks"] / "score.py").is_file()
    assert not by_name["rsr_tasks"].parent.exists()  # uploaded by ray.init, then removed: no folder left per run


def test_ray_flags_reach_the_flows_as_their_ray_parameter(tmp_path):
    """Every command with --ray-address takes the task's share as flags; `rsr run` lays the flags given over the
    config's `ray:` (a share alone is enough there); elsewhere a share needs an address."""
    import typer

    from rsr.cli.options import ray as _ray
    from rsr.config import PipelineConfig, RaySpec
    from rsr_flows.pipeline import ray_for

    assert _ray(None) is None
    assert _ray("ray://head:10001") == RaySpec(address="ray://head:10001", num_gpus_per_task=1, num_cpus_per_task=1)
    head = "ray://head:10001"
    assert _ray(head, 0, 2) == RaySpec(address=head, num_gpus_per_task=0, num_cpus_per_task=2)
    with pytest.raises(typer.Exit):
        _ray(None, 0)  # add-student --ray-gpus-per-task 0 alone: where would the tasks run?
    config = tmp_path / "c.yaml"
    config.write_text(
        "teachers: [{name: t, path: t.jsonl}]\nray: {address: 'ray://old:10001', num_gpus_per_task: 0.25}\n"
    )
    (tmp_path / "t.jsonl").touch()
    loaded = PipelineConfig.load(config)
    assert ray_for(loaded, _ray("ray://head:10001")) == RaySpec(address="ray://head:10001", num_gpus_per_task=0.25)
    assert ray_for(loaded, None) == RaySpec(address="ray://old:10001", num_gpus_per_task=0.25)
    assert ray_for(loaded, _ray(None, 0, config=True)) == RaySpec(address="ray://old:10001", num_gpus_per_task=0)
    bare = tmp_path / "bare.yaml"
    bare.write_text("teachers: [{name: t, path: t.jsonl}]\n")
    with pytest.raises(ValueError, match="no `ray:`"):
        ray_for(PipelineConfig.load(bare), _ray(None, 0, config=True))


def _worker_setup(log: str):
    """Runs in every Ray worker before any task: DuckDB is off limits there, and model loads are logged."""

    def setup() -> None:
        import duckdb

        from rsr.score.student import Student

        def refuse(*args, **kwargs):
            raise RuntimeError(f"a Ray worker (pid {os.getpid()}) opened DuckDB; only the flow may write it")

        duckdb.connect = refuse
        load = Student.from_spec.__func__  # every load of a named student goes through it

        def logged_load(cls, *args, **kwargs):
            with open(log, "a", encoding="utf-8") as fh:
                env = [os.environ.get(k, "-") for k in ("CUDA_VISIBLE_DEVICES", "RSR_HOME", "PREFECT_API_URL")]
                fh.write("\t".join([str(os.getpid()), *env]) + "\n")
            return load(cls, *args, **kwargs)

        Student.from_spec = classmethod(logged_load)

    return setup


def _state(root: Path, trajectories) -> tuple:
    from rsr.settings import StateDir
    from rsr.store.writer import Store

    state = StateDir(root).ensure()
    with Store.open(state.duckdb) as store:
        store.add_trajectories(trajectories, None)
        run_id = store.start_run("test-ray", {})
    return state, run_id


def _scores(state) -> dict[str, tuple]:
    from rsr.store.queries import Reader

    with Reader.open(state.duckdb) as store:
        _, rows = store.query(
            "SELECT trajectory_id, student_id, n_tokens, sum_rank, sum_surprisal, sum_rank_unclipped, rsr, truncated,"
            " error, run_id FROM scores"
        )
    return {r[0]: r[1:] for r in rows}


def _demo_trajectories(tmp_path: Path) -> list:
    from rsr.curate.ingest import ingest_file
    from rsr.demo import write_demo_data

    config = write_demo_data(tmp_path / "demo")
    trajectories = ingest_file(config.parent / "careful-tutor.jsonl", teacher="careful-tutor").trajectories
    trajectories = trajectories[:N_TRAJECTORIES]
    assert len(trajectories) == N_TRAJECTORIES
    return trajectories


def _score_on_ray(tmp_path: Path, monkeypatch, trajectories, spec, scoring, log: Path) -> tuple:
    """The same flow on a fresh local Ray instance whose workers log model loads: (state, run id, result)."""
    import ray

    import rsr.stages.score
    from rsr.config import RaySpec
    from rsr_flows.score import run_score_student

    ray.init(
        address="local",  # a fresh instance, even where `ray start` left a cluster running
        num_cpus=2,
        num_gpus=1,  # declared, not real: each scoring task asks for it, so they run one at a time on it
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": _worker_setup(str(log))},
    )
    try:
        remote, remote_run = _state(tmp_path / "ray", trajectories)
        # Set after Ray started, so a worker sees it only if the flow forwards it.
        monkeypatch.setenv("RSR_HOME", str(remote.root))
        driver_loads = rsr.stages.score._student.cache_info()
        result = run_score_student(remote, remote_run, spec, scoring, RaySpec(num_gpus_per_task=1, num_cpus_per_task=1))
        # The driver loaded the student once more (register_student, a cache hit) and scored nothing itself.
        after = rsr.stages.score._student.cache_info()
        assert (after.hits + after.misses) - (driver_loads.hits + driver_loads.misses) == 1
    finally:
        ray.shutdown()
    return remote, remote_run, result


def _assert_one_load_on_the_gpu_worker(log: Path, remote) -> None:
    loads = [line.split("\t") for line in log.read_text().splitlines()]
    pids = [row[0] for row in loads]
    assert pids, "no Ray worker loaded the student: the shards did not run on Ray"
    assert pids[0] != str(os.getpid())
    # One model per worker process: the GPU task's worker is kept (max_calls=0), so the one GPU = one load.
    assert len(pids) == len(set(pids)) == 1, f"loads per worker: {loads}"
    for _, cuda, rsr_home, api in loads:
        assert cuda == "0", "the scoring task did not get the (declared) GPU"
        assert rsr_home == str(remote.root), "RSR_HOME did not reach the worker"
        assert api.startswith("http"), "PREFECT_API_URL did not reach the worker"


@pytest.mark.slow
@requires_ray
def test_ray_scores_match_in_process_and_only_the_flow_writes(tmp_path, monkeypatch):
    from rsr.config import ScoringSpec
    from rsr.spec import StudentSpec
    from rsr_flows.score import run_score_student

    trajectories = _demo_trajectories(tmp_path)
    spec = StudentSpec(ref="smollm2-135m", dtype="float32", device="cpu")
    scoring = ScoringSpec(shard_size=SHARD_SIZE, retries=0)
    n_shards = -(-N_TRAJECTORIES // SHARD_SIZE)

    # The reference: the same flow with the in-process runner.
    local, local_run = _state(tmp_path / "local", trajectories)
    monkeypatch.setenv("RSR_HOME", str(local.root))
    assert run_score_student(local, local_run, spec, scoring, None).scored == N_TRAJECTORIES

    log = tmp_path / "worker-loads.tsv"
    log.touch()
    remote, remote_run, result = _score_on_ray(tmp_path, monkeypatch, trajectories, spec, scoring, log)
    assert (result.ref, result.scored, result.errors, result.notes) == ("smollm2-135m", N_TRAJECTORIES, 0, [])
    assert (result.shards, result.dtype) == (n_shards, "float32")
    _assert_one_load_on_the_gpu_worker(log, remote)

    expected, got = _scores(local), _scores(remote)
    assert set(got) == set(expected) == {t.trajectory_id for t in trajectories}
    for tid, row in got.items():
        ref = expected[tid]
        assert row[0] == ref[0] and row[1] == ref[1], tid  # student_id, n_tokens
        assert row[-3:-1] == ref[-3:-1] == (False, None), tid  # truncated, error
        for a, b in zip(row[2:6], ref[2:6], strict=True):  # sums and rsr, float32 on both sides
            assert a == pytest.approx(b, rel=1e-6), tid
        assert row[-1] == remote_run and ref[-1] == local_run  # written by each flow, under its run
