"""What every adapter shares: record errors, field checks, and the loop that turns raw records into outcomes."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rsr.curate.ingest._io import RawRecord, cut, dump_raw, parse_json_text
from rsr.curate.ingest.parts import Parts, read_parts, refuse_unknown
from rsr.records import (
    THINK_OPEN,
    Message,
    Problem,
    RecordError,
    Rejected,
    Trajectory,
    join_reasoning,
    problem_id_for,
)

ROLES = ("system", "user", "assistant", "tool")
CHUNK = 5000  # records per chunk at most: what an adapter holds, and what the ingest task stores per transaction
# ... and text per chunk at most: chunks are sized by bytes, so 5,000 short answers or ~500 traces of 30 KB make a
# chunk. Storing a chunk holds its text ~8x over for a moment (its str, the messages JSON, Arrow's copy, DuckDB's
# vectors, overflow strings and index), so 8 MB of text (or one record of at most MAX_TEXT_BYTES, alone) fits the
# CPU stages' DuckDB limit (rsr.stages.curate.DB_MEMORY, 256 MB); 8 rather than 16 MB took ~100 MB off the peak.
CHUNK_BYTES = 8 * 1024 * 1024
MAX_TEXT_BYTES = 16 * 1024 * 1024  # one trajectory's text at most; a larger one is quarantined with its size


@dataclass
class IngestResult:
    """One chunk of one source (or a whole input): its records = trajectories + duplicates_skipped + rejected."""

    trajectories: list[Trajectory] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    duplicates_skipped: int = 0  # records whose trajectory id already appeared earlier in the same source: repeats
    source: str = ""  # the source the chunk's records came from (a file, or an HF dataset's split)
    text_bytes: int = 0  # the chunk's trajectory text (what bounds its memory)
    format: str = ""  # the row format its source was read in
    fields: dict[str, str] = field(default_factory=dict)  # field -> the column it came from
    plan: str = ""  # both, in words (ReadPlan.describe)
    dropped_turns: int = 0  # turns after the last assistant turn, dropped from its records (repeats included)

    @property
    def records(self) -> int:
        return len(self.trajectories) + self.duplicates_skipped + len(self.rejected)


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


ROLE_ALIASES = {"function": "tool"}  # legacy OpenAI function-result turns
# ShareGPT's `from` values (and plain roles, which some `conversations` hold) -> our roles
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant", "bot": "assistant",
    "function_call": "assistant",  # its value (the call, as text) is the content
    "system": "system",
    "tool": "tool", "observation": "tool", "function": "tool", "ipython": "tool",
}  # fmt: skip
_OPENAI_ROLES = {**{r: r for r in ROLES}, **ROLE_ALIASES}
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")  # DeepSeek API / vLLM, OpenAI-compatible / HF


def parse_messages(value: Any, what: str = "`messages`", roles: Mapping[str, str] | None = None) -> list[Message]:
    """A chat (HF/OpenAI `messages`, or ShareGPT `conversations` with roles=SHAREGPT_ROLES) -> Messages; strict
    about shape, because a wrong role or type means a wrong training row. Reasoning held in its own key or in
    reasoning parts is joined into the content (join_reasoning); text parts are joined; tool calls are kept (also
    from tool-call parts). Parts that cannot be scored as text refuse the record, counted by type."""
    if not isinstance(value, list):
        raise RecordError(f"{what} must be a list, got {type_name(value)}")
    if not value:
        raise RecordError(f"{what} is empty")
    turns = [parse_turn(m, i, roles) for i, m in enumerate(value)]
    unknown = sum((parts.unknown for _, parts in turns), Counter())
    refuse_unknown(unknown, next((p.first_unknown for _, p in turns if p.first_unknown), ""))
    return [m for m, _ in turns]


def parse_turn(m: Any, i: int, roles: Mapping[str, str] | None = None) -> tuple[Message, Parts]:
    """One turn, and what its content parts held. roles=None: the OpenAI roles (+ `function` -> tool); else a map of
    the data's names to ours, and a turn may spell its keys ShareGPT's way (`from`/`value`)."""
    if not isinstance(m, dict):
        raise RecordError(f"message {i} must be an object with role and content, got {type_name(m)}")
    role_key, content_key = (
        ("from", "value") if roles is not None and m.get("from") is not None else ("role", "content")
    )
    name = m.get(role_key)
    if not isinstance(name, str):
        raise RecordError(f"message {i} has no string `{role_key}` (got {type_name(name)})")
    known = roles if roles is not None else _OPENAI_ROLES
    role = known.get(name)
    if role is None:
        raise RecordError(f"message {i} has unknown {role_key} {name[:40]!r} (expected one of {', '.join(known)})")
    where = f"message {i} ({role})"
    calls = _tool_calls(m, where, role)
    parts = content_parts(m.get(content_key), where, null_ok=calls is not None)
    if parts.calls and role != "assistant":
        raise RecordError(f"{where} has tool-call parts: only an assistant turn calls tools")
    calls = [*(calls or []), *parts.calls] or None
    content = parts.text
    reasoning = _reasoning(m, where, parts.reasoning)
    if reasoning is not None:
        if content is not None and THINK_OPEN in content:
            raise RecordError(f"{where} has both a reasoning field and a {THINK_OPEN} block in its content: ambiguous")
        content = join_reasoning(reasoning, content)
    message = Message(
        role=role,
        content=check_text(content, f"{where} content") if content is not None else None,
        tool_calls=calls,
        name=opt_str(m.get("name"), f"{where} `name`"),
        tool_call_id=opt_id(m.get("tool_call_id"), f"{where} `tool_call_id`"),
    )
    return message, parts


def content_parts(value: Any, where: str, null_ok: bool = False) -> Parts:
    """A turn's content: a string, a list of typed parts (rsr/curate/ingest/parts.py), or None beside tool calls
    (null_ok); `text` is None only then."""
    if isinstance(value, str) or (value is None and null_ok):
        return Parts(text=value)
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else type_name(value)
        raise RecordError(f"{where} content must be a string or a list of text parts, got {got}")
    return read_parts(value, where)


def parse_tools(value: Any, what: str = "`tools`") -> list[dict] | None:
    """Function schemas offered to the model: a list of objects, or that list as JSON text (xLAM, Hermes FC)."""
    if isinstance(value, str):
        if not value.strip():
            return None
        value, error = parse_json_text(value)
        if error:
            raise RecordError(f"{what} is text but not JSON ({error})")
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RecordError(f"{what} must be a list of function schemas (objects), got {type_name(value)}")
    return value


MISSING = object()  # a path that leads nowhere in a record (a present null is None)


def lookup(rec: Any, path: str) -> Any:
    """A field of a record by column name, or by a dotted path through objects and lists (`info.reference_answer`,
    `messages.0.info.reference_answer`); a column whose own name holds dots is found first. MISSING if absent."""
    if isinstance(rec, dict) and path in rec:
        return rec[path]
    if "|" in path:  # alternatives (a format's preset): the first one the record holds
        values = (lookup(rec, p) for p in path.split("|"))
        return next((v for v in values if v is not MISSING and v is not None), MISSING)
    value = rec
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.lstrip("-").isdigit() and -len(value) <= int(step) < len(value):
            value = value[int(step)]
        else:
            return MISSING
    return value if path else MISSING


def check_problem(text: str, what: str = "the problem") -> str:
    """A problem with no letter or digit ("-", "...") is a placeholder: stored, it would merge unrelated rows
    under one problem id."""
    if not any(c.isalnum() for c in text):
        raise RecordError(f"{what} {text.strip()[:20]!r} is a placeholder (no letter or digit)")
    return text


def _tool_calls(m: dict, where: str, role: str) -> list[dict] | None:
    """An assistant's tool calls as given (legacy `function_call` as one call); an empty list is no calls."""
    calls, legacy = m.get("tool_calls"), m.get("function_call")
    if calls is None and isinstance(legacy, dict):
        calls = [{"type": "function", "function": legacy}]
    elif legacy is not None and not isinstance(legacy, dict):
        raise RecordError(f"{where} `function_call` must be an object, got {type_name(legacy)}")
    if calls is None or calls == []:
        return None
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise RecordError(f"{where} `tool_calls` must be a list of objects, got {type_name(calls)}")
    if role != "assistant":
        raise RecordError(f"{where} has `tool_calls`: only an assistant turn calls tools")
    return calls


