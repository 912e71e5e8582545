"""What a flow checks before it reads a byte: an event's payload is plain values, and a run that a deployment
started (event, schedule, API) reads only under RSR_DATA_ROOTS and only the hub ids RSR_HUB_ALLOW names.

Deployment triggers hand the payload over as JSON *text* (deployments/prefect.yaml): Prefect resolves template
objects (`{"__prefect_kind": ...}`: workspace variables, Jinja) in a run's parameters, never inside a string, so
the payload reaches the flow exactly as sent and is refused here if it holds one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect.runtime import deployment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rsr.config import BenchmarkSpec
from rsr.curate.benchmarks import is_local, with_preset
from rsr.settings import DataScope
from rsr.spec import CHAT_TEMPLATES, EMBEDDED_NAMES, StudentSpec

PREFECT_KIND = "__prefect_kind"


class BadPayload(ValueError):
    """An event payload that is not the event's plain values."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


P = TypeVar("P", bound=_Payload)


class TeacherAdded(_Payload):
    """rsr.teacher.added: strings, booleans and flat string maps only (docs/deployments.md)."""

    name: str = Field(min_length=1)
    file: str = Field(min_length=1)
    format: Literal["messages", "sharegpt", "generations", "zeroeval", "table", "hf"] | None = None
    mapping: dict[str, str] | None = None
    problems: str | None = None
    hf_options: dict[str, str] | None = None
    score: bool = True
    publish: bool = False


class StudentAdded(_Payload):
    """rsr.student.added: a student spec's identity (rsr.spec.StudentSpec); `rsr add-student --async` sends the
    template's content, so the flow reads the same template whichever folder or host it runs in."""

    ref: str = Field(min_length=1)
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    chat_template: str | None = None
    chat_template_text: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # the template's options, as in a config's student


class BenchmarkAdded(_Payload):
    """rsr.benchmark.added: a benchmark to register and check every stored trajectory against."""

    name: str = Field(min_length=1)
    source: str | None = None  # a file or folder where the flow runs, or a hub id; None: the preset `name`
    problem: str | None = None
    split: str | None = None
    config: str | None = None
    revision: str | None = None
    ngram: int | None = None


def _template_object(value: Any, where: str = "payload") -> str | None:
    """Where a Prefect template object hides in `value`, if anywhere."""
    if isinstance(value, dict):
        if PREFECT_KIND in value:
            return where
        found = (_template_object(v, f"{where}.{k}") for k, v in value.items())
    elif isinstance(value, list):
        found = (_template_object(v, f"{where}[{i}]") for i, v in enumerate(value))
    else:
        return None
    return next((f for f in found if f), None)


def parse_payload(model: type[P], text: str, event: str) -> P:
    """The payload's JSON text as `model`, or BadPayload naming the field and the reason."""
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise BadPayload(f"{event}: the payload is not JSON text ({err})") from None
    if where := _template_object(value):
        raise BadPayload(f"{event}: {where} is a Prefect template object ({PREFECT_KIND}): refused, plain values only")
    try:
        return model.model_validate(value)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in err.errors())
        raise BadPayload(f"{event}: bad payload ({problems})") from None


def data_scope() -> DataScope:
    """Confined in a run a deployment started; at a person's shell only when RSR_DATA_ROOTS is set."""
    return DataScope.from_env(deployed=deployment.get_id() is not None)


def teacher_input(scope: DataScope, path: str, fmt: str | None, problems: str | None) -> tuple[str, str | None]:
    """The teacher's input and problems file as they may be read (a hub id only where the reader takes one)."""
    hub = fmt == "hf" and not Path(path).exists()  # the ingest reader's own rule for a hub id
    source = scope.source(path, hub, "teacher input")
    return source, (scope.source(problems, False, "problems file") if problems else None)


def student_input(scope: DataScope, spec: StudentSpec) -> StudentSpec:
    """A student's model and chat template as they may be read (an embedded name, a folder, or a hub id; a
    template file under the data roots), then resolved: absolute paths, the template read (rsr.spec)."""
    if spec.student_id:  # a registration: it was read when it was registered
        return spec
    if spec.ref not in EMBEDDED_NAMES:
        local = Path(spec.ref).expanduser().is_dir()  # the loader's own rule (rsr.score.load.model_folder)
        spec = spec.model_copy(update={"ref": scope.source(spec.ref, not local, "student model")})
    if spec.chat_template and spec.chat_template not in CHAT_TEMPLATES and spec.chat_template_text is None:
        spec = spec.model_copy(update={"chat_template": scope.source(spec.chat_template, False, "chat template")})
    return spec.resolved()


def benchmark_input(scope: DataScope, spec: BenchmarkSpec) -> BenchmarkSpec:
    """A benchmark's source as it may be read: a file or folder under the data roots, else a hub id (a preset's
    too) that the hub allow-list names."""
    source = with_preset(spec.name, spec.source, spec.problem, spec.split, spec.config)[0]
    checked = scope.source(source, not is_local(source), f"benchmark {spec.name!r}")
    return spec if spec.source is None and checked == source else spec.model_copy(update={"source": checked})
