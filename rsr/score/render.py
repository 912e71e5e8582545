"""The student's chat template: what it does to a chat (probed once), a conversation as text with its scored spans,
and each scored token's kind. The numbers are computed in rsr/score/student.py.

A chat template is the student's own format: it is given what it reads and left to render. Reasoning (held in
records in the joined `<think>` form) goes in the field the template reads (`reasoning_content`, `thinking`) or,
where it reads none, inline in the student's own tags (rsr/score/markup.py); tool-call arguments go as the JSON text
records keep, or as a mapping where the template refuses text; the template's options (`chat_template_kwargs`) and a
pinned clock (`strftime_now`) go with every render, so a score never depends on the day.

Scored tokens = trained tokens: the body of each assistant turn as the template renders it (content, reasoning and
tool-call text; not the role header, not the end-of-turn marker). A template that rewrites assistant turns is scored
as the student generates: the prompt with the generation prompt, then the final response ("generation" mode).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rsr.records import Message, RecordError
from rsr.score import markup, native
from rsr.score.markup import THINK, Markup, reasoning_spans
from rsr.score.native import REASONING_FIELDS, REASONING_SENTINEL, SENTINEL

__all__ = ["KINDS", "REASONING_FIELDS", "TEMPLATE_DATE", "Rendered", "Renderer", "reasoning_spans", "scored_tokens"]

KINDS = ("reasoning", "answer", "tool")  # what a scored token is, by its first scored character
# The template clock: `strftime_now` returns this date in every render (gpt-oss writes "Current date: ..." into
# every prompt), so the same chat renders the same text on any day. Recorded in the student's digest.
TEMPLATE_DATE = datetime(2026, 1, 1)
_CALL_ENDS = ("<|call|>",)  # a tool-call turn may end with its own marker (gpt-oss) instead of the end of turn
# The most characters one render may write (64 Mi, ~16M tokens: far beyond any trajectory a student can score): a
# template writing more (a loop writing 10**8 characters) is that record's error, stopped while it writes, before
# it holds the memory (Jinja joins every piece of the output at the end).
MAX_RENDER_CHARS = 1 << 26


@dataclass
class Rendered:
    """A conversation as text, with character spans: `spans` are scored (assistant bodies); inside them, `content`
    is the messages' content, `reasoning` the thought blocks and `tool` the bodies of turns that call tools."""

    text: str
    spans: list[tuple[int, int]]
    content: list[tuple[int, int]]
    reasoning: list[tuple[int, int]]
    tool: list[tuple[int, int]] = field(default_factory=list)
    dropped_tool_calls: int = 0  # tool calls of scored turns that the template renders no text for

    def kind(self, char: int) -> str:
        """By structure, never by a header: a channel or role header inside a body is the answer's markup."""
        if _inside(char, self.reasoning):
            return "reasoning"
        if _inside(char, self.content) or not _inside(char, self.tool):
            return "answer"
        return "tool"


def scored_tokens(r: Rendered, offsets: Sequence[tuple[int, int]]) -> tuple[list[int], list[str]]:
    """Positions p >= 1 of tokens carrying any scored character (one may also carry a merged header character)
    and each one's kind, by its first scored character."""
    firsts = [(p, _first_scored(s, e, r.spans)) for p, (s, e) in enumerate(offsets) if p > 0 and e > s]
    scored = [(p, c) for p, c in firsts if c is not None]
    return [p for p, _ in scored], [r.kind(c) for _, c in scored]


# ---------------------------------------------------------------------------------------------------------------
# Probes: chats whose rendering tells what the template does
# ---------------------------------------------------------------------------------------------------------------
_TOOL_SENTINEL = "rsr_probe_tool"
_OPENERS = tuple(x for m in markup.MARKUPS if m.open for x in (m.open + m.pad, m.open) if x)
# Canonical reasoning chats (join_reasoning form): a template that keeps these verbatim keeps any trace verbatim.
_PROBES = {
    "every assistant turn": [("Q1", "R1", "A1")],
    "earlier assistant turns": [("Q1", "R1", "A1"), ("Q2", "R2", "A2")],
}


class _Altered(RecordError):
    """The template rendered an assistant turn's content other than verbatim."""


