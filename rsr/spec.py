"""What a student is: a model (ref, revision), the chat template it renders with (held by its content), that
template's options and the compute dtype. Parsed once at the edge (the CLI's student options, a config's
`students:`, an rsr.student.added event) into a StudentSpec; a Registration, read from DuckDB, is the one way back.

    spec = StudentSpec(ref="Qwen/Qwen3-8B", chat_template_kwargs={"enable_thinking": False}).resolved()
    registration = pick_registration(spec, reader.registrations())   # publish, report, explain: find it
    spec = registration.spec()                                      # ... and load it exactly as it was scored

Naming a student (docs/students.md): its student_id, or its ref and whichever of the template, its options and the
revision tell it apart. In commands that read the store, what is not given matches any registration, and a name
that matches registrations of more than one template or option set is refused with the list of them and how to
name each. Commands that make a student (add-student, score, a config's students) take what is not given as the
model's own: its own template, no options, its default revision.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# Built-in templates for base students without one (the paper's students are base models).
CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
}
EMBEDDED_NAMES = ("smollm2-135m", "gemma3-270m")  # the students shipped in wheels (rsr.score.load.EMBEDDED)
STUDENT_ID = re.compile(r"^(?P<ref>[^@]+)@(?P<digest>[0-9A-Za-z]{1,64})$")  # ref@digest: Student.student_id


class UnknownStudent(ValueError):
    """No registration matches the name given."""


class AmbiguousStudent(ValueError):
    """The name given matches registrations that render differently: the user must say which."""


def template_digest(text: str) -> str:
    """A chat template's identity: the sha256 of its text (16 hex digits in the store and in labels)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def options_text(options: dict[str, Any] | None) -> str | None:
    """Template options as the store keeps them: canonical JSON (sorted keys), None for none."""
    return json.dumps(options, sort_keys=True, ensure_ascii=False) if options else None


def student_digest(
    weights: str,
    template: str | None,
    options: dict[str, Any] | None,
    template_date: str | None = None,
    tool_arguments_mapping: bool = False,
) -> str:
    """A student's digest (its id is `ref@digest[:12]`): sha256 over its weight and tokenizer files (`weights`:
    rsr.score.load.weights_manifest), the effective chat template, its options and, for a template that reads the
    clock, the pinned date it renders with. Options and date are folded in only when present, so a student without
    them keeps its digest. A template that encodes JSON-text tool-call arguments again (Qwen2.5, Llama 3.1,
    DeepSeek-V3.1, gpt-oss) is given mappings since issue 23, which changed its scores of tool calls:
    "tool_arguments=mapping" is folded in, so those scores have another key."""
    h = hashlib.sha256(weights.encode())
    h.update((template or "").encode())
    if options:
        h.update(b"\nchat_template_kwargs=" + json.dumps(options, sort_keys=True).encode())
    if template_date:
        h.update(f"\ntemplate_date={template_date}".encode())
    if tool_arguments_mapping:
        h.update(b"\ntool_arguments=mapping")
    return h.hexdigest()


class StudentSpec(BaseModel):
    """A student as named at the edge. `chat_template` is a built-in name or a Jinja file (a path is made absolute
    and the file read by `resolved()`, after the data scope allowed it); `chat_template_text` is its content, which
    is what identifies it from then on. `ref` may be a student_id (`ref@digest12`): then it names a registration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str = "smollm2-135m"
    revision: str | None = None  # a hub model's branch, tag or commit
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    device: str = "auto"
    chat_template: str | None = None
    chat_template_text: str | None = None
    # The template's options, as vLLM's `chat_template_kwargs` (e.g. {enable_thinking: false}); part of the id.
    chat_template_kwargs: dict[str, Any] | None = None
    # Not identity: how this student's dataset is published after a (re-)score (a SelectionPolicy's fields,
    # checked by rsr.config; its dataset name; a baseline beside it), kept with the registration for the nightly
    # rescore.
    policy: dict[str, Any] | None = None
    output: str | None = None
    baseline: dict[str, Any] | str | None = None  # a random pick beside its selection (rsr.select.Baseline's fields)

    def key(self) -> str:
        """The spec as canonical text: a cache key for a loaded student (a dict field makes it unhashable)."""
        return self.model_dump_json(exclude={"policy", "output", "baseline"})

    @property
    def student_id(self) -> str | None:
        """The registration this spec names by id, if it does."""
        return self.ref if STUDENT_ID.match(self.ref) else None

    @property
    def template_name(self) -> str | None:
        """How a label names the template: a built-in's name, a file's name, None for the model's own."""
        if self.chat_template is None:
            return None
        return self.chat_template if self.chat_template in CHAT_TEMPLATES else Path(self.chat_template).name

    def template_source(self) -> str | None:
        """The template's text (None: the model's own). Raises ValueError for a name that is neither."""
        if self.chat_template_text is not None:
            return self.chat_template_text
        if self.chat_template is None or self.chat_template in CHAT_TEMPLATES:
            return CHAT_TEMPLATES.get(self.chat_template or "")
        path = Path(self.chat_template).expanduser()
        if not path.is_file():
            raise ValueError(
                f"unknown chat template {self.chat_template!r}: use one of {sorted(CHAT_TEMPLATES)} or a path to a "
                "Jinja file"
            )
        return path.read_text(encoding="utf-8")

    def resolved(self, base: Path | None = None) -> StudentSpec:
        """Paths made absolute (relative ones from `base`, else the working folder) and the template read, so the
        spec means the same thing from any folder, in any process, after the file is gone."""
        update: dict[str, Any] = {}
        ref = Path(self.ref).expanduser()
        if not ref.is_absolute() and (folder := (base or Path.cwd()) / ref).is_dir():
            update["ref"] = str(folder.resolve())
        if self.chat_template and self.chat_template not in CHAT_TEMPLATES and self.chat_template_text is None:
            path = Path(self.chat_template).expanduser()
            path = path if path.is_absolute() else (base or Path.cwd()) / path
            update["chat_template"] = str(path.resolve())
        spec = self.model_copy(update=update)
        if spec.chat_template and spec.chat_template_text is None:
            spec = spec.model_copy(update={"chat_template_text": spec.template_source()})
        return spec

    def dataset_name(self, base: str = "sft") -> str:
        """Outputs are named by student, so several students' datasets are told apart at a glance."""
        if self.output:
            return self.output
        ref = STUDENT_ID.match(self.ref)["ref"] if self.student_id else self.ref
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(ref.rstrip("/")).name).strip("-.") or "student"
        template = Path(self.template_name).stem if self.template_name else None
        return f"{base}-{name}" + (f"-{template}" if template else "")

    def flags(self) -> str:
        """The command-line options that name this spec."""
        parts = [f"--student {self.ref}"]
        if self.chat_template:
            parts.append(f"--chat-template {self.chat_template}")
        if self.chat_template_kwargs is not None:
            parts.append(f"--chat-template-kwargs '{json.dumps(self.chat_template_kwargs, sort_keys=True)}'")
        return " ".join(parts)


