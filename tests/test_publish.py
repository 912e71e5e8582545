"""rsr.publish.files end to end on real components: DuckDB file, MLflow sqlite store, datasets.load_from_disk, the
dataset card read back with huggingface_hub, and the task that publishes for a registered student."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest
from huggingface_hub import DatasetCard
from mlflow import MlflowClient

from rsr.config import StudentSpec
from rsr.metric import METRIC_VERSION
from rsr.publish import files as publish_mod
from rsr.publish.files import publish_selection, source_files
from rsr.publish.lineage import EXPERIMENT, Tracking
from rsr.publish.manifest import Publication, Request
from rsr.records import Message, Score, Trajectory, Verdict
from rsr.select import SelectionPolicy, select, selection_counts
from rsr.settings import StateDir
from rsr.store.writer import Store
from rsr_tasks.publish import publish as publish_task
from rsr_tasks.publish import select_trajectories
from rsr_tasks.score import find_student

POLICY = SelectionPolicy(name="per_problem_min_rsr")
INGEST_SHA = {"file": "a" * 64, "hf_dir": "b" * 64}  # as rsr.ingest recorded them (not what the files hold now)


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
    # Teacher A came from a JSONL file, teacher B from a Hugging Face dataset folder (digested whole at ingest).
    src_a = tmp_path / "inputs" / "A.jsonl"
    src_a.parent.mkdir()
    src_a.write_text(json.dumps({"teacher": "A"}) + "\n")
    src_b = tmp_path / "inputs" / "B-hf"
    src_b.mkdir()
    (src_b / "data-00000-of-00001.arrow").write_bytes(b"arrow bytes")
    sources = [src_a, src_b]
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
    for src, kind, teacher in ((src_a, "file", "A"), (src_b, "hf_dir", "B")):
        store.add_source_file(src, INGEST_SHA[kind], 11, kind, teacher, run)
    store.register_student("stu", "tiny/student", "dg", {})
    store.add_scores(
        [
            Score(
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
            )  # fmt: skip
            for t, rsr in trajs
        ],
        run,
    )
    yield {"store": store, "home": state_dir, "run": run, "sources": sources, "trajs": [t for t, _ in trajs]}
    store.close()


def _tracking(env) -> Tracking:
    return Tracking(f"sqlite:///{env['home'] / 'mlflow.db'}", env["home"] / "mlartifacts")


def _publish(
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
        tracking=tracking or _tracking(env),
        sources=source_files(store, selected),
        counts=selection_counts(cands, selected, POLICY),
    )


def _client(env) -> MlflowClient:
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


def test_publish_writes_dataset_card_mlflow_and_lineage(env) -> None:
    store: Store = env["store"]
    selected = select(store.candidates("stu"), POLICY)
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

    assert_card(pub, env["sources"])
    assert_mlflow_run(_client(env), pub, env["sources"], env["run"])
    exp = _client(env).get_experiment_by_name(EXPERIMENT)
    assert exp.artifact_location == (env["home"] / "mlartifacts").resolve().as_uri()  # the embedded default

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
    selected = select(env["store"].candidates("stu"), POLICY)
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
    selected = select(store.candidates("stu"), POLICY)
    if where == "mid-write":
        monkeypatch.setattr(datasets.Dataset, "to_parquet", _fail_after_parquet)
    else:  # after the folder is renamed into place, before the row is written

        def boom(publication, items) -> bool:
            assert Path(publication["path"]).is_dir()  # the folder was in place when registering was attempted
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
    selected = select(env["store"].candidates("stu"), POLICY)
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
    selected = select(env["store"].candidates("stu"), POLICY)
    with pytest.raises(ValueError, match="folder name"):
        _publish(env, selected, name="../escape")


def test_digests_are_the_ones_taken_at_ingest(env) -> None:
    """A source file changed after ingest: the lineage keeps the digest of what was read, not of what is there."""
    env["sources"][0].write_text("edited after ingest\n")
    pub = _publish(env, select(env["store"].candidates("stu"), POLICY))
    run = _client(env).get_run(pub.mlflow_run_id)
    digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert digests["A.jsonl"] == INGEST_SHA["file"][:20] and digests["B-hf"] == INGEST_SHA["hf_dir"][:20]


def test_the_task_publishes_for_a_registered_student_without_loading_it(env, monkeypatch) -> None:
    """`tiny/student` is no model anywhere: the task reads its id from the students table (ref or id)."""
    import rsr.score.student

    def no_loading(*a, **k):
        raise AssertionError("publishing must not load the student")

    monkeypatch.setattr(rsr.score.student.Student, "load", no_loading)
    env["store"].close()  # the task opens the state's database itself
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env['home'] / 'mlflow.db'}")
    state = StateDir(env["home"])

    def by(ref: str) -> Publication:
        found = find_student.fn(state.duckdb, StudentSpec(ref=ref, dtype="float32"))
        selection = select_trajectories.fn(state, found.student, found.key, POLICY)
        assert [t for t, _, _ in selection.ranking] == ["B", "A"]
        return publish_task.fn(state, env["run"], selection, "by-ref", "prefect-123")

    pub = by("tiny/student")
    assert pub.n_rows == 2
    assert by("stu") == pub  # the exact student_id names the same student
    with pytest.raises(ValueError, match="no student 'nobody'.*tiny/student"):
        by("nobody")
    env["store"] = Store.open(env["home"] / "rsr.duckdb")  # for the fixture's teardown


def test_tracking_uri_precedence(monkeypatch, tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert Tracking.resolve(state) == Tracking(state.mlflow_uri, state.mlflow_artifacts)  # the embedded default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert Tracking.resolve(state) == Tracking("http://env:5000")  # a server keeps its own artifacts
    assert Tracking.resolve(state, config="http://config:5000").uri == "http://config:5000"
    assert Tracking.resolve(state, flag="http://flag:5000", config="http://config:5000").uri == "http://flag:5000"


class FakeHub:
    """The Hub's HTTP layer replaced (no hub is reachable here): HfApi's repo calls and HfFileSystem's reads work
    on one in-memory dataset repo, so `datasets`' own push_to_hub runs for real on top of it."""

    def __init__(self, monkeypatch) -> None:
        import io
        from types import SimpleNamespace

        from huggingface_hub import HfApi, HfFileSystem

        self.files: dict[str, bytes] = {}
        self.commits: list[str] = []
        self.repos: set[str] = set()
        staged: dict[str, bytes] = {}

        def data(obj) -> bytes:
            return obj if isinstance(obj, bytes) else Path(obj).read_bytes()

        def create_repo(api, repo_id, *, repo_type=None, private=None, exist_ok=False, **kw):
            self.repos.add(repo_id)
            return SimpleNamespace(repo_id=repo_id)

        def repo_info(api, repo_id, *, repo_type=None, revision=None, **kw):
            assert repo_id in self.repos and repo_type == "dataset"
            return SimpleNamespace(id=repo_id, sha=f"{len(self.commits):040d}")

        def upload_file(api, *, path_or_fileobj, path_in_repo, repo_id, repo_type=None, commit_message=None, **kw):
            self.files[path_in_repo] = data(path_or_fileobj)
            self.commits.append(commit_message)

        def preupload_lfs_files(api, repo_id, additions, **kw):  # datasets deletes each shard once preuploaded
            for op in additions:
                staged[op.path_in_repo] = data(op.path_or_fileobj)

        def create_commit(api, repo_id, operations, *, commit_message, **kw):
            for op in operations:
                if type(op).__name__ == "CommitOperationAdd":
                    self.files[op.path_in_repo] = staged.pop(op.path_in_repo, None) or data(op.path_or_fileobj)
                else:
                    self.files.pop(op.path_in_repo, None)
            self.commits.append(commit_message)
            return SimpleNamespace(commit_url=f"https://hub.invalid/{repo_id}/commit/{len(self.commits)}")

        def in_repo(path: str) -> str:  # "datasets/owner/name@sha/README.md" -> "README.md"
            return path.split("@", 1)[1].split("/", 1)[1] if "@" in path else path

        def glob(fs, path, **kw):
            return {}  # a fresh repo: no earlier data shards to delete

        def open_(fs, path, mode="rb", **kw):
            key = in_repo(path)
            if key not in self.files:
                raise FileNotFoundError(path)
            raw = io.BytesIO(self.files[key])
            return raw if "b" in mode else io.TextIOWrapper(raw, encoding=kw.get("encoding") or "utf-8")

        for name, fn in [("create_repo", create_repo), ("repo_info", repo_info), ("upload_file", upload_file),
                         ("preupload_lfs_files", preupload_lfs_files), ("create_commit", create_commit)]:  # fmt: skip
            monkeypatch.setattr(HfApi, name, fn)
        monkeypatch.setattr(HfFileSystem, "glob", glob)
        monkeypatch.setattr(HfFileSystem, "open", open_)


