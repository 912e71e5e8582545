"""Publishing to a team's MLflow server: a real `mlflow server` on loopback (SQLite backend, artifacts served by
the server itself), found through $MLFLOW_TRACKING_URI. The publish run, its dataset inputs with the digests
taken at ingest, and the dataset artifact are read back through the server; `rsr report` logs to the same run."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rsr.publish.lineage import EXPERIMENT, Tracking
from rsr.report.page import build_report
from rsr.select import select
from rsr.settings import StateDir
from rsr.store.writer import Store
from tests.support.publish_case import POLICY, assert_card, assert_mlflow_run, publish_selected
from tests.support.servers import free_port, http_server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on 127.0.0.1 and a port the OS chose; stopped (its whole process group) even on failure."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'backend.db'}",
        "--serve-artifacts", "--artifacts-destination", str(tmp / "served-artifacts"),
    ]  # fmt: skip
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    url = f"http://127.0.0.1:{port}"
    with http_server(cmd, server_env, tmp, f"{url}/health", "mlflow-server"):
        yield url, tmp


def test_publish_and_report_through_the_teams_server(env, mlflow_server, monkeypatch, tmp_path: Path) -> None:
    url, server_dir = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    tracking = Tracking.resolve(StateDir(env["home"]))
    assert tracking == Tracking(url)  # no local artifact folder: the server decides where artifacts go

    pub = publish_selected(env, select(env["store"].candidates("stu"), POLICY), tracking=tracking)
    client = MlflowClient(tracking_uri=url)
    assert_mlflow_run(client, pub, env["sources"], env["run"])  # params, inputs + digests, artifact bytes
    assert_card(pub, env["sources"])
    assert url in (pub.path / "README.md").read_text()
    assert client.get_experiment_by_name(EXPERIMENT).artifact_location.startswith("mlflow-artifacts:")
    served = list((server_dir / "served-artifacts").rglob("data.parquet"))
    assert len(served) == 1 and served[0].read_bytes() == (pub.path / "data.parquet").read_bytes()
    assert not (env["home"] / "mlartifacts").exists()  # nothing went to the state folder's store
    local = MlflowClient(tracking_uri=f"sqlite:///{env['home'] / 'mlflow.db'}")
    assert local.get_experiment_by_name(EXPERIMENT) is None

    # The report finds the run on the server the publication was logged to, even without the variable.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    env["store"].close()
    try:
        res = build_report(StateDir(env["home"]), "tiny/student", tmp_path / "report")
    finally:
        env["store"] = Store.open(env["home"] / "rsr.duckdb")  # for the fixture's teardown
    assert res.mlflow_run_id == pub.mlflow_run_id and res.warnings == []
    logged = {a.path for a in client.list_artifacts(pub.mlflow_run_id, "report")}
    assert "report/report.html" in logged and "report/teacher_selection.png" in logged