@dataclass(frozen=True)
class Registration:
    """A registered student as the store holds it (the `registrations` view): the one way back from DuckDB."""

    student_id: str
    ref: str
    digest: str | None
    label: str  # ref, template name and options: how views and messages name it (one SQL formula)
    revision: str | None = None
    dtype: str | None = None  # the compute dtype it was last registered with
    template_name: str | None = None  # None: the model's own template
    template_digest: str | None = None
    template_text: str | None = None  # the template's content when one was given (chat_templates table)
    chat_template_kwargs: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # what Student.info() said at registration
    registered_at: datetime | None = None

    def spec(self, dtype: str | None = None) -> StudentSpec:
        """The spec that loads this student as it was registered: its template by content, its options."""
        kept = {k: self.info[k] for k in ("policy", "output", "baseline") if self.info.get(k) is not None}
        template = self.info.get("chat_template") if self.template_name else None  # as given: a name or a path
        return StudentSpec(
            ref=self.ref,
            revision=self.revision,
            dtype=dtype or self.dtype or "auto",
            chat_template=template or self.template_name,
            chat_template_text=self.template_text,
            chat_template_kwargs=self.chat_template_kwargs,
            **kept,
        )

    def naming(self) -> str:
        """One line for a list of registrations: its label, its id and how to name it alone."""
        return f"{self.label}: --student {self.student_id}"


def pick_registration(spec: StudentSpec, registrations: list[Registration]) -> Registration:
    """The registration a spec names (the rule in the module's docstring). `registrations` newest first."""
    if exact := [r for r in registrations if r.student_id == spec.ref]:  # an id is taken as given, first
        return exact[0]
    if spec.student_id:
        raise UnknownStudent(_unknown(spec, registrations))
    found = [r for r in registrations if r.ref == spec.ref and spec.revision in (None, r.revision)]
    if spec.chat_template is not None or spec.chat_template_text is not None:
        digest = template_digest(spec.template_source() or "")
        found = [r for r in found if r.template_digest == digest or (r.template_digest is None and _same_name(spec, r))]
    if spec.chat_template_kwargs is not None:
        found = [r for r in found if (r.chat_template_kwargs or {}) == spec.chat_template_kwargs]
    if not found:
        raise UnknownStudent(_unknown(spec, registrations))
    kinds = {(r.template_digest or r.template_name, options_text(r.chat_template_kwargs)) for r in found}
    if len(kinds) > 1:
        listed = "; ".join(r.naming() for r in found)
        raise AmbiguousStudent(
            f"student {spec.ref!r} names {len(found)} registrations that render differently: {listed} "
            "(or tell them apart with --chat-template / --chat-template-kwargs; '{}' names the one without options)"
        )
    return found[0]  # of one template and option set: the newest weights


def _same_name(spec: StudentSpec, r: Registration) -> bool:
    # A registration made before templates were stored by content knows only the name it was given.
    return r.template_digest is None and spec.template_name == r.template_name


def _unknown(spec: StudentSpec, registrations: list[Registration]) -> str:
    known = "; ".join(r.naming() for r in registrations) or "none"
    return f"no registered student matches {spec.flags()} (registered: {known}); register it with `rsr add-student`"
