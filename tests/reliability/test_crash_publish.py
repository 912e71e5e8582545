"""SIGKILL `rsr publish` at each step between writing the dataset and registering it, then publish again.

After every kill: no `publications` row points at an incomplete folder (each registered dataset loads, and its
Arrow, Parquet and JSONL hold the registered rows with the registered content digest); the dataset's final folder
is either complete or absent (temporary folders are dot-named and never registered). The re-run then publishes
the same dataset (same id) correctly, registered once, with the killed attempt's leftovers cleaned up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.child_runs import CHILD, child_env, finish, spawn

NAME = "crash-sft"
POINTS = ["mid-write", "before-register", "after-register"]


def _publications(db: Path) -> list[dict]:
    from rsr.store.writer import Store

    with Store.open(db) as store:  # read-write: replays the killed writer's WAL, as the next flow would
        cols, rows = store.query("SELECT * FROM publications ORDER BY name")
        pubs = [dict(zip(cols, r, strict=True)) for r in rows]
        for pub in pubs:
            pub["n_items"] = store.query(
                "SELECT count(*) FROM publication_items WHERE dataset_id = ?", [pub["dataset_id"]]
            )[1][0][0]
    return pubs


def assert_complete(folder: Path, n_rows: int | None = None, digest: str | None = None) -> None:
    """The dataset folder holds every file, and all three copies of the rows agree."""
    import datasets
    import pyarrow.parquet as pq

    from rsr.publish.files import content_digest

    for name in ("dataset_info.json", "state.json", "data.parquet", "data.jsonl", "README.md"):
        assert (folder / name).is_file(), f"{folder} lacks {name}"
    ds = datasets.load_from_disk(str(folder))
    rows = [json.loads(line) for line in (folder / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(ds) == pq.read_metadata(folder / "data.parquet").num_rows == len(rows) > 0
    if n_rows is not None:
        assert len(rows) == n_rows
    if digest is not None:
        assert content_digest(rows) == digest


def _check_state(state: Path) -> list[dict]:
    pubs = _publications(state / "rsr.duckdb")
    for pub in pubs:  # nothing registered points at a half-written folder
        assert pub["n_items"] == pub["n_rows"]
        assert_complete(Path(pub["path"]), pub["n_rows"], pub["content_digest"])
    for final in (state / "datasets" / NAME).glob("[!.]*"):  # visible final folders: complete or absent
        assert_complete(final)
    return pubs


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_mid_publish_leaves_no_half_dataset_and_rerun_publishes(point, scored_state, prefect_api_url, tmp_path):
    from rsr.config import PipelineConfig
    from rsr_flows.publish import publish_dataset

    state, config_path = scored_state
    config = PipelineConfig.load(config_path)
    before = {p["dataset_id"] for p in _check_state(state)}

    proc = spawn(
        [sys.executable, str(CHILD), "--kill-at", point, "--", "publish", "--name", NAME, "--state", str(state)],
        child_env(prefect_api_url),
        tmp_path / "publish.log",
    )
    rc, log = finish(proc, timeout=300)
    assert rc == -9, f"the publish child was not killed at {point} (rc {rc}):\n{log[-3000:]}"

    after_kill = _check_state(state)
    registered = {p["dataset_id"] for p in after_kill} - before
    assert len(registered) == (1 if point == "after-register" else 0)
    leftovers = sorted(p.name for p in (state / "datasets" / NAME).iterdir())
    finals = [n for n in leftovers if not n.startswith(".")]
    if point == "mid-write":
        assert finals == [] and any(".tmp-" in n for n in leftovers)  # only a dot-named temporary folder
    else:
        assert len(finals) == 1  # renamed into place whole: complete (checked above)

    result = publish_dataset(config.students[0], config.policy, NAME, state=str(state))
    pubs = [p for p in _check_state(state) if p["name"] == NAME]
    assert [p["dataset_id"] for p in pubs] == [result.publication.dataset_id]
    assert (
        Path(pubs[0]["path"])
        == Path(result.publication.path)
        == state / "datasets" / NAME / result.publication.dataset_id
    )
    assert sorted(p.name for p in (state / "datasets" / NAME).iterdir()) == [
        result.publication.dataset_id
    ]  # no leftovers
    if point != "mid-write":
        assert finals == [result.publication.dataset_id]  # the killed attempt was publishing this very dataset

    # MLflow: nothing left RUNNING; the killed attempt's run is closed (FINISHED if it had registered, else KILLED)
    runs = _mlflow_runs(state, result.publication.dataset_id)
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_id, r.info.status) for r in runs]
    statuses = {r.info.run_id: r.info.status for r in runs}
    assert statuses[pubs[0]["mlflow_run_id"]] == "FINISHED"
    assert sorted(statuses.values()) == (["FINISHED"] if point == "after-register" else ["FINISHED", "KILLED"])


def _mlflow_runs(state: Path, dataset_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`rsr.dataset_id` = '{dataset_id}'")


@pytest.mark.slow
def test_a_killed_publish_is_cleaned_up_by_the_next_one_with_another_selection(scored_state, prefect_api_url, tmp_path):
    """Killed after its folder was complete but before registering it; the next publish of that name selects
    otherwise (another dataset id): the first folder is removed (nothing points at it) and its run is KILLED."""
    from rsr.config import PipelineConfig
    from rsr.select import SelectionPolicy
    from rsr_flows.publish import publish_dataset

    state, config_path = scored_state
    config = PipelineConfig.load(config_path)
    proc = spawn(
        [sys.executable, str(CHILD), "--kill-at", "before-register", "--", "publish", "--name", NAME]
        + ["--state", str(state)],
        child_env(prefect_api_url),
        tmp_path / "publish.log",
    )
    rc, log = finish(proc, timeout=300)
    assert rc == -9, log[-3000:]
    (killed,) = [p.name for p in (state / "datasets" / NAME).iterdir() if not p.name.startswith(".")]

    other = SelectionPolicy(name="top_teachers", k=1)
    result = publish_dataset(config.students[0], other, NAME, state=str(state))
    assert result.publication.dataset_id != killed
    assert sorted(p.name for p in (state / "datasets" / NAME).iterdir()) == [result.publication.dataset_id]
    assert [p["dataset_id"] for p in _check_state(state) if p["name"] == NAME] == [result.publication.dataset_id]
    (abandoned,) = _mlflow_runs(state, killed)
    assert abandoned.info.status == "KILLED" and abandoned.data.tags["rsr.settled"] == "abandoned"
