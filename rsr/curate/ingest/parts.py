"""Typed content parts of one chat turn -> its text, its reasoning and its tool calls.

The message forms that write a turn as a list of typed parts, read alike:
- OpenAI chat: `{"type": "text", "text": ...}` (and the Responses API's `input_text` / `output_text`);
- LLaMA-Factory: `{"type": "text" | "reasoning", "value": ...}`, `{"type": "tool_call", "value": "{\"name\": ...,
  \"arguments\": {...}}"}` (its reasoning + tool-use data);
- Anthropic: `{"type": "thinking", "thinking": ...}`, `{"type": "tool_use", "id", "name", "input"}`;
- Mistral: `{"type": "thinking", "thinking": [text parts]}`.
Reasoning parts are reasoning (joined into the turn like a `reasoning_content` field), never answer text. Any other
part (an image, an audio clip, a redacted thought) cannot be scored as text: the record is refused with every such
type named and counted, never scored without it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rsr.records import RecordError

TEXT_PARTS = ("text", "input_text", "output_text")  # OpenAI chat / Responses API text parts
REASONING_PARTS = ("reasoning", "thinking")  # LLaMA-Factory / Anthropic, Mistral
CALL_PARTS = ("tool_call", "tool_use")  # LLaMA-Factory (JSON text {"name", "arguments"}) / Anthropic (name, input)


@dataclass
class Parts:
    """One turn's parts, read: the text parts joined, the reasoning parts joined (None without any), tool calls."""

    text: str | None = ""  # None: a null content beside tool calls
    reasoning: str | None = None
    calls: list[dict] = field(default_factory=list)
    unknown: Counter = field(default_factory=Counter)  # parts of any other type, by type
    first_unknown: str = ""  # where the first of them is, in words


def refuse_unknown(unknown: Counter, first: str) -> None:
    """A record holding parts that cannot be scored as text is refused whole, each such type named and counted."""
    if unknown:
        counted = ", ".join(f"{n} x {kind!r}" for kind, n in unknown.items())
        raise RecordError(
            f"{first}: only text, reasoning and tool-call parts can be scored (this record holds {counted})"
        )


def read_parts(value: list, where: str) -> Parts:
    """A turn's list of typed parts, in order; parts of other types are counted by type (refuse_unknown). Raises
    RecordError for a malformed part."""
    out, texts, thoughts = Parts(), [], []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            got = "an object without a string `type`" if isinstance(part, dict) else type(part).__name__
            raise RecordError(f"{where} content must be a string or a list of typed parts; part {j} is {got}")
        if kind in TEXT_PARTS:
            texts.append(_text(part, kind, j, where))
        elif kind in REASONING_PARTS:
            thoughts.append(_text(part, kind, j, where))
        elif kind in CALL_PARTS:
            out.calls.append(_call(part, kind, j, where))
        else:
            out.first_unknown = out.first_unknown or f"{where} content part {j} has type {kind[:40]!r}"
            out.unknown[kind[:40]] += 1
    out.text = "".join(texts)  # OpenAI reads the parts as one text, concatenated
    out.reasoning = "".join(thoughts) if thoughts else None
    return out


def _text(part: dict, kind: str, j: int, where: str) -> str:
    """A part's text: under `text` (OpenAI), `value` (LLaMA-Factory) or its own type (Anthropic's `thinking`); a list
    of text parts (Mistral's thinking chunk) is joined."""
    for key in ("text", "value", kind):
        value = part.get(key)
        if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in value):
            return "".join(p["text"] for p in value)
        if value is not None:
            if not isinstance(value, str):
                raise RecordError(f"{where} content part {j} ({kind}) `{key}` must be a string, got {_type(value)}")
            return value
    raise RecordError(f"{where} content part {j} ({kind}) holds no text (under `text`, `value` or `{kind}`)")


def _call(part: dict, kind: str, j: int, where: str) -> dict:
    """A tool-call part in OpenAI's form ({"type": "function", "function": {"name", "arguments"}}, its id kept)."""
    if kind == "tool_use":  # Anthropic: the arguments are `input`
        spec, call_id = {"name": part.get("name"), "arguments": part.get("input", {})}, part.get("id")
    else:  # LLaMA-Factory: `value` holds {"name", "arguments"} as JSON text
        spec, call_id = part.get("value"), part.get("tool_call_id", part.get("id"))
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except ValueError:
                raise RecordError(f"{where} content part {j} (tool_call) `value` is not JSON text") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise RecordError(f"{where} content part {j} ({kind}) names no function (`name`)")
    call = {"type": "function", "function": {"name": spec["name"], "arguments": spec.get("arguments", {})}}
    return call | ({"id": call_id} if call_id is not None else {})


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__
