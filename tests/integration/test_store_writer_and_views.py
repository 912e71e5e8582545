"""rsr.store.writer on a real DuckDB file: migrations (from the v1 schema too), idempotent writes, score keys, views."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import pytest

from rsr.metric import METRIC_VERSION
from rsr.records import Duplicate, Message, Problem, Rejected, Score, Trajectory, Verdict
from rsr.store import connect as store_mod
from rsr.store.connect import SCHEMA_VERSION, writer_lock
from rsr.store.queries import Reader, ScoreKey
from rsr.store.writer import Store, score_id_for

TABLES = {
    "runs",
    "problems",
    "trajectories",
    "quarantine",
    "duplicates",
    "verdicts",
    "students",
    "chat_templates",
    "scores",
    "publications",
    "publication_items",
    "source_files",
    "ingest_counts",
    "schema_version",
    "benchmarks",  # issue 28: decontamination
    "benchmark_problems",
    "contamination_hits",
    "contamination_checks",
    "contamination_check_sets",
}
VIEWS = {
    "registrations",
    "teacher_summary",
    "trajectory_verdicts",
    "score_history",
    "latest_scores",
    "score_settings",
    "teacher_selection",
    "teacher_coverage",
    "dataset_lineage",
    "ingest_log",
    "contamination",  # issue 28
    "contamination_log",
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
    kw.setdefault("dtype", "float32")
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
    with Reader.open(db) as ro:
        assert ro.schema_version == SCHEMA_VERSION
        assert not hasattr(ro, "start_run")  # a Reader has no writes
        with pytest.raises(duckdb.Error):  # and its connection refuses them
            ro.query("INSERT INTO runs (run_id, flow_name, status) VALUES ('r', 'nope', 'running')")


def test_read_only_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no database yet"):
        Reader.open(tmp_path / "absent.duckdb")


def test_new_migration_is_applied_once_and_read_only_asks_to_migrate(db: Path, monkeypatch) -> None:
    Store.open(db).close()
    extra = store_mod.MIGRATIONS + ["ALTER TABLE students ADD COLUMN note VARCHAR"]
    monkeypatch.setattr(store_mod, "MIGRATIONS", extra)
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", len(extra))
    with pytest.raises(RuntimeError, match="open it read-write once"):
        Reader.open(db)
    for _ in range(2):  # the ALTER would fail if re-applied
        with Store.open(db) as s:
            assert s.schema_version == len(extra)
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


def test_the_response_is_stored_once_and_every_read_gives_the_whole_chat(store: Store) -> None:
    trace = "<think>\n" + "a long trace, " * 500 + '\n</think>\n\n$\\boxed{2}$ "quoted" é'
    t = Trajectory.build(
        teacher="A",
        problem="1+1?",
        messages=[
            Message(role="system", content="be brief"),
            Message(role="user", content="1+1?"),
            Message(role="assistant", content=trace),
        ],
        source_file="A.jsonl",
        source_line=1,
    )
    store.add_trajectories([t], "r1")
    _, [(stored, length)] = store.query("SELECT messages, length(response) FROM trajectories")
    assert len(stored) < 400 < length and "long trace" not in stored  # the trace is in `response` only
    assert store.get_trajectories() == [t]
    store.set_verdicts([Verdict(trajectory_id=t.trajectory_id, verdict="correct", gold_answer="2")], "r1")
    [row] = store.sft_rows([t.trajectory_id])
    assert json.loads(row["messages"]) == [m.model_dump() for m in t.messages]
    _, [(whole,)] = store.query(
        """SELECT replace(messages, '{"$rsr": "response"}', to_json(response)) FROM trajectories"""
    )  # the SQL form docs/sql.md gives
    assert json.loads(whole) == [m.model_dump() for m in t.messages]
    # a row stored before (the text twice) reads the same
    store.query("UPDATE trajectories SET messages = ?", [json.dumps([m.model_dump() for m in t.messages])])
    assert store.get_trajectories() == [t]


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
    assert [r[0] for r in store.unverified()] == sorted([a.trajectory_id, b.trajectory_id])
    store.set_verdicts([Verdict(trajectory_id=a.trajectory_id, verdict="no_gold", extracted_answer="x")], "v1")
    store.set_verdicts([Verdict(trajectory_id=b.trajectory_id, verdict="incorrect", gold_answer="z")], "v1")
    assert [r[0] for r in store.unverified()] == []
    # Gold arrives later: the no_gold verdict is offered again, and the re-verification replaces it.
    store.upsert_problems([Problem(problem_id=a.problem_id, text="q1", gold_answer="x")])
    assert [r[0] for r in store.unverified()] == [a.trajectory_id]
    assert [r[0] for r in store.unverified(teacher="B")] == []
    store.set_verdicts([Verdict(trajectory_id=a.trajectory_id, verdict="correct", gold_answer="x")], "v2")
    assert [r[0] for r in store.unverified()] == []
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
    ids = [t.trajectory_id for t in sorted(ts, key=lambda t: (t.problem_id, t.trajectory_id))]  # by problem
    fp32 = {"dtype": "float32"}
    assert store.unscored("stu", METRIC_VERSION, 100, **fp32) == ids
    assert store.unscored("stu", METRIC_VERSION, 100, **fp32, teacher="B") == [ts[3].trajectory_id]

    batch = [score(ts[0], 2, 1), score(ts[1], 3, 1)]
    assert store.add_scores(batch, "s1") == 2
    assert store.add_scores(batch, "s1-retry") == 0  # a retried shard adds nothing
    failed = score(ts[2], 0, 0, n=0, error="CUDA OOM")
    assert store.add_scores([failed], "s1") == 1
    assert store.add_scores([failed], "s1-retry") == 0
    # Error rows are history, not scores: offered again unless retry_errors=False.
    assert store.unscored("stu", METRIC_VERSION, 100, **fp32) == [
        i for i in ids if i in {ts[2].trajectory_id, ts[3].trajectory_id}
    ]
    assert store.unscored("stu", METRIC_VERSION, 100, **fp32, retry_errors=False) == [ts[3].trajectory_id]
    assert store.add_scores([score(ts[2], 4, 2)], "s2") == 1
    # Once a key has a successful score, neither a recomputation nor a late error is added.
    assert store.add_scores([score(ts[0], 9, 1), score(ts[0], 0, 0, error="late")], "s3") == 0
    # Other key components are other keys.
    assert store.unscored("stu", METRIC_VERSION, 50, **fp32) == ids
    assert store.unscored("other", METRIC_VERSION, 100, **fp32) == ids
    assert store.unscored("stu", "rsr-v0", 100, **fp32) == ids
    _, rows = store.query(
        "SELECT score_id FROM scores WHERE error IS NULL AND trajectory_id = ?", [ts[0].trajectory_id]
    )
    assert rows == [(score_id_for(batch[0]),)]


def test_a_score_answers_only_the_setting_it_was_made_in(store: Store) -> None:
    t = traj("A", "q", "r")
    store.add_trajectories([t], "r")
    assert store.add_scores([score(t, 2, 1, dtype="bfloat16")], "bf16") == 1
    # A bf16 score never answers a float32 request, nor one with another truncation limit: those score again.
    assert store.unscored("stu", METRIC_VERSION, 100, dtype="bfloat16") == []
    assert store.unscored("stu", METRIC_VERSION, 100, dtype="float32") == [t.trajectory_id]
    assert store.unscored("stu", METRIC_VERSION, 100, dtype="bfloat16", max_tokens=512) == [t.trajectory_id]
    assert (
        store.add_scores([score(t, 2.1, 1, dtype="float32"), score(t, 1, 1, dtype="bfloat16", max_tokens=512)], "x")
        == 2
    )
    assert store.unscored("stu", METRIC_VERSION, 100, dtype="float32") == []
    _, rows = store.query("SELECT dtype, max_tokens, rsr FROM latest_scores ORDER BY dtype, max_tokens NULLS FIRST")
    assert rows == [("bfloat16", None, 2.0), ("bfloat16", 512, 1.0), ("float32", None, 2.1)]
    # A score that does not say how it was made cannot be stored; nor can "auto" be asked for.
    with pytest.raises(ValueError, match="compute dtype"):
        store.add_scores([score(t, 2, 1, dtype=None)], "x")
    with pytest.raises(ValueError, match="never 'auto'"):
        store.unscored("stu", METRIC_VERSION, 100, dtype="auto")


def test_score_settings_count_truncated(store: Store) -> None:
    ts = [traj("A", f"q{i}", "r") for i in range(3)]
    store.register_student("stu", "tiny", "dg", {})
    store.add_trajectories(ts, "r")
    store.add_scores([score(ts[0], 2, 1), score(ts[1], 2, 1, truncated=True), score(ts[2], 0, 0, n=0, error="x")], "r")
    store.add_scores([score(ts[0], 2, 1, dtype="bfloat16", max_tokens=64, truncated=True)], "r")
    settings = [(s.key, s.student_label, s.n_scored, s.n_truncated) for s in store.score_settings("stu")]
    # The most recent setting first.
    assert settings == [(ScoreKey("bfloat16", 64), "tiny", 1, 1), (ScoreKey("float32"), "tiny", 2, 1)]
    assert store.score_settings("nobody") == []
    # Scored in one batch (same time): the setting with more rows first.
    store.add_scores([score(t, 2, 1, student_id="tie", max_tokens=4096 if i else None) for i, t in enumerate(ts)], "r")
    assert [(s.key.max_tokens, s.n_scored) for s in store.score_settings("tie")] == [(4096, 2), (None, 1)]


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
        store.record_publication(kw, [("t1", "s1"), ("t1", "s1")])
    assert store.get_publication("d-1") is None  # ... and the publication row is rolled back with it
    assert store.record_publication(kw, [("t1", "s1"), ("t2", "s2")]) is True
    assert store.record_publication(kw, [("t3", "s3")]) is False
    assert store.query("SELECT count(*) FROM publication_items")[1] == [(2,)]
    assert store.get_publication("d-1")["n_rows"] == 2


def _hand_made_case(store: Store) -> tuple[list[Trajectory], str]:
    """Teachers A (a3 a near duplicate of a2, a3's scoring failed, then scored truncated) and B (b1 also at
    r_max 50, b2 also under another metric version); verdicts for all. Returns [a1, a2, a3, b1, b2] and the run."""
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
    store.add_scores([score(b1, 2.5, 1, r_max=50)], run)  # another r_max: another key, shown beside it
    store.add_scores([score(a3, 0.1, 1, truncated=True)], run)  # truncated: shown, but never ranks a teacher
    return [a1, a2, a3, b1, b2], run


def _assert_teacher_selection_and_coverage(store: Store) -> None:
    cols, rows = store.query("SELECT * FROM teacher_selection ORDER BY r_max DESC, rank")
    assert cols == ["student_id", "student_ref", "student_label", "teacher", "dtype", "max_tokens", "r_max",
                    "dataset_rsr", "n", "accuracy", "mean_response_tokens", "rank", "n_ingested", "n_scored",
                    "n_failed", "n_truncated", "on_subset", "reasoning_tokens", "answer_tokens", "tool_tokens",
                    "dropped_tool_calls", "rsr_length_spearman"]  # fmt: skip
    rows = [(r[0], r[1], *r[3:]) for r in rows]  # the label: registrations' own test
    # By hand: A = (2 + 4) / (1 + 4) = 1.2 (not the mean of RSRs, 1.5; a3 is truncated); B = (3 + 1) / (1 + 2).
    # Coverage: A's a3 failed once, then scored truncated: 3 scored, 1 truncated, so A's RSR rests on a subset;
    # at r_max 50 only b1 of B's two is scored.
    assert [r[:11] for r in rows] == [
        ("stu", "tiny-student", "A", "float32", None, 100, pytest.approx(1.2), 2, 0.5, 10.0, 1),
        ("stu", "tiny-student", "B", "float32", None, 100, pytest.approx(4 / 3), 2, 1.0, 10.0, 2),
        ("stu", "tiny-student", "B", "float32", None, 50, pytest.approx(2.5), 1, 1.0, 10.0, 1),
    ]
    assert [r[11:16] for r in rows] == [(3, 3, 0, 1, True), (2, 2, 0, 0, False), (2, 1, 0, 0, True)]
    _, rows = store.query(
        "SELECT teacher, r_max, n_ingested, n_scored, n_failed, n_truncated, n_unscored FROM teacher_coverage "
        "ORDER BY r_max DESC, teacher"
    )
    assert rows == [
        ("A", 100, 3, 3, 0, 1, 0),
        ("B", 100, 2, 2, 0, 0, 0),
        ("A", 50, 3, 0, 0, 0, 3),
        ("B", 50, 2, 1, 0, 0, 1),
    ]


def _assert_dataset_lineage(store: Store, b2: Trajectory, run: str) -> None:
    store.record_publication(
        dict(
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
        ),
        [(b2.trajectory_id, score_id_for(score(b2, 1, 2)))],
    )
    _, rows = store.query("SELECT * FROM dataset_lineage")
    sid = score_id_for(score(b2, 1, 2))
    assert rows == [("d-1", "ds", "stu", "tiny-student", b2.trajectory_id, "B", sid, 0.5, run, "pub-run", "ml")]


def test_views_on_a_hand_made_case(store: Store) -> None:
    (a1, a2, a3, b1, b2), run = _hand_made_case(store)

    cols, rows = store.query("SELECT * FROM teacher_summary ORDER BY teacher")
    assert cols == ["teacher", "n_trajectories", "n_unique", "n_correct", "n_incorrect", "n_no_answer", "accuracy"]
    assert rows == [("A", 3, 2, 1, 1, 1, pytest.approx(1 / 3)), ("B", 2, 2, 2, 0, 0, 1.0)]

    cols, rows = store.query("SELECT * FROM trajectory_verdicts WHERE trajectory_id = ?", [a2.trajectory_id])
    assert cols == ["trajectory_id", "source_id", "teacher", "problem_id", "extracted_answer", "gold_answer", "verdict"]
    assert rows == [(a2.trajectory_id, None, "A", a2.problem_id, "5", "2", "incorrect")]

    _, rows = store.query("SELECT trajectory_id, r_max, rsr, dtype, max_tokens, truncated FROM latest_scores")
    assert sorted(rows) == sorted([
        (a1.trajectory_id, 100, 2.0, "float32", None, False),
        (a2.trajectory_id, 100, 1.0, "float32", None, False),
        (a3.trajectory_id, 100, 0.1, "float32", None, True),
        (b1.trajectory_id, 100, 3.0, "float32", None, False),
        (b1.trajectory_id, 50, 2.5, "float32", None, False),
        (b2.trajectory_id, 100, 0.5, "float32", None, False),
    ])  # fmt: skip

    _assert_teacher_selection_and_coverage(store)

    _, rows = store.query("SELECT count(*), count(DISTINCT flow_name), any_value(student_ref) FROM score_history")
    assert rows == [(8, 1, "tiny-student")]

    _assert_dataset_lineage(store, b2, run)


def test_bulk_inserts_are_idempotent(store: Store) -> None:
    n = 10_000  # one Arrow batch per call; how fast is benchmarks' business, not a test's
    ts = [traj(f"T{i % 8}", f"problem {i % 1000}", f"answer {i} " + "x" * 500, i + 1) for i in range(n)]
    assert store.add_trajectories(ts, "r") == n
    assert store.add_scores([score(t, 2, 1) for t in ts], "r") == n
    assert store.add_trajectories(ts, "r") == 0 and store.add_scores([score(t, 2, 1) for t in ts], "r") == 0
    assert store.unscored("stu", METRIC_VERSION, 100, dtype="float32") == []


def test_query_df(store: Store) -> None:
    store.add_trajectories([traj("A", "q", "r")], "r")
    df = store.query_df("SELECT teacher, n_trajectories FROM teacher_summary WHERE teacher = $t", {"t": "A"})
    assert df.to_dict("records") == [{"teacher": "A", "n_trajectories": 1}]


# The views as version 1 created them at every open (only what the migration must replace).
V1_VIEWS = """
CREATE VIEW latest_scores AS SELECT s.trajectory_id, s.student_id, s.rsr FROM scores s WHERE s.error IS NULL;
CREATE VIEW teacher_leaderboard AS SELECT student_id, count(*) AS n FROM latest_scores GROUP BY student_id;
"""


def test_a_version_1_database_migrates_in_place_and_keeps_its_rows(db: Path) -> None:
    db.parent.mkdir(parents=True)
    t = traj("A", "q", "r")
    with duckdb.connect(str(db)) as con:  # what rsr-curate 1 left behind: its schema, views and rows
        con.execute(store_mod.MIGRATIONS[0])
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
        con.execute("INSERT INTO schema_version VALUES (1, now())")
        con.execute(V1_VIEWS)
        con.execute(
            "INSERT INTO trajectories VALUES (?, NULL, 'A', ?, 'q', '[]', 'r', NULL, NULL, 'a.jsonl', 1, NULL, now())",
            [t.trajectory_id, t.problem_id],
        )
        info = '{"dtype": "bfloat16", "context_length": 8192}'
        con.execute("INSERT INTO students VALUES ('stu', 'tiny', 'dg', ?, now())", [info])
        con.execute("INSERT INTO students VALUES ('old', 'older', 'dg', '{}', now())")
        con.execute("INSERT INTO students VALUES ('cut', 'short', 'dg', ?, now())", [info])
        for sid, student, truncated in (("s-1", "stu", False), ("s-2", "old", False), ("s-3", "cut", True)):
            con.execute(
                "INSERT INTO scores VALUES (?, ?, ?, ?, 100, 10, 20, 10, 20, 2, 2, 1, 2, ?, NULL, 'r', now())",
                [sid, t.trajectory_id, student, METRIC_VERSION, truncated],
            )
    with Store.open(db) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert _objects(s, "VIEW") == VIEWS  # teacher_leaderboard gone, the new views there
        _, rows = s.query("SELECT score_id, dtype, max_tokens, rsr FROM latest_scores ORDER BY score_id")
        # What is known: the dtype the student was registered with, else 'unknown'; the context length as the
        # limit where the row was not truncated (no limit cut it), else unknown.
        assert rows == [("s-1", "bfloat16", 8192, 2.0), ("s-2", "unknown", None, 2.0), ("s-3", "bfloat16", None, 2.0)]
        # Kept rows still answer their own setting, and a new setting scores again.
        assert s.unscored("stu", METRIC_VERSION, 100, dtype="bfloat16", max_tokens=8192) == []
        assert s.unscored("stu", METRIC_VERSION, 100, dtype="float32", max_tokens=8192) == [t.trajectory_id]
        assert s.unscored("cut", METRIC_VERSION, 100, dtype="bfloat16", max_tokens=8192) == [t.trajectory_id]
        _, rows = s.query("SELECT teacher, dataset_rsr, n, rank FROM teacher_selection WHERE student_id = 'stu'")
        assert rows == [("A", 2.0, 1, 1)]


def test_views_are_made_by_migrations_for_the_current_metric_version(db: Path) -> None:
    with Store.open(db) as s:
        _, [(sql,)] = s.query("SELECT sql FROM duckdb_views() WHERE view_name = 'latest_scores'")
        # A new METRIC_VERSION needs a migration that redefines the views (store.VIEWS_METRIC_VERSION follows it).
        assert f"'{METRIC_VERSION}'" in sql and store_mod.VIEWS_METRIC_VERSION == METRIC_VERSION
        s._con.execute("DROP VIEW score_settings")  # a re-open does not re-create views: only migrations do
    with Store.open(db) as s:
        assert "score_settings" not in _objects(s, "VIEW")


def test_source_files_record_digests_once(store: Store) -> None:
    assert store.add_source_file("/in/a.jsonl", "aa", 10, "file", "A", "r1") is True
    assert store.add_source_file("/in/a.jsonl", "aa", 10, "file", "A", "r2") is False  # same content again
    assert store.add_source_file("/in/hf", "hh", 99, "hf_dir", "B", "r1") is True
    assert store.add_source_file("/in/a.jsonl", "bb", 12, "file", "A", "r3") is True  # the file changed
    assert store.add_source_file("/in/gold.jsonl", "gg", 5, "file", None, "r3") is True  # problems: no teacher
    newest = {(f.path, f.sha256, f.kind, f.run_id) for f in store.source_files(teacher="A")}
    assert newest == {("/in/a.jsonl", "bb", "file", "r3")}
    assert [f.path for f in store.source_files(paths=[Path("/in/hf"), "/in/gold.jsonl"])] == [
        "/in/gold.jsonl",
        "/in/hf",
    ]
    assert len(store.source_files()) == 3
    with pytest.raises(ValueError, match="file' or 'hf_dir"):
        store.add_source_file("/in/x", "xx", 1, "url", "A", None)


def test_read_only_open_while_a_flow_writes_reads_a_snapshot(db: Path) -> None:
    with Store.open(db) as s:
        s.start_run("first", {})
    with writer_lock(db.parent, "flow pipeline"):
        with Reader.open(db) as ro:
            assert ro.note and "flow pipeline" in ro.note and "snapshot" in ro.note
            assert ro.query("SELECT flow_name FROM runs")[1] == [("first",)]
            with pytest.raises(duckdb.Error):
                ro.query("INSERT INTO runs (run_id, flow_name, status) VALUES ('r', 'nope', 'running')")
    with Reader.open(db) as ro:  # nobody writing: the live file
        assert ro.note is None
        assert ro.get_trajectories(["t-none"]) == []  # Arrow batches work on the guarded connection
    assert sorted(p.name for p in db.parent.iterdir()) == ["rsr.duckdb", "writer.lock"]  # no snapshot left behind


def test_tools_round_trip_and_the_ingest_log_adds_up(tmp_path: Path) -> None:
    from rsr.score.io import tools_of
    from rsr.store.queries import IngestCounts

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    plain = traj("a", "p1", "r1")
    offered = plain.model_copy(update={"tools": tools, "trajectory_id": "t-tools"})
    with Store.open(tmp_path / "rsr.duckdb") as store:
        run = store.start_run("curate-teacher", {"teacher": "a"})
        store.add_trajectories([plain, offered], run)
        got = {t.trajectory_id: t.tools for t in store.get_trajectories([plain.trajectory_id, "t-tools"])}
        store.add_ingest_counts(run, "a", IngestCounts("a.jsonl", 5, 2, 2, 1, "messages", {"messages": "traj"}))
        store.set_duplicates([Duplicate(trajectory_id="t-tools", dup_of=plain.trajectory_id, similarity=0.95,
                                        kind="near")], run)  # fmt: skip
        store.merge_run_params(run, {"read_as": {"a.jsonl": {"format": "messages"}}})
        (log,) = store.ingest_log(run)
        _, [(params,)] = store.query("SELECT params FROM runs WHERE run_id = ?", [run])
    assert got == {plain.trajectory_id: None, "t-tools": tools}
    assert tools_of([plain]) == {} and tools_of([plain, offered]) == {"tools": [None, tools]}
    assert (log.records, log.stored, log.repeats, log.quarantined, log.near_duplicates) == (5, 2, 2, 1, 1)
    assert json.loads(log.fields) == {"messages": "traj"} and log.format == "messages"
    assert json.loads(params) == {"teacher": "a", "read_as": {"a.jsonl": {"format": "messages"}}}
