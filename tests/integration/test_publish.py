"""rsr.publish.files end to end on real components: DuckDB file, MLflow sqlite store, datasets.load_from_disk, the
dataset card read back with huggingface_hub, and the task that publishes for a registered student."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
from huggingface_hub import DatasetCard

from rsr.publish import files as publish_mod
from rsr.publish.lineage import EXPERIMENT, Tracking
from rsr.publish.manifest import Publication
from rsr.select import select
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.writer import Store
from rsr_tasks.publish import publish as publish_task
from rsr_tasks.publish import select_trajectories
from rsr_tasks.score import find_student
from tests.support.publish_case import (
    INGEST_SHA,
    POLICY,
    assert_card,
    assert_mlflow_run,
    local_tracking,
    mlflow_client,
    publish_selected,
)


def test_publish_writes_dataset_card_mlflow_and_lineage(env) -> None:
    store: Store = env["store"]
    selected = select(store.candidates("stu"), POLICY)
    by_problem = {c.problem_id: c for c in selected}
    assert sorted(c.rsr for c in selected) == [0.5, 1.0]  # B on problem 1, A on problem 0

    pub = publish_selected(env, selected)
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
    assert_mlflow_run(mlflow_client(env), pub, env["sources"], env["run"])
    exp = mlflow_client(env).get_experiment_by_name(EXPERIMENT)
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
    first = publish_selected(env, selected)
    again = publish_selected(env, list(reversed(selected)), prefect_flow_run_id="prefect-456")
    assert again == first
    assert env["store"].query("SELECT count(*) FROM publications")[1] == [(1,)]
    client = mlflow_client(env)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert len(client.search_runs([exp.experiment_id])) == 1

    # A different selection is a different dataset, with its own digest, folder and row.
    other = publish_selected(env, selected[:1])
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
        publish_selected(env, selected)

    out = env["home"] / "datasets" / "math-sft"
    assert list(out.iterdir()) == []  # neither the final folder nor the temporary one
    assert store.query("SELECT count(*) FROM publications")[1] == [(0,)]
    assert store.query("SELECT count(*) FROM publication_items")[1] == [(0,)]
    client = mlflow_client(env)
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"

    monkeypatch.undo()  # the next attempt succeeds and is registered normally
    pub = publish_selected(env, selected)
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
    pub = publish_selected(env, selected)
    assert pub.path == leftover and not (leftover / "stale.txt").exists()
    assert sorted(p.name for p in leftover.parent.iterdir()) == [dataset_id]


def test_publish_refuses_empty_and_bad_names(env) -> None:
    with pytest.raises(ValueError, match="nothing selected"):
        publish_selected(env, [])
    selected = select(env["store"].candidates("stu"), POLICY)
    with pytest.raises(ValueError, match="folder name"):
        publish_selected(env, selected, name="../escape")


def test_digests_are_the_ones_taken_at_ingest(env) -> None:
    """A source file changed after ingest: the lineage keeps the digest of what was read, not of what is there."""
    env["sources"][0].write_text("edited after ingest\n")
    pub = publish_selected(env, select(env["store"].candidates("stu"), POLICY))
    run = mlflow_client(env).get_run(pub.mlflow_run_id)
    digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    assert digests["A.jsonl"] == INGEST_SHA["file"][:20] and digests["B-hf"] == INGEST_SHA["hf_dir"][:20]


def test_the_task_publishes_for_a_registered_student_without_loading_it(env, monkeypatch) -> None:
    """`tiny/student` is no model anywhere: the task reads its id from the students table (ref or id)."""
    import rsr.score.student

    def no_loading(*a, **k):
        raise AssertionError("publishing must not load the student")

    monkeypatch.setattr(rsr.score.student.Student, "from_spec", no_loading)  # every load goes through it
    env["store"].close()  # the task opens the state's database itself
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env['home'] / 'mlflow.db'}")
    state = StateDir(env["home"])

    def by(ref: str) -> Publication:
        found = find_student.fn(state.duckdb, StudentSpec(ref=ref, dtype="float32"))
        selection = select_trajectories.fn(state, found, POLICY)
        assert [t for t, _, _ in selection.ranking] == ["B", "A"]
        return publish_task.fn(state, env["run"], selection, "by-ref", "prefect-123")

    pub = by("tiny/student")
    assert pub.n_rows == 2
    assert by("stu") == pub  # the exact student_id names the same student
    with pytest.raises(ValueError, match="no registered student matches --student nobody.*tiny/student: --student stu"):
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

    pub = publish_selected(env, select(env["store"].candidates("stu"), POLICY))
    hub = FakeHub(monkeypatch)
    url = push.fn(StateDir(env["home"]), pub, "team/math-sft", local_tracking(env).uri)
    tags = mlflow_client(env).get_run(pub.mlflow_run_id).data.tags
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
