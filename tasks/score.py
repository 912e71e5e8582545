"""The GPU-worker stage as Prefect tasks (rsr/stages/score.py does the work). `score_shard` is pure compute (no
DuckDB): it runs in-process, on a Prefect worker or on a Ray GPU node, and returns Score records that the flow,
the only writer, stores; a failed shard is retried."""

from prefect import task

from rsr.stages import score
from rsr.stages.score import FoundStudent, load_registered, load_student

__all__ = ["FoundStudent", "find_student", "load_registered", "load_student", "register_student", "score_shard"]

register_student = task(score.register_student, name="register-student")
find_student = task(score.find_student, name="find-student")
score_shard = task(score.score_shard, name="score-shard", retries=2, retry_delay_seconds=2)
