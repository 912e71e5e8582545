"""A small but complete state made by hand with rsr.store.Store (2 teachers, verdicts, a duplicate, a quarantined
line, two scoring runs, a publication): what `rsr sql`, `rsr report` and the SQL attacks read."""

from __future__ import annotations

from pathlib import Path

from rsr.metric import METRIC_VERSION
from rsr.records import Duplicate, Message, Problem, Rejected, Score, Trajectory, Verdict
from rsr.store.writer import Store

STUDENT_ID = "tiny-student@abc123"
STUDENT_REF = "tiny-student"
# (teacher, problem index, rsr, verdict); mean_surprisal is 1.0 so a teacher's dataset RSR is its mean rsr.
ROWS = [
    ("alpha-teacher", 0, 1.0, "correct"),
    ("alpha-teacher", 1, 2.0, "correct"),
    ("alpha-teacher", 2, None, "incorrect"),  # its scoring fails: an error row only
    ("beta-teacher", 0, 4.0, "correct"),
    ("beta-teacher", 1, 6.0, "no_answer"),
]


def _trajectory(teacher: str, i: int) -> Trajectory:
    return Trajectory.build(
        teacher=teacher,
        problem=f"What is {i} + {i}?",
        messages=[
            Message(role="user", content=f"What is {i} + {i}?"),
            Message(role="assistant", content=f"{teacher}: the answer is {2 * i}"),
        ],
        gold_answer=str(2 * i),
        source_file=f"/data/{teacher}.jsonl",
        source_line=i + 1,
    )


def _score(t: Trajectory, rsr: float | None, error: str | None = None) -> Score:
    return Score(
        trajectory_id=t.trajectory_id,
        student_id=STUDENT_ID,
        metric_version=METRIC_VERSION,
        r_max=100,
        dtype="float32",
        n_tokens=0 if error else 10,
        sum_rank=0 if error else 10 * rsr,
        sum_surprisal=0 if error else 10.0,
        rsr=rsr,
        mean_rank=rsr,
        mean_surprisal=None if error else 1.0,
        error=error,
        # front-loaded for a low RSR, back-loaded for a high one: the report's position plot has shapes to draw
        surprisal_profile=None if error else ([0.3, 0.2] + [0.0625] * 8 if rsr < 2 else [0.0625] * 8 + [0.2, 0.3]),
    )


def build_store(home: Path, mlflow_run_id: str | None = None) -> Path:
    """A small but complete state: 2 teachers, verdicts, a duplicate, a quarantined line, two scoring runs (alpha,
    then beta, plus one failed row), and a publication of alpha's two correct rows. Returns the database path."""
    home.mkdir(parents=True, exist_ok=True)
    db = home / "rsr.duckdb"
    trajs = {(teacher, i): _trajectory(teacher, i) for teacher, i, _, _ in ROWS}
    with Store.open(db) as store:
        run = store.start_run("curate-teacher", {"teacher": "alpha-teacher"})
        store.upsert_problems([Problem(problem_id=t.problem_id, text=t.problem, gold_answer=t.gold_answer)
                               for t in trajs.values()])  # fmt: skip
        store.add_trajectories(list(trajs.values()), run)
        store.set_verdicts([Verdict(trajectory_id=trajs[(t, i)].trajectory_id, verdict=v) for t, i, _, v in ROWS], run)
        store.set_duplicates(
            [Duplicate(trajectory_id=trajs[("beta-teacher", 1)].trajectory_id,
                       dup_of=trajs[("alpha-teacher", 1)].trajectory_id, similarity=0.95, kind="near")],
            run,
        )  # fmt: skip
        store.add_rejected([Rejected(source_file="/data/beta-teacher.jsonl", source_line=9, reason="broken JSON",
                                     raw="{")], run)  # fmt: skip
        store.register_student(STUDENT_ID, STUDENT_REF, "abc123", {"dtype": "float32"})
        store.finish_run(run, "completed")
        # Two scoring runs: alpha first, then beta (and a failed row for alpha's third trajectory, kept as history).
        for teacher in ("alpha-teacher", "beta-teacher"):
            score_run = store.start_run("rescore-student", {"teacher": teacher})
            store.add_scores([_score(trajs[(t, i)], r) for t, i, r, _ in ROWS if t == teacher and r is not None],
                             score_run)  # fmt: skip
            if teacher == "beta-teacher":
                store.add_scores([_score(trajs[("alpha-teacher", 2)], None, error="CUDA out of memory")], score_run)
            store.finish_run(score_run, "completed")
        pub_run = store.start_run("publish-dataset", {})
        picked = [trajs[("alpha-teacher", 0)], trajs[("alpha-teacher", 1)]]
        _, ids = store.query(
            "SELECT trajectory_id, score_id FROM latest_scores WHERE trajectory_id IN (?, ?)",
            [p.trajectory_id for p in picked],
        )
        store.record_publication(
            dict(
                dataset_id="d-test0000000000000001",
                name="tiny-sft",
                path=home / "datasets" / "tiny-sft",
                student_id=STUDENT_ID,
                policy="per_problem_min_rsr",
                params={},
                n_rows=2,
                content_digest="c0ffee",
                mlflow_run_id=mlflow_run_id,
                run_id=pub_run,
            ),
            [tuple(r) for r in ids],
        )
        store.finish_run(pub_run, "completed", mlflow_run_id=mlflow_run_id)
    return db