@dataclass
class Renderer:
    """What one chat template does, learnt once, and the rendering of conversations under it."""

    tokenizer: Any
    chat_template: str | None
    name: str = "student"  # for messages
    options: Mapping[str, Any] = field(default_factory=dict)  # chat_template_kwargs, as vLLM names them
    mode: str = field(init=False, default="template")  # "template" | "generation"
    note: str = field(init=False, default="")
    eot: str = field(init=False, default="", repr=False)  # the end-of-turn marker after an assistant body
    reasoning_field: str | None = field(init=False, default=None)  # where the template reads reasoning; None: inline
    markup: Markup = field(init=False, default=THINK)  # the student's own tags (inline reasoning, generation)
    arguments_as_mapping: bool = field(init=False, default=False)  # tool-call arguments the template needs as dicts
    drops_tool_calls: bool = field(init=False, default=False)  # the template renders no tool-call text
    # The template reads `reasoning_field` but shows none in a final plain turn (Kimi-K2-Thinking): the completion
    # is written in `markup` as learnt from the turns that show it (native.field_use).
    final_turn_drops_reasoning: bool = field(init=False, default=False)
    preamble: str = field(init=False, default="")  # what the generation prompt opens that a turn does not repeat
    refusal: str = field(init=False, default="")  # why records with reasoning cannot be scored in its own format
    _source: str | None = field(init=False, default=None, repr=False)  # the template as rendered (clock pinned)
    _clock: dict = field(init=False, default_factory=dict, repr=False)  # the pinned clock's data

    def __post_init__(self) -> None:
        self._source, self._clock = _pinned_clock(self.chat_template)
        if self.chat_template is None:
            self.note = "no chat template: pass --chat-template to score"
            return
        self.markup = markup.markup_of_template(self.chat_template)
        self.eot = self._end_marker()
        use = native.field_use(self._render)
        self.reasoning_field, self.final_turn_drops_reasoning = use.name, not use.in_final_turn
        self.markup = use.written or self.markup
        self.preamble = native.preamble(self._render)
        self.arguments_as_mapping, self.drops_tool_calls = self._tool_calls()
        self.mode, self.note = self._probe()
        self.refusal = self._format_refusal()
        if self.refusal:
            self.note += f"; REFUSED for records with reasoning: {self.refusal}"

    def _render(self, chat: list[dict], add_generation_prompt: bool) -> str:
        return self.apply(chat, add_generation_prompt)

    # -- what the template does (learnt once) ----------------------------------------------------------------
    def _end_marker(self) -> str:
        try:
            text = self.apply([{"role": "user", "content": "Q"}, {"role": "assistant", "content": SENTINEL}], False)
        except RecordError:
            return ""
        return text.rsplit(SENTINEL, 1)[1] if SENTINEL in text else ""

    def _tool_calls(self) -> tuple[bool, bool]:
        """(arguments as a mapping, tool calls dropped): see probe_tool_calls."""
        return probe_tool_calls(lambda chat: self.apply(chat, False))

    def _probe(self) -> tuple[str, str]:
        """Render canonical reasoning chats: "template" mode if every assistant turn stays verbatim."""
        try:
            which = self._altered_probe()
        except RecordError as err:
            return "template", f"this chat template could not be probed ({err}): scoring assistant turns as rendered"
        options = f"; template options {json.dumps(dict(self.options), sort_keys=True)}" if self.options else ""
        shown = self._reasoning_note() + options + self._tools_note()
        if which is None:
            return "template", (
                "this chat template keeps assistant turns verbatim: scoring every assistant turn's body (its content "
                "and tool calls, as an SFT trainer trains on them); role headers, end-of-turn markers and other turns "
                f"are context{shown}"
            )
        opens = f" (its generation prompt opens `{self.markup.open}`)" if self._opened_by_prompt() else ""
        return "generation", (
            f"this chat template drops or rewrites the reasoning of {which}{opens}: scoring "
            "each response as the student generates it (the prompt with the generation prompt + the final response "
            "verbatim; earlier assistant turns are context as the template renders them); train on the published "
            f"`prompt`/`completion` columns, not on `messages` through this template{shown}"
        )

    def _reasoning_note(self) -> str:
        if self.reasoning_field and self.final_turn_drops_reasoning:
            shown = f"`{self.markup.open}...{self.markup.close.strip()}`"
            return (
                f"; reasoning given in the template's `{self.reasoning_field}` field, which it shows only in the turns "
                f"after its last plain one: the final response is scored as it writes it there, {shown}"
            )
        if self.reasoning_field:
            return f"; reasoning given in the template's `{self.reasoning_field}` field"
        return f"; reasoning written inline as `{self.markup.open}...{self.markup.close.strip()}`"

    def _tools_note(self) -> str:
        if self.drops_tool_calls:
            return "; WARNING: this template drops tool calls (a tool-calling turn scores its content only)"
        return "; tool-call arguments given as mappings" if self.arguments_as_mapping else ""

    def _altered_probe(self) -> str | None:
        """Which canonical chat the template does not keep verbatim (in the student's own form), or None."""
        for which, turns in _PROBES.items():
            chat = []
            for q, r, a in turns:
                chat += [{"role": "user", "content": q}, {"role": "assistant", "content": markup.THINK.join(r, a)}]
            msgs = [Message.model_validate(m) for m in chat]
            try:
                self._layout_template(msgs, [i for i, m in enumerate(msgs) if m.role == "assistant"], None, True)
            except _Altered:
                return which
        return None

    def _format_refusal(self) -> str:
        """Why this student cannot be given reasoning in its own format ("" when it can), checked on a canonical
        reasoning chat as it will be scored: one block, one family's markup, the reasoning once (native.py)."""
        unknown = native.unknown_reasoning_tags(self.chat_template)
        if unknown and not self.reasoning_field and self.markup == THINK and THINK.open not in self.chat_template:
            return (
                f"its template writes reasoning as {', '.join(f'`{t}`' for t in unknown[:2])} (a markup rsr does not "
                "know) and reads no reasoning field: rsr does not write another family's tags into it"
            )
        turn = {"role": "assistant", "content": THINK.join(REASONING_SENTINEL, SENTINEL)}
        chat = [{"role": "user", "content": "Q"}, turn]
        try:
            r = self.layout(chat)
            start = native.common_prefix(self.apply(chat[:1], False), r.text)
        except RecordError:
            return ""  # refused per record, with its own reason (thinking switched off, ...)
        own = None if self.reasoning_field else self.markup
        problem = native.format_problem(r.text[start : r.spans[-1][1]], own, REASONING_SENTINEL)
        if not problem:
            return ""
        closes = self._generation_prompt().rstrip().endswith(tuple(m.close.strip() for m in markup.MARKUPS))
        off = "; its generation prompt closes the reasoning block (thinking off): turn thinking on with "
        return f"its render of a reasoning turn holds {problem}" + (off + "--chat-template-kwargs" if closes else "")

    def _generation_prompt(self) -> str:
        try:
            return self.apply([{"role": "user", "content": "Q"}], True)
        except RecordError:
            return ""

    def _opened_by_prompt(self) -> bool:
        return self._generation_prompt().endswith(_OPENERS)

    # -- rendering -------------------------------------------------------------------------------------------
    def apply(self, msgs: list[dict], add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
        """The template's text, with its options and the pinned clock; a refusal or a sandbox limit is a
        RecordError (this record's error, not the run's crash)."""
        from jinja2 import TemplateError

        try:
            _cap_output(self._source)
            return self.tokenizer.apply_chat_template(
                msgs,
                tools=tools,
                chat_template=self._source,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                **self.options,
                **self._clock,
            )
        # TypeError: a template adding a null content to a string; OverflowError / RecursionError / MemoryError: the
        # sandbox's limits (`range(10**9)`, runaway recursion, huge output); RecordError (a ValueError): the output
        # over MAX_RENDER_CHARS.
        except (TemplateError, TypeError, OverflowError, RecursionError, MemoryError, ValueError) as err:
            roles = ", ".join(m["role"] for m in msgs[:8]) + (", ..." if len(msgs) > 8 else "")
            raise RecordError(f"the chat template refused this conversation (roles: {roles}): {err}") from None

    def layout(self, messages: Sequence[Mapping | object], tools: list[dict] | None = None) -> Rendered:
        if self.chat_template is None:
            raise RecordError(
                f"student {self.name!r} has no chat template: pass --chat-template chatml|llama3|FILE.jinja"
            )
        msgs = [message(m, i) for i, m in enumerate(messages)]
        turns = [i for i, m in enumerate(msgs) if m.role == "assistant"]
        if not turns:
            raise RecordError("no assistant turn to score")
        if self.refusal and any(markup.split(msgs[i].content or "")[1] is not None for i in turns):
            raise RecordError(f"student {self.name!r} cannot be given reasoning in its own format: {self.refusal}")
        if self.mode == "generation":
            return self._layout_generation(msgs, turns[-1], tools)
        return self._layout_template(msgs, turns, tools)

    def training_example(self, messages: Sequence[Mapping | object], tools: list[dict] | None = None) -> dict:
        """The text split the scorer uses for the final assistant turn: {"prompt", "completion"}, the completion
        being the scored response + the end-of-turn marker. In "generation" mode it is exactly what was scored."""
        r = self.layout(messages, tools)
        start, end = r.spans[-1]
        return {"prompt": r.text[:start], "completion": r.text[start:end] + self.eot}

    @property
    def rewrites_records(self) -> bool:
        """Whether the student's own form of a chat differs from the records' (`<think>` joined into content,
        tool-call arguments as JSON text)."""
        return bool(self.reasoning_field) or self.markup != THINK or self.arguments_as_mapping

    def native(self, messages: Sequence[Mapping | object]) -> list[dict]:
        """The chat as its template is given it (what a trainer must feed it): reasoning in the student's own field
        or tags, tool-call arguments as mappings where the template needs them (a published `Json` value)."""
        return [self.for_template(message(m, i)) for i, m in enumerate(messages)]

    def for_template(self, m: Message) -> dict:
        """A message as this template reads it: reasoning in its field or its own tags, arguments as it needs."""
        out = m.for_template()
        if self.arguments_as_mapping and m.tool_calls:
            out["tool_calls"] = [_mapping_arguments(c) for c in m.tool_calls]
        if m.role != "assistant" or not m.content:
            return out
        found, reasoning, answer = markup.split(m.content)
        if reasoning is None:
            return out
        if self.reasoning_field:
            return out | {"content": answer, self.reasoning_field: reasoning}
        if found != self.markup:  # another family's tags: rewritten in the student's own
            out["content"] = self.markup.join(reasoning, answer)
        return out

    def _layout_template(
        self, msgs: list[Message], turns: list[int], tools: list[dict] | None, exact: bool = False
    ) -> Rendered:
        """Every assistant turn's body: what the render of messages[:i+1] adds to messages[:i] + generation prompt."""
        dicts = [self.for_template(m) for m in msgs]
        text = self.apply(dicts, False, tools)
        spans, content, calls, given, cursor = [], [], [], [], 0
        for i in turns:
            _check_response(msgs[i], i)
            body = self._body(dicts, i, text, cursor, tools)
            if body is None and msgs[i].tool_calls:
                raise RecordError(f"cannot locate the tool-call text of assistant message {i} in the render")
            lo, hi = body or (cursor, len(text))
            if reasoning := dicts[i].get(self.reasoning_field or ""):  # given in its field: the answer comes after
                if (r := text.find(reasoning, lo, hi)) < 0:
                    raise _Altered(f"the chat template dropped the reasoning of assistant message {i}")
                lo = r + len(reasoning)
                given.append(((body or (r, 0))[0], lo))  # reasoning in markup we may not know: up to its end
            at = _find(text, dicts[i]["content"] or "", lo, hi, exact=exact)
            if at is None:
                raise _Altered(f"the chat template altered assistant message {i}; cannot locate it in the render")
            # Where the prefixes do not line up, the body is the content found (from its reasoning, if given apart).
            spans.append(body or ((r, at[1]) if reasoning else at))
            content.append(at)
            if msgs[i].tool_calls:
                calls.append(spans[-1])
            cursor = spans[-1][1]
        reasoning = markup.merged(_reasoning_in(text, spans, content) + given)
        dropped = sum(len(msgs[i].tool_calls or []) for i in turns) if self.drops_tool_calls else 0
        return Rendered(text, spans, content, reasoning, calls, dropped)

    def _body(
        self, dicts: list[dict], i: int, text: str, cursor: int, tools: list[dict] | None
    ) -> tuple[int, int] | None:
        if i == 0 or not self.eot:
            return None
        prompt = self.apply(dicts[:i], True, tools)
        turn = self.apply(dicts[: i + 1], False, tools)
        if not (text.startswith(turn) and turn.startswith(prompt)):
            return None
        end = _turn_end(turn, self.eot, bool(dicts[i].get("tool_calls")))
        if end is None:
            return None
        start = len(prompt)
        content = dicts[i]["content"] or ""
        # A generation prompt that opens the reasoning block (QwQ): the turn's body starts at the tag.
        opened = next((o for o in _OPENERS if prompt.endswith(o) and content.startswith(o)), "")
        start -= len(opened)
        return (start, end) if cursor <= start <= end else None

    def _layout_generation(self, msgs: list[Message], last: int, tools: list[dict] | None) -> Rendered:
        """As the student generates: template(messages[:last]) + generation prompt, then the final response as the
        student writes it, then the end-of-turn marker. Only the final turn is scored; turns after it are dropped."""
        m = msgs[last]
        _check_response(m, last)
        if m.tool_calls and not self.reasoning_field:
            raise RecordError(
                f"assistant message {last} calls tools, but this student's chat template rewrites assistant turns "
                "(render mode 'generation' scores a final text response only); use a template that keeps them"
            )
        dicts = [self.for_template(x) for x in msgs[: last + 1]]
        prompt = self.apply(dicts[:last], True, tools)
        found, reasoning, answer = markup.split(m.content or "")
        if reasoning is not None:
            self._check_reasoning_shown(prompt, last)
        if self.reasoning_field and (reasoning is not None or m.tool_calls):
            # the template writes the reasoning (and the calls) itself: its own render of the turn
            return self._rendered_final_turn(dicts, prompt, tools, last)
        content = dicts[last]["content"] or ""
        opened = next((o for o in _OPENERS if prompt.endswith(o) and content.startswith(o)), "")
        text = prompt + content[len(opened) :] + self.eot
        body = (len(prompt), len(text) - len(self.eot))
        content_span = [(len(prompt) - len(opened), body[1])]  # the opened tag sits at the end of the prompt
        return Rendered(text, [body], content_span, _reasoning_in(text, [body], content_span))

    def _rendered_final_turn(self, dicts: list[dict], prompt: str, tools: list[dict] | None, last: int) -> Rendered:
        """The final turn as the template renders it, after the generation prompt (and after a preamble that prompt
        writes and the turn does not repeat: Apriel's); where the template drops the turn's reasoning (Kimi), the
        reasoning and answer written in the markup it uses in the turns that show it."""
        turn = self.apply(dicts, False, tools)
        start, calls = self._completion_start(prompt, turn, last), bool(dicts[-1].get("tool_calls"))
        end = _turn_end(turn, self.eot, calls) if self.eot or calls else len(turn)
        if end is None or end < start:
            raise RecordError(
                f"the chat template renders assistant message {last} other than after its generation prompt; "
                "cannot score it as the student generates it"
            )
        given, answer = dicts[-1].get(self.reasoning_field or ""), dicts[-1]["content"] or ""
        if given and given not in turn[start:end]:
            return self._written_final_turn(prompt, given, answer, last, calls)
        text = prompt + turn[start:]  # the turn itself where the generation prompt is its prefix
        body = (len(prompt), len(prompt) + end - start)
        reasoning = [(body[0] + a, body[0] + b) for a, b in reasoning_spans(text[body[0] : body[1]])]
        at = text.rfind(answer, *body) if answer else -1
        if not reasoning and given:  # reasoning in markup we do not know: up to where the answer starts
            reasoning = [(body[0], at if at >= 0 else body[1])]
        if calls:  # the content is the answer, the rest of the body the calls (and their markup)
            return Rendered(text, [body], [(at, at + len(answer))] if at >= 0 else [], reasoning, [body])
        return Rendered(text, [body], [body], reasoning)

    def _completion_start(self, prompt: str, turn: str, last: int) -> int:
        """Where the student's completion starts in the template's render of the final turn."""
        if turn.startswith(prompt):
            return len(prompt)
        cut = len(prompt) - len(self.preamble)
        if self.preamble and prompt.endswith(self.preamble) and turn.startswith(prompt[:cut]):
            return cut
        raise RecordError(
            f"the chat template renders assistant message {last} other than after its generation prompt; "
            "cannot score it as the student generates it"
        )

    def _written_final_turn(self, prompt: str, reasoning: str, answer: str, last: int, calls: bool) -> Rendered:
        """The completion in the template's own markup where its final turn drops the reasoning it reads."""
        if not self.final_turn_drops_reasoning or calls:
            raise RecordError(
                f"the chat template drops the reasoning of assistant message {last} as it renders it"
                + (" with tool calls" if calls else "")
                + "; cannot score it as the student generates it"
            )
        head = self.markup.open + reasoning + self.markup.close
        text = prompt + head + answer + self.eot
        body = (len(prompt), len(prompt) + len(head) + len(answer))
        return Rendered(text, [body], [body], [(body[0], body[0] + len(head))])

    def _check_reasoning_shown(self, prompt: str, last: int) -> None:
        """A generation prompt that closes the reasoning block (thinking switched off) cannot show reasoning."""
        close = self.markup.close.strip()
        tail = prompt.rstrip()[-40:]
        if (close and prompt.rstrip().endswith(close)) or native.closes_reasoning(tail[tail.rfind("<") :]):
            raise RecordError(
                f"assistant message {last} has reasoning, but this student's chat template closes the reasoning "
                f"block in its generation prompt (thinking off: {prompt[-40:]!r}); turn thinking on with "
                "--chat-template-kwargs (e.g. '{\"enable_thinking\": true}' or '{\"thinking\": true}')"
            )


_CLOCK_CALL = re.compile(r"""strftime_now\(\s*(["'])(.*?)\1\s*\)""")
# transformers hands templates plain data only (a callable option becomes an inert string), so the clock is a
# macro over a table of the formats the template asks for, each rendered at TEMPLATE_DATE.
_CLOCK_MACRO = "{%- macro strftime_now(fmt) -%}{{ rsr_template_clock[fmt] }}{%- endmacro %}"


def _pinned_clock(template: str | None) -> tuple[str | None, dict]:
    """The template to render (with `strftime_now` pinned to TEMPLATE_DATE where it reads the clock) and the data
    it needs."""
    if template is None or "strftime_now" not in template:
        return template, {}
    formats = {fmt for _, fmt in _CLOCK_CALL.findall(template)}
    return _CLOCK_MACRO + template, {"rsr_template_clock": {f: TEMPLATE_DATE.strftime(f) for f in formats}}


_PROBE_ARGUMENTS = {"x": 1}


def probe_tool_calls(render: Callable[[list[dict]], str]) -> tuple[bool, bool]:
    """(arguments as a mapping, tool calls dropped), learnt by rendering a tool-call turn with `render` (a chat ->
    its text, refusals as RecordError). Arguments go as the JSON text records keep where the template shows it as
    the JSON object the student writes; as a mapping where it refuses text (Qwen3-Coder, GLM-4.6) or encodes text
    again (`| tojson` gives `"{\\"x\\": 1}"`: Qwen2.5, Llama 3.1, DeepSeek-V3.1) and renders a mapping. A call turn
    is tried with null content, then empty content (a template that needs a string renders no call either way)."""
    text_args = json.dumps(_PROBE_ARGUMENTS)
    for content in (None, ""):
        as_text, as_mapping = (_render_call(render, content, a) for a in (text_args, _PROBE_ARGUMENTS))
        if as_text is not None and json.dumps(text_args) not in as_text:
            return False, _TOOL_SENTINEL not in as_text
        if as_mapping is not None:
            return True, _TOOL_SENTINEL not in as_mapping
        if as_text is not None:
            return False, _TOOL_SENTINEL not in as_text
    return False, False  # the template takes no tool-call turn at all: each such record says so


def _render_call(render: Callable[[list[dict]], str], content: str | None, args: str | dict) -> str | None:
    call = {"type": "function", "function": {"name": _TOOL_SENTINEL, "arguments": args}}
    chat = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": content, "tool_calls": [call]}]
    chat.append({"role": "tool", "name": _TOOL_SENTINEL, "content": "1"})
    try:
        return render(chat)
    except RecordError:
        return None


def reencodes_json_arguments(chat_template: str | None, options: Mapping[str, Any] | None = None) -> bool:
    """Whether this template encodes tool-call arguments given as JSON text again and so is given mappings (see
    probe_tool_calls). Tokenizer-free (transformers' own Jinja renderer; special tokens play no part in how
    arguments render), for the student's digest: scores of tool calls under such a template changed when rsr
    began giving it mappings (rsr.spec.student_digest)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    source, clock = _pinned_clock(chat_template)
    if source is None:
        return False

    def render(chat: list[dict]) -> str:
        try:
            _cap_output(source)
            out, _ = render_jinja_template(
                conversations=[chat], chat_template=source, add_generation_prompt=False, **(options or {}), **clock
            )
        except Exception as err:  # noqa: BLE001 -- any template failure is a refusal here, as in Renderer.apply
            raise RecordError(str(err)) from None
        return out[0]

    as_mapping, _ = probe_tool_calls(render)
    text = json.dumps(_PROBE_ARGUMENTS)
    return as_mapping and any(_render_call(render, c, text) is not None for c in (None, ""))


def _cap_output(source: str | None) -> None:
    """Cap what one render of this template may write (MAX_RENDER_CHARS). Jinja's Template.render returns
    `environment.concat(pieces)`; transformers compiles each template in its own sandboxed environment, cached by
    its text (the one apply_chat_template uses), so that environment's concat is replaced by one that counts. Set
    before each render: the cache may have compiled it anew."""
    if source is None:
        return
    from transformers.utils.chat_template_utils import _compile_jinja_template

    _compile_jinja_template(source).environment.concat = _capped_concat


def _capped_concat(pieces: Iterable[str]) -> str:
    out, total = [], 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_RENDER_CHARS:
            raise RecordError(
                f"the chat template wrote over {MAX_RENDER_CHARS:,} characters for one conversation "
                "(a runaway loop?); stopped there"
            )
        out.append(piece)
    return "".join(out)


def _turn_end(turn: str, eot: str, calls: bool) -> int | None:
    """Where a turn's body ends: before the end-of-turn marker, before a tool-call turn's own marker, or (a
    tool-call turn with no marker, Apriel) at the end of the turn."""
    if eot and turn.endswith(eot):
        return len(turn) - len(eot)
    if not calls:
        return None
    ends = [e for e in _CALL_ENDS if turn.endswith(e)]
    return len(turn) - len(ends[0]) if ends else len(turn)


def _mapping_arguments(call: dict) -> dict:
    fn = call["function"]
    try:
        args = json.loads(fn["arguments"])
    except ValueError:
        return call  # not JSON: as the data gave it (the template says what it makes of it)
    return call | {"function": fn | {"arguments": args}}


def message(m: Mapping | object, i: int) -> Message:
    """A message as the template must see it (Message.for_template); content may be null only beside tool calls."""
    try:
        msg = m if isinstance(m, Message) else Message.model_validate(_fields(m))
    except (ValidationError, TypeError) as err:
        raise RecordError(f"message {i}: a message needs string role and content ({_first_error(err)})") from None
    if msg.content is None and not (msg.role == "assistant" and msg.tool_calls):
        raise RecordError(f"message {i}: a message needs string role and content (null only beside tool_calls)")
    return msg


def _fields(m: Mapping | object) -> dict:
    return dict(m) if isinstance(m, Mapping) else vars(m)


def _first_error(err: Exception) -> str:
    if isinstance(err, ValidationError):
        e = err.errors()[0]
        return f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
    return str(err)


def _check_response(m: Message, i: int) -> None:
    if not (m.content or "").strip() and not m.tool_calls:
        raise RecordError(f"empty assistant response (message {i})")


def _find(text: str, needle: str, lo: int, hi: int, exact: bool = False) -> tuple[int, int] | None:
    """Where needle (or, unless exact, needle stripped: llama3 trims) first occurs in text[lo:hi]."""
    for n in (needle,) if exact else (needle, needle.strip()):
        if (at := text.find(n, lo, hi)) >= 0:
            return at, at + len(n)
    return None


def _inside(char: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= char < b for a, b in spans)


def _first_scored(s: int, e: int, spans: list[tuple[int, int]]) -> int | None:
    """The first character of token [s, e) inside a scored span, or None."""
    return next((max(s, a) for a, b in spans if s < b and e > a), None)


def _reasoning_in(text: str, bodies: list[tuple[int, int]], content: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Thought blocks inside each turn's body or content (a generation prompt's opened tag sits before the body)."""
    regions = [(min(a, c), max(b, d)) for (a, b), (c, d) in zip(bodies, content, strict=True)]
    return [(a + x, a + y) for a, b in regions for x, y in reasoning_spans(text[a:b])]
