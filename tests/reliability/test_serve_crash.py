"""`rsr serve` killed mid-run, then started again: its run is marked Crashed, retried, and completes; the store ends
with every score exactly once and no run is left Running on the Prefect server; the run shows its artifacts.

A real Prefect server (the reliability session's), a real `rsr serve` on a scored demo state. The run is started
through the API, as `prefect deployment run` would: it re-scores 12 trajectories for a new student in 3 shards that
each take at least SHARD_S (tests/support/hooked_python: the flow-run processes that `rsr serve` starts mark each
shard), then publishes the student's dataset. Once one shard is stored, serve's whole process group is SIGKILLed,
as a host or container loss would: the flow-run process dies with it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import servers
from tests.support.child_runs import REPO, child_env, duplicate_score_keys, markers, wait_for

N = 12  # the scored template's trajectories
SHARD = 4
SHARD_S = 6.0
RUN_S = 420


def _serve(state: Path, api_url: str, marker: Path, log: Path):  # noqa: ANN202 (Popen)
    env = child_env(api_url, RSR_HOME=str(state), PREFECT_RUNNER_POLL_FREQUENCY="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "support" / "hooked_python"), str(REPO)])
    env["RSR_TEST_HOOKS"] = json.dumps({"marker": str(marker), "min_shard_s": SHARD_S})
    return servers.start([sys.executable, "-m", "rsr.cli", "serve"], env, log, state.parent)


def _registered(client, state: Path, proc, log: Path):  # noqa: ANN001, ANN202
    from prefect.exceptions import ObjectNotFound

    def ready():  # noqa: ANN202
        if proc.poll() is not None:
            pytest.fail(f"rsr serve exited ({proc.returncode})\n{servers.tail(log)}")
        try:
            deployment = client.read_deployment_by_name("rescore-students/rescore-students")
        except ObjectNotFound:
            return None
        return deployment if deployment.parameters.get("state") == str(state) else None

    return servers.until("rsr serve to register its deployments", ready, servers.START_S, log)


def _llama3_scores(db: Path) -> tuple[int, int]:
    from rsr.store.writer import Store

    with Store.open(db) as store:  # read-write: replays what a killed writer left, as the next flow would
        _, rows = store.query(
            "SELECT count(*), count(DISTINCT trajectory_id) FROM scores JOIN students USING (student_id) "
            "WHERE students.info->>'chat_template' = 'llama3'"
        )
    return rows[0]


@pytest.mark.slow
def test_a_run_killed_with_serve_is_retried_when_serve_starts_again(scored_state, prefect_api_url, tmp_path):
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas import filters as f

    state, _ = scored_state
    marker, log = tmp_path / "marker.jsonl", tmp_path / "serve.log"
    since = datetime.now(UTC)
    serve = _serve(state, prefect_api_url, marker, log)
    try:
        with SyncPrefectClient(prefect_api_url) as client:
            deployment = _registered(client, state, serve, log)
            parameters = {"students": [{"ref": "smollm2-135m", "chat_template": "llama3"}], "publish": True}
            run = client.create_flow_run_from_deployment(
                deployment.id, parameters=parameters | {"scoring": {"shard_size": SHARD}}
            )
        stored = lambda: sum(m["n"] for m in markers(marker) if m["ev"] == "stored")  # noqa: E731
        assert wait_for(lambda: stored() >= SHARD, RUN_S, serve), servers.tail(log)
        os.killpg(serve.pid, signal.SIGKILL)  # serve and the flow-run process it started
        serve.wait(timeout=30)
        before = stored()
        assert SHARD <= before < N and _llama3_scores(state / "rsr.duckdb") == (before, before)

        serve = _serve(state, prefect_api_url, marker, log)
        with SyncPrefectClient(prefect_api_url) as client:
            ended = lambda: (r := client.read_flow_run(run.id)).state.is_final() and r  # noqa: E731
            final = servers.until("the killed run to be retried and end", ended, RUN_S, log)
            history = [s.name for s in sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp)]
            live = f.FlowRunFilterState(type=f.FlowRunFilterStateType(any_=["RUNNING", "PENDING", "CANCELLING"]))
            left = client.read_flow_runs(
                flow_run_filter=f.FlowRunFilter(start_time=f.FlowRunFilterStartTime(after_=since), state=live)
            )
            shown = client.read_artifacts(
                artifact_filter=f.ArtifactFilter(flow_run_id=f.ArtifactFilterFlowRunId(any_=[run.id]))
            )
        # serve says how a run ended at its next look at the server (every POLL_S): wait for that line, bounded
        completed = f"run {run.name} (rescore-students) completed"
        said_completed = lambda: completed in log.read_text(errors="replace")  # noqa: E731
        servers.until("rsr serve to say the run completed", said_completed, 120, log)
    finally:
        servers.stop(serve)
    assert final.state.is_completed() and final.run_count == 2, (final.state, servers.tail(log))
    assert history[history.index("Running") + 1 : history.index("Running") + 3] == ["Crashed", "AwaitingRetry"]
    assert left == [], [(r.name, r.state_name) for r in left]  # the killed run's subflows are Crashed too

    # Every score exactly once: the retry scored only the shards that were lost.
    assert _llama3_scores(state / "rsr.duckdb") == (N, N)
    assert duplicate_score_keys(state / "rsr.duckdb") == 0
    assert stored() == N
    said = log.read_text(errors="replace")
    assert f"run {run.name} (rescore-students) crashed: its process died while Running" in said
    assert "retrying it (retry 1 of 2)" in said
    assert "Traceback" not in said  # the serve log: one line a record

    # What the run shows in the UI: the student's teacher board, the dataset it published and its MLflow run.
    by_key = {a.key: a for a in shown if a.key}
    (board,) = [a for k, a in by_key.items() if k.startswith("teacher-board-smollm2-135m-")]
    teachers = sorted(row["teacher"] for row in json.loads(board.data))
    assert teachers == ["careful-tutor", "rambling-model", "terse-solver"]
    assert {"dataset-sft-smollm2-135m-llama3", "mlflow-sft-smollm2-135m-llama3"} <= set(by_key)
    assert "load_from_disk" in by_key["dataset-sft-smollm2-135m-llama3"].data
