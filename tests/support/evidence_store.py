"""A state folder for the evidence beside a selection (issue 29): 3 teachers x 60 problems, scored by hand into a
real DuckDB file with lengths that vary as real responses do, an RSR that goes with length for one teacher, and
a copy of an initialised MLflow store. Deterministic: the same call builds the same store."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from rsr.metric import METRIC_VERSION
from rsr.records import Message, Score, Trajectory, Verdict
from rsr.store.writer import Store

STUDENT_ID = "tiny-student@evidence1"
STUDENT_REF = "tiny-student"
N_PROBLEMS = 60
# teacher -> (mean response tokens, base RSR, how much RSR grows per doubling of length)
TEACHERS = {"terse": (120, 1.6, 0.0), "steady": (300, 2.6, 0.05), "verbose": (700, 2.5, 0.9)}


def _rows(rng: random.Random) -> list[tuple[Trajectory, Score, str]]:
    out = []
    for teacher, (tokens, base, slope) in TEACHERS.items():
        for i in range(N_PROBLEMS):
            n = max(8, int(rng.lognormvariate(0, 0.6) * tokens))
            if i % 10 == 0:
                n = tokens  # some ties in length, as short answers have
            rsr = round(base + slope * (n / tokens - 1) + rng.gauss(0, 0.25), 2)  # rounded: ties in RSR too
            surprisal = rng.uniform(0.4, 1.2)
            chat = [Message(role="user", content=f"Problem {i}: what is {i} + {i}?"),
                    Message(role="assistant", content=f"{teacher} works it out ({n} tokens). {2 * i}")]  # fmt: skip
            t = Trajectory.build(teacher=teacher, problem=chat[0].content, messages=chat, gold_answer=str(2 * i),
                                 source_file=f"/data/{teacher}.jsonl", source_line=i + 1)  # fmt: skip
            score = Score(
                trajectory_id=t.trajectory_id, student_id=STUDENT_ID, metric_version=METRIC_VERSION, r_max=100,
                dtype="float32", n_tokens=n, sum_rank=n * rsr * surprisal, sum_surprisal=n * surprisal, rsr=rsr,
                mean_rank=rsr * surprisal, mean_surprisal=surprisal, sum_entropy=n * surprisal * 1.5,
                mean_entropy=surprisal * 1.5, n_top1=n // 2, top1_share=(n // 2) / n,
            )  # fmt: skip
            out.append((t, score, "incorrect" if i % 15 == 7 else "correct"))
    return out


def build_evidence_store(home: Path, mlflow_template: Path | None = None) -> Path:
    """The state folder at ``home`` (with ``mlflow_template`` copied in as its MLflow store); returns the database."""
    home.mkdir(parents=True, exist_ok=True)
    if mlflow_template is not None:
        shutil.copy(mlflow_template, home / "mlflow.db")
    rows = _rows(random.Random(29))
    with Store.open(home / "rsr.duckdb") as store:
        run = store.start_run("curate-teacher", {})
        store.add_trajectories([t for t, _, _ in rows], run)
        store.set_verdicts([Verdict(trajectory_id=t.trajectory_id, verdict=v) for t, _, v in rows], run)
        store.register_student(STUDENT_ID, STUDENT_REF, "evidence1", {"dtype": "float32", "ref": STUDENT_REF})
        store.add_scores([s for _, s, _ in rows], run)
        store.finish_run(run, "completed")
    return home / "rsr.duckdb"