def _reasoning(m: dict, where: str, from_parts: str | None = None) -> str | None:
    """The turn's reasoning from its own key (one of REASONING_KEYS) or its reasoning parts; two that disagree are an
    error."""
    found: dict[str, str] = {} if from_parts is None or not from_parts.strip() else {"reasoning parts": from_parts}
    for key in REASONING_KEYS:
        value = m.get(key)
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{where} `{key}` must be a string, got {type_name(value)}")
        if value is not None and value.strip():
            found[key] = check_text(value, f"{where} `{key}`")
    if len(set(found.values())) > 1:
        raise RecordError(f"{where} holds different reasoning in {' and '.join(f'`{k}`' for k in found)}")
    return next(iter(found.values()), None)


def drop_trailing_turns(messages: list[Message]) -> tuple[list[Message], int]:
    """The chat up to its last assistant turn, and how many turns after it were dropped: an agent trajectory (tau-bench)
    ends with the simulated user's closing turn or a tool result, which no trainer trains and no score reads. A chat
    without any assistant turn is left whole (chat_problem says what is wrong with it)."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "assistant"), None)
    if last is None:
        return messages, 0
    return messages[: last + 1], len(messages) - last - 1


def chat_problem(messages: list[Message], problem: str | None = None) -> tuple[str, str]:
    """(problem, problem_id) of a chat whose last message is the assistant's response.

    The problem is `problem` when the record names it, else the opening user turn. Its id: that of the problem
    when the prompt (the turns before the response, system turns aside) holds one user turn; else that of the
    whole prompt, so unrelated chats ending in the same user text ("Continue.") never meet, while teachers
    answering the same multi-turn prompt do."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise RecordError("no user turn: a chat needs the user's problem")
    last = len(messages) - 1
    final = messages[last]
    if final.role != "assistant":
        raise RecordError(
            f"no assistant turn after the last {final.role} turn (message {last}): a chat must end with the response"
        )
    if not (final.content or "").strip() and not final.tool_calls:
        raise RecordError(f"the last assistant turn (message {last}) is empty")
    if problem is None:
        problem = messages[users[0]].content or ""
        if not problem.strip():
            raise RecordError(f"the opening user turn (message {users[0]}) is empty")
    check_problem(problem)
    prompt = [m for m in messages[:last] if m.role != "system"]
    if sum(m.role == "user" for m in prompt) == 1:
        return problem, problem_id_for(problem)
    return problem, problem_id_for("\n".join(map(_turn_text, prompt)))


