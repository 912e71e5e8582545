"""Every student in its own format, on the 13 real chat templates in ../shared/data/chat-templates/.

For each template and each case (single-turn reasoning, multi-turn reasoning, a tool call with dict arguments and
a tool result), the final response the scorer scores must be the student's native completion as an independent
render shows it: transformers' `apply_chat_template` given the reasoning the way that template reads it (its own
field, or inline in its own tags, written out here by hand, not probed) and its options; the completion is what the
full render adds to the render of the earlier turns with the generation prompt. Where a template refuses a case,
the record gets a clear error. The table in docs/formats.md is this file's.

Text-level: SmolLM2's tokenizer with each template swapped in (its control tokens added as special tokens, as in
test_chat_templates.py); no other weights needed.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from dataclasses import field as default

import pytest

from rsr.records import RecordError, join_reasoning
from rsr.score.markup import MARKUPS, THINK, Markup
from rsr.score.render import reencodes_json_arguments
from rsr.score.student import Student
from tests.support.shared_data import SHARED_DATA

TEMPLATES = SHARED_DATA / "chat-templates"
TAGS = {m.name: m for m in MARKUPS}


@dataclass(frozen=True)
class Native:
    """How a template reads reasoning (by hand, from its text): its field, or inline in its tags."""

    field: str | None = None
    tags: Markup = THINK
    options: dict = default(default_factory=dict)
    opened: bool = False  # the generation prompt opens the block and the template drops it from the final turn
    refuses_tools: bool = False  # the template refuses a tool turn: a clear per-record error
    drops_tools: bool = False  # the template renders no tool-call text


NATIVE = {
    "ByteDance-Seed-OSS": Native(field="reasoning_content"),
    "DeepSeek-R1-Distill-Qwen-7B": Native(opened=True, refuses_tools=True),
    "GLM-4.6": Native(field="reasoning_content"),
    "HuggingFaceTB-SmolLM3-3B": Native(drops_tools=True),
    "Llama-3.1-8B-Instruct": Native(),
    "QwQ-32B": Native(opened=True, refuses_tools=True),
    "Qwen2.5-7B-Instruct": Native(),
    "Qwen3-8B": Native(field="reasoning_content"),
    "Qwen3-Coder": Native(),
    "Qwen3.5-4B": Native(field="reasoning_content"),
    "deepseek-ai-DeepSeek-V3.1": Native(options={"thinking": True}, opened=True),
    "mistralai-Ministral-3-14B-Reasoning-2512": Native(tags=TAGS["mistral"]),
    "openai-gpt-oss-120b": Native(field="thinking"),
}

Q1 = {"role": "user", "content": "What is 12 times 13?"}
Q2 = {"role": "user", "content": "And 12 times 14?"}
R1, ANS1 = "12 * 13 = 120 + 36 = 156.", "The answer is 156."
R2, ANS2 = "One more 12: 156 + 12 = 168.", "It is 168."
R3, ANS3 = "The tool says 156.", "12 times 13 is 156."
CALL = {"type": "function", "function": {"name": "multiply", "arguments": {"a": 12, "b": 13}}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "multiply",
            "description": "Multiply two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
]
# Each case: the turns as (role, reasoning, answer | tool call | tool result).
CASES = {
    "single-turn reasoning": [Q1, ("assistant", R1, ANS1)],
    "multi-turn reasoning": [Q1, ("assistant", R1, ANS1), Q2, ("assistant", R2, ANS2)],
    "tool call + result": [Q1, ("call", None, CALL), ("tool", None, "156"), ("assistant", R3, ANS3)],
}


def _records(case: list) -> list[dict]:
    """The chat as records hold it: reasoning joined into the content as `<think>...</think>`."""
    out = []
    for turn in case:
        if isinstance(turn, dict):
            out.append(turn)
        elif turn[0] == "assistant":
            out.append({"role": "assistant", "content": join_reasoning(turn[1], turn[2])})
        elif turn[0] == "call":
            out.append({"role": "assistant", "content": None, "tool_calls": [turn[2]]})
        else:
            out.append({"role": "tool", "name": "multiply", "content": turn[2]})
    return out


def _native(case: list, how: Native) -> list[dict]:
    """The chat as the template's own documentation asks for it: reasoning in its field or its tags, arguments as
    mappings."""
    out = []
    for turn in case:
        if isinstance(turn, dict) or turn[0] != "assistant":
            out.append(_records([turn])[0] if not isinstance(turn, dict) else turn)
            continue
        _, reasoning, answer = turn
        if how.field:
            out.append({"role": "assistant", "content": answer, how.field: reasoning})
        else:
            out.append({"role": "assistant", "content": how.tags.join(reasoning, answer)})
    return out


def _template(name: str) -> str:
    path = TEMPLATES / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"real chat templates not found at {TEMPLATES} (set RSR_SHARED_DATA or lay out ../shared/data)")
    return path.read_text()


def _student(smollm: Student, name: str, options: dict | None = None) -> Student:
    template = _template(name)
    tokenizer = copy.deepcopy(smollm.tokenizer)
    specials = set(re.findall(r"<\|\w+\|>|<｜[^｜]+｜>|<\|\w+>|<\w+\|>|<seed:[a-z_]+>|\[/?[A-Z_]+\]", template))
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(specials)})
    kwargs = NATIVE[name].options if options is None else options
    return dataclasses.replace(smollm, tokenizer=tokenizer, chat_template=template, chat_template_kwargs=kwargs)


def _native_completion(student: Student, case: list, how: Native, tools: list | None) -> str:
    """The final response as the student generates it, by transformers alone."""
    chat = _native(case, how)
    kw = {"chat_template": student.chat_template, "tokenize": False, "tools": tools, **how.options}
    prompt = student.tokenizer.apply_chat_template(chat[:-1], add_generation_prompt=True, **kw)
    reasoning, answer = case[-1][1], case[-1][2]
    openers = [o for o in (how.tags.open + how.tags.pad, how.tags.open) if prompt.endswith(o)]
    if how.opened and openers:  # the template drops the final reasoning; its generation prompt opens the block
        return how.tags.join(reasoning, answer).removeprefix(openers[0])
    full = student.tokenizer.apply_chat_template(chat, add_generation_prompt=False, **kw)
    assert full.startswith(prompt)
    return full[len(prompt) :].removesuffix(student.eot)


PAIRS = [(n, c) for n in sorted(NATIVE) for c in CASES]


@pytest.mark.parametrize(("name", "case"), PAIRS)
def test_the_scored_response_is_the_students_native_completion(smollm, name, case):
    how, student = NATIVE[name], _student(smollm, name)
    tools = TOOLS if case == "tool call + result" else None
    records = _records(CASES[case])
    if tools and how.refuses_tools:
        with pytest.raises(RecordError, match="the chat template refused this conversation"):
            student.prepare(records, tools=tools)
        return
    text, spans = student.render(records, tools=tools)
    a, b = spans[-1]
    assert text[a:b] == _native_completion(student, CASES[case], how, tools)
    p = student.prepare(records, tools=tools)
    reasoning, answer, tool = p.coverage
    assert reasoning > 0 and answer > 0 and sum(p.coverage) == len(p.scored)
    if not tools or student.render_mode == "generation" or how.drops_tools:
        assert tool == 0  # a channel or role header is never a tool call
    else:
        assert tool > 0


@pytest.mark.parametrize("name", sorted(n for n in NATIVE if NATIVE[n].field))
def test_a_template_that_reads_a_reasoning_field_gets_it(smollm, name):
    student = _student(smollm, name)
    assert student.renderer.reasoning_field in ("reasoning_content", "thinking")
    assert f"reasoning given in the template's `{student.renderer.reasoning_field}` field" in student.render_note


def test_gpt_oss_reasoning_is_its_analysis_channel_and_its_headers_are_not_tool_calls(smollm):
    student = _student(smollm, "openai-gpt-oss-120b")
    records = _records(CASES["single-turn reasoning"])
    text, [(a, b)] = student.render(records)
    assert text[a:b] == f"<|channel|>analysis<|message|>{R1}<|end|><|start|>assistant<|channel|>final<|message|>{ANS1}"
    assert "<think>" not in text
    reasoning, answer, tool = student.prepare(records).coverage
    assert tool == 0 and reasoning > 0 and answer > 0


def test_gpt_oss_prompt_date_is_pinned_so_a_score_never_depends_on_the_day(smollm):
    student = _student(smollm, "openai-gpt-oss-120b")
    text, _ = student.render(_records(CASES["single-turn reasoning"]))
    assert "Current date: 2026-01-01\n" in text


def test_a_template_with_thinking_off_gives_reasoning_records_a_clear_error(smollm):
    student = _student(smollm, "deepseek-ai-DeepSeek-V3.1", options={})
    with pytest.raises(RecordError, match="closes the reasoning block in its generation prompt"):
        student.prepare(_records(CASES["single-turn reasoning"]))
    plain = [Q1, {"role": "assistant", "content": ANS1}]
    assert student.prepare(plain).scored  # a response without reasoning is fine in non-thinking mode


def test_qwen3_with_thinking_off_says_so_per_record(smollm):
    student = _student(smollm, "Qwen3-8B", options={"enable_thinking": False})
    assert '"enable_thinking": false' in student.render_note
    [result] = student.score([_records(CASES["single-turn reasoning"])], progress=False)
    assert result.stats is None and "thinking off" in result.error


def test_a_template_that_needs_mapping_arguments_gets_them_and_records_keep_json_text(smollm):
    student = _student(smollm, "Qwen3-Coder")
    assert student.renderer.arguments_as_mapping and "arguments given as mappings" in student.render_note
    records = _records(CASES["tool call + result"])
    text, spans = student.render(records, tools=TOOLS)
    call = text[slice(*spans[0])]
    assert "<function=multiply>" in call and "<parameter=a>\n12\n</parameter>" in call


def test_a_template_that_drops_tool_calls_warns_at_load(smollm):
    student = _student(smollm, "HuggingFaceTB-SmolLM3-3B")
    assert student.renderer.drops_tool_calls and "WARNING: this template drops tool calls" in student.render_note


def test_a_trace_in_another_familys_tags_is_written_in_the_students_own(smollm):
    student = _student(smollm, "mistralai-Ministral-3-14B-Reasoning-2512")
    chat = [Q1, {"role": "assistant", "content": f"<seed:think>\n{R1}\n</seed:think>\n{ANS1}"}]
    text, [(a, b)] = student.render(chat)
    assert text[a:b] == f"[THINK]{R1}[/THINK]{ANS1}"
    qwen = _student(smollm, "Qwen2.5-7B-Instruct")
    text, [(a, b)] = qwen.render([Q1, {"role": "assistant", "content": f"[THINK]{R1}[/THINK]{ANS1}"}])
    assert text[a:b] == join_reasoning(R1, ANS1)


@pytest.mark.parametrize("name", ["ByteDance-Seed-OSS", "mistralai-Ministral-3-14B-Reasoning-2512"])
def test_published_messages_carry_reasoning_as_the_template_reads_it(smollm, name):
    """A trainer applying the student's template to the published `messages` renders exactly the scored text."""
    import datasets

    from rsr.publish.files import features

    student = _student(smollm, name)
    assert student.info()["native_form"]
    records = _records(CASES["tool call + result"])
    messages = student.renderer.native(records)
    args = messages[1]["tool_calls"][0]["function"]["arguments"]  # a mapping where the template is given one
    assert args == ({"a": 12, "b": 13} if student.renderer.arguments_as_mapping else '{"a": 12, "b": 13}')
    rows = [{"messages": messages}]
    column = datasets.Dataset.from_list(rows, features=datasets.Features({"messages": features(rows)["messages"]}))
    published = column[0]["messages"]
    if student.renderer.reasoning_field:
        assert published[-1][student.renderer.reasoning_field] == R3 and published[-1]["content"] == ANS3
    text, _ = student.render(records, tools=TOOLS)
    again = [{k: v for k, v in m.items() if v is not None} for m in published]  # the published mappings as read
    kw = {"chat_template": student.chat_template, "tokenize": False, "tools": TOOLS}
    assert student.tokenizer.apply_chat_template(again, **kw) == text


