"""rsr.store on a real DuckDB file: migrations, idempotent writes, scores bookkeeping, views' numbers."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import duckdb
import pytest

from rsr import store as store_mod
from rsr.metric import METRIC_VERSION
from rsr.records import Duplicate, Message, Problem, Rejected, Score, Trajectory, Verdict
from rsr.store import SCHEMA_VERSION, Store, score_id_for

TABLES = {
    "runs",
    "problems",
    "trajectories",
    "quarantine",
    "duplicates",
    "verdicts",
    "students",
    "scores",
    "publications",
    "publication_items",
    "schema_version",
}
VIEWS = {
    "teacher_summary",
    "trajectory_verdicts",
    "score_history",
    "latest_scores",
    "teacher_leaderboard",
    "dataset_lineage",
}


def traj(teacher: str, problem: str, response: str, line: int = 1, gold: str | None = None) -> Trajectory:
    return Trajectory.build(
        teacher=teacher,
        problem=problem,
        messages=[Message(role="user", content=problem), Message(role="assistant", content=response)],
        gold_answer=gold,
        source_file=f"{teacher}.jsonl",
        source_line=line,
    )


def score(t: Trajectory | str, mean_rank: float, mean_surprisal: float, n: int = 10, **kw) -> Score:
    tid = t if isinstance(t, str) else t.trajectory_id
    kw.setdefault("student_id", "stu")
    kw.setdefault("metric_version", METRIC_VERSION)
    kw.setdefault("r_max", 100)
    return Score(
        trajectory_id=tid,
        n_tokens=n,
        sum_rank=mean_rank * n,
        sum_surprisal=mean_surprisal * n,
        sum_rank_unclipped=mean_rank * n,
        rsr=mean_rank / mean_surprisal if mean_surprisal else math.nan,
        mean_rank=mean_rank,
        mean_surprisal=mean_surprisal,
        mean_rank_unclipped=mean_rank,
        **kw,
    )


@pytest.fixture
def db(state_dir: Path) -> Path:
    return state_dir / "rsr.duckdb"


@pytest.fixture
def store(db: Path):
    with Store.open(db) as s:
        yield s


def _objects(s: Store, kind: str) -> set[str]:
    _, rows = s.query("SELECT table_name FROM information_schema.tables WHERE table_type = ?", [kind])
    return {r[0] for r in rows}


def test_open_creates_schema_and_reopen_is_noop(db: Path) -> None:
    with Store.open(db) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert _objects(s, "BASE TABLE") == TABLES
        assert _objects(s, "VIEW") == VIEWS
        run = s.start_run("ingest", {"x": 1})
    with Store.open(db) as s:  # second open: no migration re-applied, data kept
        assert s.query("SELECT count(*) FROM schema_version")[1] == [(SCHEMA_VERSION,)]
        assert s.query("SELECT run_id FROM runs")[1] == [(run,)]
    with Store.open(db, read_only=True) as ro:
        assert ro.read_only and ro.schema_version == SCHEMA_VERSION
        with pytest.raises(duckdb.Error):
            ro.start_run("nope", {})


def test_read_only_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database yet"):
        Store.open(tmp_path / "absent.duckdb", read_only=True)


def test_new_migration_is_applied_once_and_read_only_asks_to_migrate(db: Path, monkeypatch) -> None:
    Store.open(db).close()
    extra = store_mod.MIGRATIONS + ["ALTER TABLE students ADD COLUMN note VARCHAR"]
    monkeypatch.setattr(store_mod, "MIGRATIONS", extra)
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", len(extra))
    with pytest.raises(RuntimeError, match="open it read-write once"):
        Store.open(db, read_only=True)
    for _ in range(2):  # the ALTER would fail if re-applied
        with Store.open(db) as s:
            assert s.schema_version == 2
            assert "note" in s.query_df("SELECT * FROM students").columns


def test_newer_database_is_refused(db: Path, monkeypatch) -> None:
    Store.open(db).close()
    monkeypatch.setattr(store_mod, "MIGRATIONS", [])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 0)
    with pytest.raises(RuntimeError, match="newer than this code"):
        Store.open(db)


def test_runs_lifecycle(store: Store) -> None:
    run = store.start_run("curate_teacher", {"teacher": "A", "path": Path("/x")}, prefect_flow_run_id="pf-1")
    store.set_run_mlflow(run, "ml-1")
    _, [(status, finished, params, pf, ml)] = store.query(
        "SELECT status, finished_at, params, prefect_flow_run_id, mlflow_run_id FROM runs"
    )
    assert (status, finished, json.loads(params), pf, ml) == (
        "running",
        None,
        {"teacher": "A", "path": "/x"},
        "pf-1",
        "ml-1",
    )
    store.finish_run(run, "completed")
    _, [(status, finished, ml)] = store.query("SELECT status, finished_at, mlflow_run_id FROM runs")
    assert status == "completed" and finished is not None and ml == "ml-1"


def test_trajectories_roundtrip_and_reingest_adds_nothing(store: Store) -> None:
    ts = [traj("A", "1+1?", "2", 1, gold="2"), traj("A", "2+2?", "4", 2), traj("B", "1+1?", "two", 1)]
    assert store.add_trajectories(ts + [ts[0]], "r1") == 3  # in-batch repeat counted once
    assert store.add_trajectories(ts, "r2") == 0
    assert store.get_trajectories([ts[2].trajectory_id, "t-missing", ts[0].trajectory_id]) == [ts[2], ts[0]]
    assert store.get_trajectories(teacher="A") == ts[:2]
    assert store.get_trajectories([ts[0].trajectory_id, ts[2].trajectory_id], teacher="B") == [ts[2]]
    assert len(store.get_trajectories()) == 3
    assert store.query("SELECT DISTINCT run_id FROM trajectories")[1] == [("r1",)]


def test_problems_gold_is_filled_in_not_overwritten(store: Store) -> None:
    store.upsert_problems([Problem(problem_id="p1", text="1+1?"), Problem(problem_id="p2", text="x", gold_answer="3")])
    store.upsert_problems(
        [
            Problem(problem_id="p1", text="1+1?", gold_answer="2", source="gold.jsonl"),
            Problem(problem_id="p2", text="x", gold_answer="999", source="other.jsonl"),
        ]
    )
    _, rows = store.query("SELECT problem_id, gold_answer, source FROM problems ORDER BY problem_id")
    assert rows == [("p1", "2", "gold.jsonl"), ("p2", "3", None)]


def test_rejected_is_idempotent(store: Store) -> None:
    rej = [Rejected(source_file="a.jsonl", source_line=3, reason="bad json", raw="{")]
    assert store.add_rejected(rej, "r1") == 1
    assert store.add_rejected(rej, "r2") == 0
    assert store.add_rejected([rej[0].model_copy(update={"reason": "other"})], "r2") == 1


def test_verdicts_latest_wins_and_unverified(store: Store) -> None:
    a, b = traj("A", "q1", "x"), traj("A", "q2", "y")
    store.add_trajectories([a, b], "r")
    assert store.unverified_ids() == sorted([a.trajectory_id, b.trajectory_id])
    store.set_verdicts([Verdict(trajectory_id=a.trajectory_id, verdict="no_gold", extracted_answer="x")], "v1")
    store.set_verdicts([Verdict(trajectory_id=b.trajectory_id, verdict="incorrect", gold_answer="z")], "v1")
    assert store.unverified_ids() == []
    # Gold arrives later: the no_gold verdict is offered again, and the re-verification replaces it.
    store.upsert_problems([Problem(problem_id=a.problem_id, text="q1", gold_answer="x")])
    assert store.unverified_ids() == [a.trajectory_id]
    assert store.unverified_ids(teacher="B") == []
    store.set_verdicts([Verdict(trajectory_id=a.trajectory_id, verdict="correct", gold_answer="x")], "v2")
    assert store.unverified_ids() == []
    _, rows = store.query("SELECT verdict, run_id FROM verdicts WHERE trajectory_id = ?", [a.trajectory_id])
    assert rows == [("correct", "v2")]


def test_students_register_is_upsert(store: Store) -> None:
    store.register_student("s1", "HuggingFaceTB/SmolLM2-135M", "abc", {"vocab": 49152})
    first = store.students()[0]
    store.register_student("s1", "HuggingFaceTB/SmolLM2-135M", "abc", {"vocab": 49152, "dtype": "f16"})
    [again] = store.students()
    assert again.info == {"vocab": 49152, "dtype": "f16"}
    assert again.registered_at == first.registered_at


def test_scores_keyed_unscored_and_idempotent(store: Store) -> None:
    ts = [traj("A", f"q{i}", "r") for i in range(3)] + [traj("B", "q0", "r")]
    store.add_trajectories(ts, "r")
    ids = sorted(t.trajectory_id for t in ts)
    assert store.unscored("stu", METRIC_VERSION, 100) == ids
    assert store.unscored("stu", METRIC_VERSION, 100, teacher="B") == [ts[3].trajectory_id]

    batch = [score(ts[0], 2, 1), score(ts[1], 3, 1)]
    assert store.add_scores(batch, "s1") == 2
    assert store.add_scores(batch, "s1-retry") == 0  # a retried shard adds nothing
    failed = score(ts[2], 0, 0, n=0, error="CUDA OOM")
    assert store.add_scores([failed], "s1") == 1
    assert store.add_scores([failed], "s1-retry") == 0
    # Error rows are history, not scores: offered again unless retry_errors=False.
    assert store.unscored("stu", METRIC_VERSION, 100) == sorted([ts[2].trajectory_id, ts[3].trajectory_id])
    assert store.unscored("stu", METRIC_VERSION, 100, retry_errors=False) == [ts[3].trajectory_id]
    assert store.add_scores([score(ts[2], 4, 2)], "s2") == 1
    # Once a key has a successful score, neither a recomputation nor a late error is added.
    assert store.add_scores([score(ts[0], 9, 1), score(ts[0], 0, 0, error="late")], "s3") == 0
    # Other key components are other keys.
    assert store.unscored("stu", METRIC_VERSION, 50) == ids
    assert store.unscored("other", METRIC_VERSION, 100) == ids
    assert store.unscored("stu", "rsr-v0", 100) == ids
    _, rows = store.query(
        "SELECT score_id FROM scores WHERE error IS NULL AND trajectory_id = ?", [ts[0].trajectory_id]
    )
    assert rows == [(score_id_for(batch[0]),)]


def test_record_publication_is_one_transaction(store: Store) -> None:
    kw = dict(
        dataset_id="d-1",
        name="n",
        path="/p",
        student_id="stu",
        policy="per_problem_min_rsr",
        params={},
        n_rows=2,
        content_digest="c",
        mlflow_run_id=None,
        run_id="r",
    )
    with pytest.raises(duckdb.ConstraintException):  # same item twice: the items insert fails ...
        store.record_publication(**kw, items=[("t1", "s1"), ("t1", "s1")])
    assert store.get_publication("d-1") is None  # ... and the publication row is rolled back with it
    assert store.record_publication(**kw, items=[("t1", "s1"), ("t2", "s2")]) is True
    assert store.record_publication(**kw, items=[("t3", "s3")]) is False
    assert store.query("SELECT count(*) FROM publication_items")[1] == [(2,)]
    assert store.get_publication("d-1")["n_rows"] == 2


def test_views_on_a_hand_made_case(store: Store) -> None:
    a1, a2, a3 = traj("A", "p1", "a1"), traj("A", "p2", "a2"), traj("A", "p2", "a2 again")
    b1, b2 = traj("B", "p1", "b1"), traj("B", "p2", "b2")
    store.add_trajectories([a1, a2, a3, b1, b2], "ingest-run")
    store.set_duplicates(
        [Duplicate(trajectory_id=a3.trajectory_id, dup_of=a2.trajectory_id, similarity=0.9, kind="near")], "d"
    )
    store.set_verdicts(
        [
            Verdict(trajectory_id=a1.trajectory_id, verdict="correct", extracted_answer="1", gold_answer="1"),
            Verdict(trajectory_id=a2.trajectory_id, verdict="incorrect", extracted_answer="5", gold_answer="2"),
            Verdict(trajectory_id=a3.trajectory_id, verdict="no_answer"),
            Verdict(trajectory_id=b1.trajectory_id, verdict="correct"),
            Verdict(trajectory_id=b2.trajectory_id, verdict="correct"),
        ],
        "v",
    )
    store.register_student("stu", "tiny-student", "dg", {})
    run = store.start_run("rescore_student", {})
    store.add_scores(
        [
            score(a1, 2, 1),
            score(a2, 4, 4),
            score(a3, 0, 0, n=0, error="boom"),  # errors never reach latest_scores
            score(b1, 3, 1),
            score(b2, 1, 2),
            score(b2, 50, 1, metric_version="rsr-v0"),  # another metric version: ignored
        ],
        run,
    )
    store.add_scores([score(b1, 2.5, 1, r_max=50)], run)  # newer score for (b1, stu): it wins

    cols, rows = store.query("SELECT * FROM teacher_summary ORDER BY teacher")
    assert cols == ["teacher", "n_trajectories", "n_unique", "n_correct", "n_incorrect", "n_no_answer", "accuracy"]
    assert rows == [("A", 3, 2, 1, 1, 1, pytest.approx(1 / 3)), ("B", 2, 2, 2, 0, 0, 1.0)]

    cols, rows = store.query("SELECT * FROM trajectory_verdicts WHERE trajectory_id = ?", [a2.trajectory_id])
    assert cols == ["trajectory_id", "source_id", "teacher", "problem_id", "extracted_answer", "gold_answer", "verdict"]
    assert rows == [(a2.trajectory_id, None, "A", a2.problem_id, "5", "2", "incorrect")]

    _, rows = store.query("SELECT trajectory_id, rsr, r_max FROM latest_scores ORDER BY trajectory_id")
    assert dict((t, (r, m)) for t, r, m in rows) == {
        a1.trajectory_id: (2.0, 100),
        a2.trajectory_id: (1.0, 100),
        b1.trajectory_id: (2.5, 50),
        b2.trajectory_id: (0.5, 100),
    }
    cols, _ = store.query("SELECT * FROM latest_scores")
    assert cols[:13] == [
        "trajectory_id",
        "teacher",
        "problem_id",
        "student_id",
        "student",
        "rsr",
        "n_tokens",
        "mean_rank",
        "mean_surprisal",
        "truncated",
        "score_id",
        "run_id",
        "scored_at",
    ]

    cols, rows = store.query("SELECT * FROM teacher_leaderboard ORDER BY dataset_rsr")
    assert cols == ["student_id", "student", "teacher", "dataset_rsr", "accuracy", "n"]
    # By hand: A = (2 + 4) / (1 + 4) = 1.2 (not the mean of RSRs, 1.5); B = (2.5 + 1) / (1 + 2) = 7/6.
    assert rows == [
        ("stu", "tiny-student", "B", pytest.approx(7 / 6), 1.0, 2),
        ("stu", "tiny-student", "A", pytest.approx(1.2), pytest.approx(1 / 3), 2),
    ]

    _, rows = store.query("SELECT count(*), count(DISTINCT flow_name), any_value(student) FROM score_history")
    assert rows == [(7, 1, "tiny-student")]

    store.record_publication(
        dataset_id="d-1",
        name="ds",
        path="/p",
        student_id="stu",
        policy="top_teachers",
        params={},
        n_rows=1,
        content_digest="c",
        mlflow_run_id="ml",
        run_id="pub-run",
        items=[(b2.trajectory_id, score_id_for(score(b2, 1, 2)))],
    )
    _, rows = store.query("SELECT * FROM dataset_lineage")
    assert rows == [("d-1", "ds", b2.trajectory_id, "B", score_id_for(score(b2, 1, 2)), 0.5, run, "pub-run", "ml")]


def test_bulk_inserts_are_fast(store: Store) -> None:
    n = 10_000
    ts = [traj(f"T{i % 8}", f"problem {i % 1000}", f"answer {i} " + "x" * 500, i + 1) for i in range(n)]
    t0 = time.perf_counter()
    assert store.add_trajectories(ts, "r") == n
    t1 = time.perf_counter()
    assert store.add_scores([score(t, 2, 1) for t in ts], "r") == n
    t2 = time.perf_counter()
    assert store.add_trajectories(ts, "r") == 0 and store.add_scores([score(t, 2, 1) for t in ts], "r") == 0
    print(f"10k trajectories {t1 - t0:.3f}s, 10k scores {t2 - t1:.3f}s")
    # Generous bounds for slow CI machines; measured ~0.3-0.5 s and ~0.2 s.
    assert t1 - t0 < 5 and t2 - t1 < 5
    assert store.unscored("stu", METRIC_VERSION, 100) == []


def test_query_df(store: Store) -> None:
    store.add_trajectories([traj("A", "q", "r")], "r")
    df = store.query_df("SELECT teacher, n_trajectories FROM teacher_summary WHERE teacher = $t", {"t": "A"})
    assert df.to_dict("records") == [{"teacher": "A", "n_trajectories": 1}]
