"""curate_teacher: a new teacher's file through ingest -> dedup -> verify -> decontaminate -> score, for every known
student (trajectories holding a registered benchmark's problem are not scored)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from rsr.config import RaySpec, ScoringSpec
from rsr.curate.dedup import DEFAULT_THRESHOLD
from rsr.curate.verify import DEFAULT_TIMEOUT_S
from rsr.spec import StudentSpec
from rsr_flows._artifacts import show_run
from rsr_flows._entry import TeacherAdded, data_scope, parse_payload, student_input, teacher_input
from rsr_flows._run import recorded_run, state_dir
from rsr_flows.rescore import registered_students, score_and_publish
from rsr_flows.score import Scored
from rsr_tasks.curate import Ingested, deduplicate, ingest_teacher, verify_answers
from rsr_tasks.decontaminate import Decontaminated, decontaminate


@dataclass(frozen=True)
class Curated:
    ingested: Ingested
    duplicates: int
    verified: int
    scores: list[Scored]  # one per student scored (none when score=False)
    decontaminated: Decontaminated | None = None  # what the decontaminate stage checked and found


@flow(name="curate-teacher")
def curate_teacher(
    teacher: str | None = None,
    path: str | None = None,
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    problems: str | None = None,
    hf_options: dict[str, str] | None = None,
    score: bool = True,
    publish: bool = False,
    students: list[StudentSpec] | None = None,
    scoring: ScoringSpec | None = None,
    ray: RaySpec | None = None,
    dedup_threshold: float = DEFAULT_THRESHOLD,
    verify_timeout_s: float = DEFAULT_TIMEOUT_S,
    state: str | None = None,
    event: str | None = None,
    include_contaminated: bool = False,
) -> Curated:
    """`publish`: then publish each student's dataset that the new teacher's scores changed (off by default; each
    score's "published"). `event`: an rsr.teacher.added payload as JSON text (the deployment trigger's one
    parameter), in place of teacher .. publish. Nothing is read before the inputs pass the data scope's checks.
    `include_contaminated`: score (and publish) trajectories holding a benchmark problem too."""
    if event is not None:
        got = parse_payload(TeacherAdded, event, "rsr.teacher.added")
        teacher, path, format, mapping = got.name, got.file, got.format, got.mapping
        problems, hf_options, score, publish = got.problems, got.hf_options, got.score, got.publish
    if not teacher or not path:
        raise ValueError("curate-teacher needs a teacher name and a path (or an rsr.teacher.added event)")
    scope = data_scope()
    path, problems = teacher_input(scope, path, format, problems)
    students = [student_input(scope, s) for s in students or []] or None
    home = state_dir(state)
    params = {"teacher": teacher, "path": path, "format": format, "mapping": mapping, "problems": problems}
    params["score"] = score  # and, once read, each source's format and columns (read_as)
    with recorded_run(home, params) as run_id:
        # Submitted with wait_for so that Prefect's graph shows the DAG's edges; each stage reads the last one's rows.
        ingest = ingest_teacher.submit(home.duckdb, run_id, teacher, path, format, mapping, problems, hf_options)
        ingested = ingest.result()
        dedup = deduplicate.submit(home.duckdb, run_id, ingested.problem_ids, dedup_threshold, wait_for=[ingest])
        verify = verify_answers.submit(home.duckdb, run_id, verify_timeout_s, wait_for=[dedup])
        checked = decontaminate.submit(home.duckdb, run_id, wait_for=[verify])
        specs = (students or registered_students(home.duckdb)) if score else []
        decontaminated = checked.result()
        scores = score_and_publish(home, run_id, specs, scoring, ray, publish, include_contaminated)
        show_run(home, [s.student_id for s in scores], [s.published.publication for s in scores if s.published])
        return Curated(ingested, dedup.result(), verify.result(), scores, decontaminated)
