"""What every adapter shares: record errors, field checks, and the loop that turns raw records into outcomes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rsr.ingest._io import RawRecord, cut, dump_raw
from rsr.records import Message, Problem, RecordError, Rejected, Trajectory

ROLES = ("system", "user", "assistant")
CHUNK = 5000  # records per chunk: what an adapter holds at once, and what the ingest task stores per transaction


@dataclass
class IngestResult:
    trajectories: list[Trajectory] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    duplicates_skipped: int = 0  # records whose trajectory id already appeared earlier in the same file


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_text(value: str, what: str) -> str:
    """Lone surrogates come from invalid UTF-8 bytes (or \\ud800 escapes); they cannot be stored or tokenised."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RecordError(f"{what} is not valid UTF-8 text (bad character at position {e.start})") from None
    return value


def opt_str(value: Any, what: str) -> str | None:
    """An optional string field, stripped: null/blank -> None; a wrong type is an error, not silently dropped."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{what} must be a string, got {type_name(value)}")
    return check_text(value, what).strip() or None


def req_str(value: Any, what: str) -> str:
    """A required non-blank string field, as written."""
    if value is None:
        raise RecordError(f"missing {what}")
    if opt_str(value, what) is None:
        raise RecordError(f"{what} is empty")
    return value


def opt_id(value: Any, what: str) -> str | None:
    """An optional identifier: strings and integers (JSON ids are often numbers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return opt_str(value, what)


def answer_str(value: Any, what: str = "`answer`") -> str | None:
    """An answer as text: 38.0 -> "38" (numeric golds in some files are floats), None/blank -> None."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"{what} is not a finite number ({value})")
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return opt_id(value, what)
    raise RecordError(f"{what} must be a string or a number, got {type_name(value)}")


def pick_teacher(value: Any, what: str, fallback: str | None) -> str:
    """The record's own teacher, else the one given to the ingest."""
    name = opt_str(value, what) or fallback
    if not name:
        raise RecordError(f"no teacher: the record has no {what} and none was given (pass teacher=...)")
    return name


def parse_messages(value: Any) -> list[Message]:
    """HF chat format -> Messages; strict about shape, because a wrong role or type means a wrong training row."""
    if not isinstance(value, list):
        raise RecordError(f"`messages` must be a list, got {type_name(value)}")
    if not value:
        raise RecordError("`messages` is empty")
    out: list[Message] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise RecordError(f"message {i} must be an object with role and content, got {type_name(m)}")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str):
            raise RecordError(f"message {i} has no string `role` (got {type_name(role)})")
        if role not in ROLES:
            raise RecordError(f"message {i} has unknown role {role[:40]!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise RecordError(f"message {i} ({role}) content must be a string, got {type_name(content)}")
        out.append(Message(role=role, content=check_text(content, f"message {i} ({role}) content")))
    return out


def split_chat(messages: list[Message]) -> str:
    """The problem of a chat (its last user turn), after checking there is a real answer to it."""
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise RecordError("no user turn: the problem is the last user turn's content")
    problem = messages[last_user].content
    if not problem.strip():
        raise RecordError(f"the last user turn (message {last_user}) is empty")
    answers = [i for i, m in enumerate(messages) if m.role == "assistant" and i > last_user]
    if not answers:
        raise RecordError("no assistant turn after the last user turn")
    if not messages[answers[-1]].content.strip():
        raise RecordError(f"the last assistant turn (message {answers[-1]}) is empty")
    return problem


RecordFn = Callable[[dict, int], Trajectory]  # (record, line) -> Trajectory, or RecordError saying why not


def collect(
    raws: Iterable[RawRecord], source_file: str, to_trajectory: RecordFn, chunk_size: int = CHUNK
) -> Iterator[IngestResult]:
    """Run one adapter over raw records, `chunk_size` at a time: good ones become Trajectories (the first of equal
    ids in a chunk kept; across chunks the store keeps the first), bad ones Rejected with their place and reason."""
    result = IngestResult()
    seen: set[str] = set()
    for raw in raws:
        outcome = _outcome(raw, to_trajectory)
        if isinstance(outcome, str):  # the reason it is rejected; a reader's error already holds its cut raw text
            text = raw.raw if raw.error is not None else cut(raw.raw or dump_raw(raw.value))
            result.rejected.append(Rejected(source_file=source_file, source_line=raw.line, reason=outcome, raw=text))
        elif outcome.trajectory_id in seen:
            result.duplicates_skipped += 1
        else:
            seen.add(outcome.trajectory_id)
            result.trajectories.append(outcome)
        if len(result.trajectories) + len(result.rejected) >= chunk_size:
            yield result
            result, seen = IngestResult(), set()
    if result.trajectories or result.rejected or result.duplicates_skipped:
        yield result


def _outcome(raw: RawRecord, to_trajectory: RecordFn) -> Trajectory | str:
    """The record's Trajectory, or why it is rejected."""
    if raw.error is not None:
        return raw.error
    if not isinstance(raw.value, dict):
        return f"record must be a JSON object, got {type_name(raw.value)}"
    try:
        return to_trajectory(raw.value, raw.line)
    except RecordError as e:
        return str(e)
    except ValidationError as e:  # a field the adapter let through that the record model refuses
        return f"invalid record: {e.errors()[0].get('msg', e)}"
