"""The GPU-worker stage. `score_shard` is pure compute (no DuckDB): it runs in-process, on a Prefect worker or
on a Ray GPU node, and returns Score records that the flow, the only writer, stores."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from rsr.records import Score
from rsr.score.load import auto_device, dtype_name, parse_dtype
from rsr.spec import Registration, StudentSpec
from rsr.store.queries import Reader, ScoreKey
from rsr.store.writer import Store

if TYPE_CHECKING:
    from rsr.score.student import Student


@lru_cache(maxsize=2)
def _student(key: str) -> Student:
    # One load per process: a worker scoring many shards keeps the model in memory.
    from rsr.score.student import Student  # here: torch (~235 MB) only where a student runs, not in the CPU stages

    return Student.from_spec(StudentSpec.model_validate_json(key))


def load_student(spec: StudentSpec) -> Student:
    return _student(spec.key())


def load_registered(registration: Registration) -> Student:
    """A registered student, loaded as it was registered (its template by content, its options); refused if the
    model is not the one scored (its weights changed since)."""
    student = load_student(registration.spec())
    if student.student_id != registration.student_id:
        raise ValueError(
            f"student {registration.label!r} is now {student.student_id}, scored as {registration.student_id}: "
            f"its weights or template changed since; register it again (rsr add-student)"
        )
    return student


def register_student(db: Path, spec: StudentSpec) -> Registration:
    """Load the student (converting an embedded GGUF once) and record its identity: how it was named, its template
    by content, its options, and its publishing settings."""
    student = load_student(spec)
    if student.chat_template is None:
        raise ValueError(f"student {spec.ref!r} has no chat template: set chat_template (chatml, llama3 or a file)")
    info = student.info() | spec.model_dump(mode="json", include={"chat_template", "policy", "output", "baseline"})
    with Store.open(db) as store:
        store.register_student(student.student_id, spec.ref, student.digest, info, spec, student.chat_template)
        return store.find_student(StudentSpec(ref=student.student_id))


@dataclass(frozen=True)
class FoundStudent:
    student: Registration
    key: ScoreKey  # which of its scores to select by


def find_student(db: Path, spec: StudentSpec) -> FoundStudent:
    """The registered student this spec names (rsr.spec.pick_registration: the one rule) and which of its scores to
    select by: the most recent setting in the spec's dtype ("auto": this machine's), so a bf16 score never answers
    a float32 request. Nothing is loaded: the store knows the registration."""
    dtype = dtype_name(parse_dtype(spec.dtype, auto_device()))
    with Reader.open(db) as reader:
        registration = reader.find_student(spec)
        key = reader.current_setting(registration.student_id, dtype)
    if key is None:
        raise ValueError(
            f"student {registration.label} ({registration.student_id}) has no {dtype} scores: "
            f"`rsr add-student {registration.student_id} --dtype {dtype}`"
        )
    return FoundStudent(registration, key)


def score_shard(
    spec: StudentSpec,
    student_id: str,
    items: list[tuple[str, list[dict], list[dict] | None]],
    max_tokens: int | None = None,
) -> list[Score]:
    """Score one shard of (trajectory_id, messages, tools). Refuses to run a different student than was registered.
    The tools (function schemas) reach the student's chat template, passed only when some chat has them."""
    student = load_student(spec)
    if student.student_id != student_id:
        raise RuntimeError(f"worker has {student.student_id}, the flow registered {student_id}: same weights needed")
    tools = [item[2] if len(item) > 2 else None for item in items]
    extra = {"tools": tools} if any(tools) else {}
    results = student.score([item[1] for item in items], max_tokens=max_tokens, progress=False, **extra)
    return [r.to_score(item[0], student_id) for item, r in zip(items, results, strict=True)]