def test_push_to_hub_uploads_with_datasets_own_push(env, monkeypatch) -> None:
    import io

    import pyarrow.parquet as pq

    from rsr_tasks.publish import push

    pub = _publish(env, select(env["store"].candidates("stu"), POLICY))
    hub = FakeHub(monkeypatch)
    url = push.fn(StateDir(env["home"]), pub, "team/math-sft", _tracking(env).uri)
    tags = _client(env).get_run(pub.mlflow_run_id).data.tags
    assert (tags["rsr.hub_repo"], tags["rsr.hub_commit"]) == ("team/math-sft", url)
    assert url.startswith("https://hub.invalid/team/math-sft/commit/") and hub.repos == {"team/math-sft"}
    assert hub.commits == [f"rsr-curate: dataset card of {pub.dataset_id}", f"rsr-curate: {pub.dataset_id}"]
    [shard] = [p for p in hub.files if p.endswith(".parquet")]
    assert shard.startswith("data/train-")
    rows = pq.read_table(io.BytesIO(hub.files[shard])).to_pylist()
    assert [r["trajectory_id"] for r in rows] == datasets.load_from_disk(str(pub.path))["trajectory_id"]
    card = DatasetCard(hub.files["README.md"].decode())  # ours, with datasets' metadata merged in
    assert pub.dataset_id in card.text and "truncated when scored" in card.text
    assert card.data.pretty_name == "math-sft" and card.data.dataset_info["splits"][0]["num_examples"] == 2
    assert card.data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