def _turn_text(m: Message) -> str:
    calls = f" {json.dumps(m.tool_calls, sort_keys=True, ensure_ascii=False)}" if m.tool_calls else ""
    return f"{m.role}: {m.content or ''}{calls}"


_NUMBER = re.compile(r"\d+")
_QUOTED = re.compile(r"""(?<!\w)(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")(?!\w)""")


def reason_pattern(reason: str) -> str:
    """A quarantine reason with numbers read <n> and quoted values '…': "message 3 has unknown role 'x'" and
    "message 5 has unknown role 'y'" are one reason."""
    return _NUMBER.sub("<n>", _QUOTED.sub("'…'", reason))


def top_reasons(rejected: list[Rejected], n: int = 3) -> list[tuple[str, int]]:
    """The `n` most frequent quarantine reasons (by reason_pattern), each as (its first example with its line,
    count)."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in rejected:
        key = reason_pattern(r.reason)
        counts[key] += 1
        examples.setdefault(key, f"line {r.source_line}: {r.reason}")
    return [(examples[key], count) for key, count in counts.most_common(n)]


# (record, line) -> its Trajectory, or (a row of several generations) one Trajectory or RecordError per generation;
# a RecordError raised rejects the whole record
RecordFn = Callable[[dict, int], "Trajectory | list[Trajectory | RecordError]"]


def collect(
    raws: Iterable[RawRecord], source_file: str, to_trajectory: RecordFn, chunk_size: int = CHUNK
) -> Iterator[IngestResult]:
    """Run one adapter over raw records, a chunk at a time (`chunk_size` records or CHUNK_BYTES of text, whichever
    comes first; a record that would take a chunk past CHUNK_BYTES starts the next one, so a chunk holds at most
    CHUNK_BYTES of text, or one longer record alone): good ones become Trajectories, an exact repeat of an earlier
    record of this source (the same trajectory id, across chunks too) is counted, bad ones become Rejected with
    their place and reason."""
    result = IngestResult(source=source_file)
    seen: set[int] = set()  # 64 bits of each id seen in this source: ~60 bytes a record, not the id strings
    for raw in raws:
        for outcome in _outcomes(raw, to_trajectory):
            size = text_size(outcome) if not isinstance(outcome, str) else 0
            if size > MAX_TEXT_BYTES:
                outcome = f"record of {size} bytes of text: over the {MAX_TEXT_BYTES >> 20} MB limit of one record"
            if isinstance(outcome, str):  # the reason it is rejected; a reader's error already holds its cut raw text
                text = raw.raw if raw.error is not None else cut(raw.raw or dump_raw(raw.value))
                reject = Rejected(source_file=source_file, source_line=raw.line, reason=outcome, raw=text)
                result.rejected.append(reject)
                continue
            key = int(outcome.trajectory_id[2:18], 16)
            result.dropped_turns += outcome.dropped_turns
            if key in seen:
                result.duplicates_skipped += 1
                continue
            if result.trajectories and result.text_bytes + size > CHUNK_BYTES:  # a long one starts the next chunk
                yield result
                result = IngestResult(source=source_file)
            seen.add(key)
            result.trajectories.append(outcome)
            result.text_bytes += size
        if len(result.trajectories) + len(result.rejected) >= chunk_size or result.text_bytes >= CHUNK_BYTES:
            yield result
            result = IngestResult(source=source_file)
    if result.records:
        yield result


def text_size(t: Trajectory) -> int:
    """The characters a trajectory holds (its turns; the response and problem are among them)."""
    return sum(len(m.content or "") for m in t.messages) + len(t.problem)


def _outcomes(raw: RawRecord, to_trajectory: RecordFn) -> list[Trajectory | str]:
    """The record's Trajectories, or why it (or one of its generations) is rejected."""
    if raw.error is not None:
        return [raw.error]
    if not isinstance(raw.value, dict):
        return [f"record must be a JSON object, got {type_name(raw.value)}"]
    try:
        made = to_trajectory(raw.value, raw.line)
    except RecordError as e:
        return [str(e)]
    except ValidationError as e:  # a field the adapter let through that the record model refuses
        return [invalid_reason(e)]
    return [str(m) if isinstance(m, RecordError) else m for m in (made if isinstance(made, list) else [made])]


def invalid_reason(e: ValidationError) -> str:
    return f"invalid record: {e.errors()[0].get('msg', e)}"
