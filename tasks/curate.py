"""The CPU stages as Prefect tasks: ingest, deduplicate, verify (rsr/stages/curate.py does the work)."""

from prefect import task

from rsr.stages import curate
from rsr.stages.curate import Ingested

__all__ = ["Ingested", "deduplicate", "ingest_teacher", "verify_answers"]

ingest_teacher = task(curate.ingest_teacher, name="ingest-teacher")
deduplicate = task(curate.deduplicate, name="deduplicate")
verify_answers = task(curate.verify_answers, name="verify-answers")
