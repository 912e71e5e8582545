"""A publishable state made by hand (2 teachers, one from a JSONL file, one from a Hugging Face dataset folder),
publishing helpers, and the checks of what a publication writes: its dataset card and its MLflow run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard
from mlflow import MlflowClient

from rsr.metric import METRIC_VERSION
from rsr.publish.files import publish_selection, source_files
from rsr.publish.lineage import EXPERIMENT, Tracking
from rsr.publish.manifest import Publication, Request
from rsr.records import Message, Score, Trajectory, Verdict
from rsr.select import SelectionPolicy, selection_counts
from rsr.store.writer import Store

POLICY = SelectionPolicy(name="per_problem_min_rsr")
INGEST_SHA = {"file": "a" * 64, "hf_dir": "b" * 64}  # as rsr.ingest recorded them (not what the files hold now)


def _sources(tmp_path: Path) -> list[Path]:
    """Teacher A came from a JSONL file, teacher B from a Hugging Face dataset folder (digested whole at ingest)."""
    src_a = tmp_path / "inputs" / "A.jsonl"
    src_a.parent.mkdir()
    src_a.write_text(json.dumps({"teacher": "A"}) + "\n")
    src_b = tmp_path / "inputs" / "B-hf"
    src_b.mkdir()
    (src_b / "data-00000-of-00001.arrow").write_bytes(b"arrow bytes")
    return [src_a, src_b]


def _trajectories(sources: list[Path]) -> list[tuple[Trajectory, float]]:
    """(trajectory, rsr): A scores 1.0 and 3.0 on problems 0 and 1, B 2.0 and 0.5."""
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
    return trajs


def _score(t: Trajectory, rsr: float) -> Score:
    return Score(
        trajectory_id=t.trajectory_id,
        student_id="stu",
        metric_version=METRIC_VERSION,
        r_max=100,
        dtype="float32",
        n_tokens=10,
        sum_rank=10 * rsr,
        sum_surprisal=10,
        rsr=rsr,
        mean_rank=rsr,
        mean_surprisal=1.0,
        truncated=(t.teacher, rsr) == ("A", 3.0),  # scored on a prefix: excluded by the default policy
    )


@contextmanager
def publish_case(state_dir: Path, mlflow_template: Path, tmp_path: Path) -> Iterator[dict]:
    """A state folder with 2 teachers x 2 problems, verified and scored for student "stu" (one score truncated),
    their source files recorded with INGEST_SHA, and a copy of an initialised MLflow store. Yields
    {"store", "home", "run", "sources", "trajs"}; closes whatever store "store" holds at the end."""
    state_dir.mkdir(parents=True)
    shutil.copy(mlflow_template, state_dir / "mlflow.db")
    sources = _sources(tmp_path)
    trajs = _trajectories(sources)
    store = Store.open(state_dir / "rsr.duckdb")
    run = store.start_run("publish", {})
    store.add_trajectories([t for t, _ in trajs], run)
    store.set_verdicts([Verdict(trajectory_id=t.trajectory_id, verdict="correct") for t, _ in trajs], run)
    for src, kind, teacher in ((sources[0], "file", "A"), (sources[1], "hf_dir", "B")):
        store.add_source_file(src, INGEST_SHA[kind], 11, kind, teacher, run)
    store.register_student("stu", "tiny/student", "dg", {})
    store.add_scores([_score(t, rsr) for t, rsr in trajs], run)
    case = {"store": store, "home": state_dir, "run": run, "sources": sources, "trajs": [t for t, _ in trajs]}
    try:
        yield case
    finally:
        case["store"].close()


def local_tracking(env) -> Tracking:
    return Tracking(f"sqlite:///{env['home'] / 'mlflow.db'}", env["home"] / "mlartifacts")


def publish_selected(
    env, selected, name: str = "math-sft", prefect_flow_run_id: str = "prefect-123", tracking: Tracking | None = None
) -> Publication:
    store: Store = env["store"]
    req = Request(name, "stu", "tiny/student", POLICY, env["run"], prefect_flow_run_id)
    cands = store.candidates("stu")
    return publish_selection(
        store,
        selected,
        req,
        out_root=env["home"] / "datasets",
        tracking=tracking or local_tracking(env),
        sources=source_files(store, selected),
        counts=selection_counts(cands, selected, POLICY),
    )


def mlflow_client(env) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{env['home'] / 'mlflow.db'}")


def assert_card(pub: Publication, sources: list[Path]) -> None:
    """The card parses with huggingface_hub, carries valid metadata, the selection counts and ingest digests."""
    card = DatasetCard.load(pub.path / "README.md")
    data = card.data.to_dict()
    assert data["pretty_name"] == "math-sft" and data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == ["n<1K"] and "rsr-curate" in data["tags"]
    assert data["configs"] == [{"config_name": "default", "data_files": "data.parquet"}]
    text = card.text
    for needle in ("tiny/student", "per_problem_min_rsr", pub.dataset_id, pub.content_digest, pub.mlflow_run_id,
                   "prefect-123", "| A | 1 |", "| B | 1 |", *INGEST_SHA.values(), "| hf_dir |"):  # fmt: skip
        assert needle in text, needle
    assert "| truncated when scored (RSR over the first `max_tokens` tokens only) | 1 |" in text
    assert "| excluded: truncated (the policy's `include_truncated` is off) | 1 |" in text
    assert "| selected (rows) | 2, of which 0 truncated when scored |" in text
    assert all(str(src) in text for src in sources)
    # The card's configs are what datasets follows in a repo holding README.md + data.parquet (as on the Hub).
    repo = pub.path.parent.parent / f"repo-{pub.dataset_id}"
    repo.mkdir()
    for name in ("README.md", "data.parquet"):
        shutil.copy(pub.path / name, repo / name)
    assert datasets.load_dataset(str(repo), split="train").num_rows == pub.n_rows
    shutil.rmtree(repo)


def assert_mlflow_run(client: MlflowClient, pub: Publication, sources: list[Path], run_id: str) -> None:
    """The publish run, its dataset inputs with the digests taken at ingest, and the dataset artifact, read back."""
    run = client.get_run(pub.mlflow_run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == "prefect-123" and run.data.tags["rsr.run_id"] == run_id
    assert run.data.params["student_ref"] == "tiny/student" and run.data.params["policy"] == "per_problem_min_rsr"
    assert run.data.metrics["n_rows"] == 2 and run.data.metrics["n_rows.A"] == 1
    assert run.data.metrics["rsr_mean"] == pytest.approx(0.75)
    assert run.data.metrics["selection.excluded_truncated"] == 1
    inputs = {
        i.dataset.name: (i.dataset.digest, json.loads(i.dataset.source), i.tags) for i in run.inputs.dataset_inputs
    }
    for src, sha in zip(sources, INGEST_SHA.values(), strict=True):
        digest, source, tags = inputs[src.name]
        assert (digest, source["uri"], source["sha256"]) == (sha[:20], str(src), sha)
        assert [(t.key, t.value) for t in tags] == [("mlflow.data.context", "source")]
    digest, source, tags = inputs["math-sft"]
    assert digest == pub.content_digest and source["uri"] == str(pub.path)
    published = next(i.dataset for i in run.inputs.dataset_inputs if i.dataset.name == "math-sft")
    assert json.loads(published.profile) == {"num_rows": 2, "num_elements": 22}
    assert "messages" in published.schema and "trajectory_id" in published.schema
    assert [(t.key, t.value) for t in tags] == [("mlflow.data.context", "published")]
    artifacts = {a.path for a in client.list_artifacts(pub.mlflow_run_id, "dataset")}
    assert {"dataset/README.md", "dataset/data.parquet", "dataset/data.jsonl", "dataset/state.json"} <= artifacts
    local = Path(client.download_artifacts(pub.mlflow_run_id, "dataset/data.jsonl", str(pub.path.parent.parent)))
    assert local.read_bytes() == (pub.path / "data.jsonl").read_bytes()