REENCODES = {
    "Llama-3.1-8B-Instruct",
    "Qwen2.5-7B-Instruct",
    "QwQ-32B",
    "deepseek-ai-DeepSeek-V3.1",
    "openai-gpt-oss-120b",
}


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_a_template_that_encodes_json_text_again_is_given_mappings(smollm, name):
    """Qwen2.5, Llama 3.1, DeepSeek-V3.1 (and gpt-oss, QwQ) render text arguments with `| tojson`, as JSON text
    inside JSON (`"{\\"a\\": 12}"`), a form their students never write: they get mappings, and the digest says so."""
    student = _student(smollm, name)
    template = student.chat_template
    assert reencodes_json_arguments(template, NATIVE[name].options) == (name in REENCODES)
    if name in REENCODES:
        assert student.renderer.arguments_as_mapping and student.info()["native_form"]
    if name in REENCODES and not NATIVE[name].refuses_tools:
        text, _ = student.render(_records(CASES["tool call + result"]), tools=TOOLS)  # scored, or context
        assert '{"a": 12, "b": 13}' in text and '\\"a\\"' not in text


def test_ministral_thinking_chunks_render_as_the_inline_tags_it_is_given(smollm):
    """Ministral/Magistral also read reasoning as a `{"type": "thinking"}` content chunk; their template writes it
    as `[THINK]...[/THINK]`, the very text the inline form renders, so the inline form is the student's own."""
    name = "mistralai-Ministral-3-14B-Reasoning-2512"
    student = _student(smollm, name)
    records = _records(CASES["single-turn reasoning"])
    chunks = [{"type": "thinking", "thinking": R1}, {"type": "text", "text": ANS1}]
    native = [Q1, {"role": "assistant", "content": chunks}]
    kw = {"chat_template": student.chat_template, "tokenize": False}
    assert student.tokenizer.apply_chat_template(native, **kw) == student.render(records)[0]
