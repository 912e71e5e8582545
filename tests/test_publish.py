"""rsr.publish end to end on real components: DuckDB file, MLflow sqlite store, datasets.load_from_disk."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest
from mlflow import MlflowClient

from rsr import publish as publish_mod
from rsr.metric import METRIC_VERSION
from rsr.publish import EXPERIMENT, Publication, publish_dataset
from rsr.records import Message, Score, Trajectory, Verdict
from rsr.select import SelectionPolicy, candidates, select
from rsr.store import Store

POLICY = SelectionPolicy(name="per_problem_min_rsr")


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An initialised MLflow sqlite DB, copied per test: creating its schema takes seconds, a copy does not."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def env(state_dir: Path, mlflow_template: Path, tmp_path: Path):
    state_dir.mkdir(parents=True)
    shutil.copy(mlflow_template, state_dir / "mlflow.db")
    sources = []
    for teacher in ("A", "B"):
        src = tmp_path / "inputs" / f"{teacher}.jsonl"
        src.parent.mkdir(exist_ok=True)
        src.write_text(json.dumps({"teacher": teacher}) + "\n")
        sources.append(src)
    trajs = []
    for teacher, rsrs in (("A", [1.0, 3.0]), ("B", [2.0, 0.5])):
        for i, rsr in enumerate(rsrs):
            msgs = [
                Message(role="user", content=f"Problem {i}"),
                Message(role="assistant", content=f"{teacher} says {i}"),
            ]
            trajs.append(
                (
                    Trajectory.build(
                        teacher=teacher,
                        problem=f"Problem {i}",
                        messages=msgs,
                        gold_answer=str(i),
                        source_file=str(sources[0 if teacher == "A" else 1]),
                        source_line=i + 1,
                    ),
                    rsr,
                )
            )
    store = Store.open(state_dir / "rsr.duckdb")
    run = store.start_run("publish", {})
    store.add_trajectories([t for t, _ in trajs], run)
    store.set_verdicts([Verdict(trajectory_id=t.trajectory_id, verdict="correct") for t, _ in trajs], run)
    store.register_student("stu", "tiny/student", "dg", {})
    store.add_scores(
        [
            Score(
                trajectory_id=t.trajectory_id,
                student_id="stu",
                metric_version=METRIC_VERSION,
                r_max=100,
                n_tokens=10,
                sum_rank=10 * rsr,
                sum_surprisal=10,
                rsr=rsr,
                mean_rank=rsr,
                mean_surprisal=1.0,
            )  # fmt: skip
            for t, rsr in trajs
        ],
        run,
    )
    yield {"store": store, "home": state_dir, "run": run, "sources": sources, "trajs": [t for t, _ in trajs]}
    store.close()


def _publish(env, selected, **kw) -> Publication:
    home: Path = env["home"]
    args = dict(
        out_root=home / "datasets",
        name="math-sft",
        student_id="stu",
        student_ref="tiny/student",
        policy=POLICY,
        source_files=env["sources"],
        run_id=env["run"],
        prefect_flow_run_id="prefect-123",
        mlflow_uri=f"sqlite:///{home / 'mlflow.db'}",
        mlflow_artifacts=home / "mlartifacts",
    )
    args.update(kw)
    return publish_dataset(env["store"], selected, **args)


def _client(env) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{env['home'] / 'mlflow.db'}")


def test_publish_writes_dataset_card_mlflow_and_lineage(env) -> None:
    store: Store = env["store"]
    selected = select(candidates(store, "stu"), POLICY)
    by_problem = {c.problem_id: c for c in selected}
    assert sorted(c.rsr for c in selected) == [0.5, 1.0]  # B on problem 1, A on problem 0

    pub = _publish(env, selected)
    assert pub.n_rows == 2 and pub.path == env["home"] / "datasets" / "math-sft" / pub.dataset_id
    assert sorted(p.name for p in pub.path.parent.iterdir()) == [pub.dataset_id]  # no temp folder left

    ds = datasets.load_from_disk(str(pub.path))
    assert ds.num_rows == 2
    row = next(r for r in ds if r["teacher"] == "A")
    assert row["messages"] == [{"role": "user", "content": "Problem 0"}, {"role": "assistant", "content": "A says 0"}]
    assert (row["teacher"], row["gold_answer"], row["verdict"], row["rsr"]) == ("A", "0", "correct", 1.0)
    assert row["score_id"] == by_problem[row["problem_id"]].score_id
    assert pd.read_parquet(pub.path / "data.parquet")["trajectory_id"].tolist() == ds["trajectory_id"]
    jsonl = [json.loads(line) for line in (pub.path / "data.jsonl").read_text().splitlines()]
    assert [r["messages"] for r in jsonl] == ds["messages"]

    card = (pub.path / "README.md").read_text()
    file_digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:20] for p in env["sources"]}
    for needle in ("tiny/student", "per_problem_min_rsr", pub.dataset_id, pub.content_digest, pub.mlflow_run_id,
                   "prefect-123", "| A | 1 |", "| B | 1 |", *file_digests.values()):  # fmt: skip
        assert needle in card
    assert card.startswith("---\nconfigs:")

    client = _client(env)
    run = client.get_run(pub.mlflow_run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == EXPERIMENT and exp.artifact_location == (env["home"] / "mlartifacts").resolve().as_uri()
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == "prefect-123"
    assert run.data.tags["rsr.run_id"] == env["run"]
    assert run.data.params["student_ref"] == "tiny/student" and run.data.params["policy"] == "per_problem_min_rsr"
    assert run.data.metrics["n_rows"] == 2 and run.data.metrics["n_rows.A"] == 1
    assert run.data.metrics["rsr_mean"] == pytest.approx(0.75)
    inputs = {
        i.dataset.name: (i.dataset.digest, json.loads(i.dataset.source), i.tags) for i in run.inputs.dataset_inputs
    }
    for src in env["sources"]:
        digest, source, tags = inputs[src.name]
        assert digest == file_digests[src.name] and source["uri"] == str(src.resolve())
        assert [(t.key, t.value) for t in tags] == [("mlflow.data.context", "source")]
    digest, source, tags = inputs["math-sft"]
    assert digest == pub.content_digest and source["uri"] == str(pub.path)
    assert [(t.key, t.value) for t in tags] == [("mlflow.data.context", "published")]
    artifacts = {a.path for a in client.list_artifacts(pub.mlflow_run_id, "dataset")}
    assert {"dataset/README.md", "dataset/data.parquet", "dataset/data.jsonl", "dataset/state.json"} <= artifacts

    pubrow = store.get_publication(pub.dataset_id)
    assert pubrow["n_rows"] == 2 and pubrow["content_digest"] == pub.content_digest
    assert pubrow["path"] == str(pub.path) and pubrow["mlflow_run_id"] == pub.mlflow_run_id
    assert pubrow["params"]["policy"]["name"] == "per_problem_min_rsr"
    _, lineage = store.query(
        "SELECT trajectory_id, teacher, score_id, rsr, score_run_id, publish_run_id, mlflow_run_id "
        "FROM dataset_lineage WHERE dataset_id = ? ORDER BY trajectory_id",
        [pub.dataset_id],
    )
    assert lineage == sorted(
        (c.trajectory_id, c.teacher, c.score_id, c.rsr, env["run"], env["run"], pub.mlflow_run_id) for c in selected
    )


def test_republishing_the_same_selection_is_idempotent(env) -> None:
    selected = select(candidates(env["store"], "stu"), POLICY)
    first = _publish(env, selected)
    again = _publish(env, list(reversed(selected)), prefect_flow_run_id="prefect-456")
    assert again == first
    assert env["store"].query("SELECT count(*) FROM publications")[1] == [(1,)]
    client = _client(env)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_runs([exp.experiment_id])) == 1

    # A different selection is a different dataset, with its own digest, folder and row.
    other = _publish(env, selected[:1])
    assert other.dataset_id != first.dataset_id and other.content_digest != first.content_digest
    assert env["store"].query("SELECT count(*) FROM publications")[1] == [(2,)]


def _fail_after_parquet(self, path, *a, **kw):
    Path(path).write_bytes(b"half a parquet file")
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("where", ["mid-write", "registering"])
def test_a_failure_leaves_nothing_registered_or_in_place(env, monkeypatch, where: str) -> None:
    store: Store = env["store"]
    selected = select(candidates(store, "stu"), POLICY)
    if where == "mid-write":
        monkeypatch.setattr(datasets.Dataset, "to_parquet", _fail_after_parquet)
    else:  # after the folder is renamed into place, before the row is written

        def boom(**kw) -> bool:
            assert Path(kw["path"]).is_dir()  # the folder was in place when registering was attempted
            raise OSError("database gone (simulated)")

        monkeypatch.setattr(store, "record_publication", boom)
    with pytest.raises(OSError, match="simulated"):
        _publish(env, selected)

    out = env["home"] / "datasets" / "math-sft"
    assert list(out.iterdir()) == []  # neither the final folder nor the temporary one
    assert store.query("SELECT count(*) FROM publications")[1] == [(0,)]
    assert store.query("SELECT count(*) FROM publication_items")[1] == [(0,)]
    client = _client(env)
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"

    monkeypatch.undo()  # the next attempt succeeds and is registered normally
    pub = _publish(env, selected)
    assert datasets.load_from_disk(str(pub.path)).num_rows == 2
    assert store.get_publication(pub.dataset_id) is not None


def test_leftover_unregistered_folder_is_replaced(env) -> None:
    """A crash between rename and registration leaves a complete folder; the next publish takes its place."""
    selected = select(candidates(env["store"], "stu"), POLICY)
    rows = publish_mod.build_rows(env["store"], selected)
    dataset_id = publish_mod.dataset_id_for("math-sft", "stu", POLICY, publish_mod.content_digest(rows))
    leftover = env["home"] / "datasets" / "math-sft" / dataset_id
    leftover.mkdir(parents=True)
    (leftover / "stale.txt").write_text("from a killed run")
    pub = _publish(env, selected)
    assert pub.path == leftover and not (leftover / "stale.txt").exists()
    assert sorted(p.name for p in leftover.parent.iterdir()) == [dataset_id]


def test_publish_refuses_empty_and_bad_names(env) -> None:
    with pytest.raises(ValueError, match="nothing selected"):
        _publish(env, [])
    selected = select(candidates(env["store"], "stu"), POLICY)
    with pytest.raises(ValueError, match="folder name"):
        _publish(env, selected, name="../escape")
