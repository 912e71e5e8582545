"""How a student writes its completion, learnt from what its chat template renders (probed once, at load).

A template shows the student's own format in its renders: the generation prompt (what the student is given before
it writes), a final turn with and without reasoning, a turn after it, a tool-call turn. From them:
- `field_use`: the field it reads reasoning from, and whether a final plain turn shows it (Kimi-K2-Thinking writes
  an empty `<think></think>` there and shows `reasoning_content` only in the turns after it);
- `preamble`: what its generation prompt writes after the turn's header that its rendering of a turn does not
  repeat (Apriel 1.6's `Here are my reasoning steps:\\n`, R1's `<think>\\n`): the student's completion starts
  after it;
- `format_problem`: the check every student's scored render must pass: one reasoning block, in one family's
  markup, the reasoning once. A render that doubles the markup or mixes families is refused, never scored;
- `unknown_reasoning_tags`: reasoning tags a template writes that no family in rsr/score/markup.py knows: rsr never
  writes another family's tags into such a template.

Each `render` below is (chat, add_generation_prompt) -> text, a refusal raised as RecordError.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rsr.records import RecordError
from rsr.score.markup import MARKUPS, Markup

__all__ = [
    "FieldUse",
    "closes_reasoning",
    "common_prefix",
    "field_use",
    "format_problem",
    "preamble",
    "unknown_reasoning_tags",
]

Render = Callable[[list[dict], bool], str]
SENTINEL = "RSR-SENTINEL-7f3a"  # probe text no template rewrites: what follows it is the end-of-turn marker
REASONING_SENTINEL = "RSR-REASONING-7f3a"
REASONING_FIELDS = ("reasoning_content", "thinking")  # the fields templates read reasoning from, in probe order
_CALL = {"type": "function", "function": {"name": "rsr_probe_tool", "arguments": {"x": 1}}, "id": "call_1"}
_Q = {"role": "user", "content": "Q"}


@dataclass(frozen=True)
class FieldUse:
    """Where a template reads reasoning: `name` (None: nowhere, reasoning goes inline); `in_final_turn`: a final
    plain turn shows it; else `written` is the markup it writes around it in the turns that show it."""

    name: str | None = None
    in_final_turn: bool = True
    written: Markup | None = None


def field_use(render: Render) -> FieldUse:
    """The first field whose reasoning a final assistant turn shows; else the first shown in a later turn or a
    tool-call turn, with the markup written around it there."""
    for name in REASONING_FIELDS:
        if _shown(render, [_Q, _turn(name)]) is not None:
            return FieldUse(name)
    for name in REASONING_FIELDS:
        for chat in _later_turns(name):
            if (text := _shown(render, chat)) is not None and (written := _written(render, chat, text)):
                return FieldUse(name, in_final_turn=False, written=written)
    return FieldUse()


def _turn(field: str, **more: object) -> dict:
    return {"role": "assistant", "content": SENTINEL, field: REASONING_SENTINEL, **more}


def _later_turns(field: str) -> list[list[dict]]:
    """Chats whose last assistant turn is not a final plain turn: a second plain turn, a tool-call turn."""
    first = {"role": "assistant", "content": "A", field: "R"}
    tool = {"role": "tool", "name": "rsr_probe_tool", "tool_call_id": "call_1", "content": "1"}
    return [[_Q, first, {"role": "user", "content": "Q2"}, _turn(field)], [_Q, _turn(field, tool_calls=[_CALL]), tool]]


def _shown(render: Render, chat: list[dict]) -> str | None:
    try:
        text = render(chat, False)
    except RecordError:
        return None
    return text if text.count(REASONING_SENTINEL) == 1 else None


def _written(render: Render, chat: list[dict], text: str) -> Markup | None:
    """The markup around the probe's reasoning: from where the turn's generation prompt ends to the reasoning, and
    from the reasoning to the answer."""
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    try:
        prompt = render(chat[:last], True)
    except RecordError:
        return None
    start, at = common_prefix(prompt, text), text.find(REASONING_SENTINEL)
    answer = text.find(SENTINEL, at + len(REASONING_SENTINEL))
    if not (start <= at < answer):
        return None
    opened, closed = text[start:at], text[at + len(REASONING_SENTINEL) : answer]
    if not opened.strip() or not closed.strip() or _CALL["function"]["name"] in closed:
        return None  # no tags of its own around it, or the answer is not right after them (a call between)
    family = next((m.name for m in MARKUPS if m.open and m.open.strip() == opened.strip()), "template")
    return Markup(family, opened, closed)


def preamble(render: Render) -> str:
    """What the generation prompt writes after the turn's header that the template's rendering of a plain answer
    does not: text the student is given and continues from (`<think>\\n`, Apriel's `Here are my reasoning
    steps:\\n`); "" when the generation prompt is a prefix of the turn."""
    try:
        prompt = render([_Q], True)
        turn = render([_Q, {"role": "assistant", "content": SENTINEL}], False)
    except RecordError:
        return ""
    k = common_prefix(prompt, turn)
    if prompt.rfind("<", 0, k) > prompt.rfind(">", 0, k):  # never split a tag: `<|Assistant|><think>` vs `</think>`
        k = prompt.rfind("<", 0, k)
    # a generation prompt that closes a block (`<think></think>`: thinking off) opens nothing to continue from
    return "" if closes_reasoning(prompt[k:]) else prompt[k:]


_CLOSE = re.compile(r"</[^<>]*(?:think|thought|reason)[^<>]*>|\[/THINK\]|<channel\|>", re.IGNORECASE)


def closes_reasoning(text: str) -> bool:
    """Whether text holds a reasoning block's close tag, in any family's markup or one rsr does not know."""
    return bool(_CLOSE.search(text)) or any(m.close.strip() in text for m in MARKUPS if m.open)


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def format_problem(region: str, own: Markup | None, reasoning: str) -> str | None:
    """Why a rendered turn (`region`: from the end of the turns before it to the end of its scored body) is not
    the student's own format, or None: the reasoning once, one reasoning block, in one family's markup (`own`'s,
    where rsr wrote it inline; None where the template writes it from its field)."""
    if region.count(reasoning) != 1:
        return f"the reasoning appears {region.count(reasoning)} times in the render"
    found = {}
    for m in MARKUPS:
        opens = region.count(m.open.strip()) if m.open.strip() else 0
        closes = region.count(m.close.strip())
        if opens or closes:
            found[m.name] = (m, opens, closes)
    if len(found) > 1:
        names = " and ".join(f"`{m.open.strip() or m.close.strip()}`" for m, _, _ in found.values())
        return f"reasoning markup of two families ({names}) in one turn"
    for m, opens, closes in found.values():
        if opens > 1 or closes > 1:
            tag = m.open.strip() if opens > 1 else m.close.strip()
            return f"the reasoning markup `{tag}` twice in one turn (the template writes its own block beside ours)"
        if own is not None and m.name != own.name and own.name in {x.name for x in MARKUPS}:
            return f"reasoning in `{m.open.strip()}` tags, not the student's own `{own.open.strip()}`"
    return None


# Tags a template may write reasoning in: `<think>`, `<seed:think>`, `<mm:think>`, `<|START_THINKING|>`, `[THINK]`,
# `<|channel>thought`, ... (a `/think` switch in a system prompt is not a tag).
_TAG = re.compile(r"<[|｜]?/?[\w:.]*(?:think|thought|reason)\w*[|｜]?>|\[/?THINK\]", re.IGNORECASE)


def unknown_reasoning_tags(template: str | None) -> list[str]:
    """Reasoning tags the template's text holds that no known family writes (rsr/score/markup.py)."""
    known = {t for m in MARKUPS for t in (m.open.strip(), m.close.strip()) if t}
    tags = dict.fromkeys(_TAG.findall(template or ""))
    return [t for t in tags if not any(t in k or k in t for k in known)]
