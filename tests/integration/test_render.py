"""Rendering's own room (rsr/score/render.py): template options, the pinned clock, sandbox limits, tools, kinds.

The real embedded student (SmolLM2) and small hand-written templates; the 13 real templates are
test_template_conformance.py's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsr.records import RecordError, join_reasoning
from rsr.score.load import weights_manifest
from rsr.score.render import MAX_RENDER_CHARS, TEMPLATE_DATE, Renderer
from rsr.score.student import Student
from rsr.spec import StudentSpec, student_digest

CHAT = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": join_reasoning("R", "A")}]
# A template with an option, a clock and tool schemas: everything the renderer must pass through.
OPTIONS_TEMPLATE = (
    "{% if tools %}TOOLS:{{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
    "DATE:{{ strftime_now('%d %b %Y') }}\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and m.reasoning_content and enable_thinking %}<think>\n{{ m.reasoning_content }}\n"
    "</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HUGE_RANGE = "{% for i in range(10**9) %}x{% endfor %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
# 10**8 characters through the sandbox's own limits (each range under its 100,000): caught while it writes.
RUNAWAY = (
    "{% for m in messages %}{{ m['content'] }}{% endfor %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"
)


def test_template_options_reach_the_template_and_the_note(smollm):
    on = dataclasses.replace(smollm, chat_template=OPTIONS_TEMPLATE, chat_template_kwargs={"enable_thinking": True})
    text, [(a, b)] = on.render(CHAT)
    assert text[a:b] == join_reasoning("R", "A") and on.renderer.reasoning_field == "reasoning_content"
    assert '"enable_thinking": true' in on.render_note and on.info()["chat_template_kwargs"] == {
        "enable_thinking": True
    }
    off = dataclasses.replace(smollm, chat_template=OPTIONS_TEMPLATE)
    assert off.renderer.reasoning_field is None  # without the option this template shows no reasoning field


def test_the_template_clock_is_pinned(smollm):
    student = dataclasses.replace(smollm, chat_template=OPTIONS_TEMPLATE)
    text, _ = student.render(CHAT)
    assert text.startswith(f"DATE:{TEMPLATE_DATE.strftime('%d %b %Y')}\n")


def test_tools_are_given_to_the_template_per_conversation(smollm):
    student = dataclasses.replace(smollm, chat_template=OPTIONS_TEMPLATE)
    tools = [{"type": "function", "function": {"name": "multiply", "parameters": {"type": "object"}}}]
    text, _ = student.render(CHAT, tools=tools)
    assert text.startswith("TOOLS:multiply\n")
    plain, with_tools = student.score([CHAT, CHAT], tools=[None, tools], progress=False)
    assert plain.error is None and with_tools.error is None
    assert plain.stats.n_tokens == with_tools.stats.n_tokens  # the tools are context, never scored
    with pytest.raises(ValueError, match="one each"):
        student.score([CHAT], tools=[None, None], progress=False)


def test_options_and_clock_are_part_of_the_digest_and_absent_ones_change_nothing(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    weights = weights_manifest(tmp_path)
    assert weights.startswith("tokenizer.json=")
    plain = student_digest(weights, "{{ x }}", None)
    assert student_digest(weights, "{{ x }}", {}) == plain  # students without options keep their id
    assert student_digest(weights, "{{ x }}", {"enable_thinking": False}) != plain
    assert student_digest(weights, "{{ x }}", {"a": 1, "b": 2}) == student_digest(weights, "{{ x }}", {"b": 2, "a": 1})
    assert student_digest(weights, "{{ x }}", None, "2026-01-01") != plain  # a template reading the clock


def test_a_sandbox_limit_is_a_per_record_error_also_at_load(smollm, tmp_path):
    path = tmp_path / "huge-range.jinja"
    path.write_text(HUGE_RANGE)
    student = Student.load(str(Path(smollm.model.name_or_path)), dtype="float32", chat_template=str(path))
    [result] = student.score([CHAT], progress=False)
    assert result.stats is None and "refused this conversation" in result.error and "range" in result.error


def test_a_template_writing_a_huge_output_is_a_per_record_error(smollm):
    student = dataclasses.replace(smollm, chat_template=RUNAWAY)
    [result, again] = student.score([CHAT, CHAT], progress=False)  # each record its own error, the run goes on
    assert result.stats is None and f"wrote over {MAX_RENDER_CHARS:,} characters" in result.error
    assert again.error == result.error
    fine = dataclasses.replace(smollm, chat_template=HUGE_RANGE.replace("10**9", "3"))
    assert fine.render(CHAT)[0].startswith("xxx")  # the cap is on the output, not on loops


def test_a_channel_header_is_the_answers_markup_not_a_tool_call(smollm):
    template = (
        "{% for m in messages %}<|start|>{{ m.role }}{% if m.role == 'assistant' %}<|channel|>final<|message|>"
        "{% endif %}{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|start|>assistant{% endif %}"
    )
    student = dataclasses.replace(smollm, chat_template=template)
    chat = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "The answer is 4."}]
    reasoning, answer, tool = student.prepare(chat).coverage
    assert tool == 0 and answer > 0 and reasoning == 0


def test_a_template_that_drops_tool_calls_is_warned_at_load_and_each_record_says_so(smollm):
    # The embedded SmolLM2 template renders content only: a tool call is never shown to the student.
    assert smollm.renderer.drops_tool_calls
    assert "drops tool calls" in smollm.render_note
    call = {"type": "function", "function": {"name": "multiply", "arguments": '{"a": 12}'}}
    chat = [CHAT[0], {"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "content": "1"}]
    chat.append(CHAT[1])
    agent, plain = smollm.score([chat, CHAT], progress=False)
    assert agent.error is None and agent.n_tool_tokens == 0 and agent.dropped_tool_calls == 1
    assert plain.dropped_tool_calls == 0


def test_a_probe_never_sees_a_template_refusal_as_a_crash(smollm):
    renderer = Renderer(smollm.tokenizer, "{{ raise_exception('no') }}", "t")
    assert renderer.mode == "template" and "could not be probed" in renderer.note
    with pytest.raises(RecordError, match="refused this conversation"):
        renderer.layout(CHAT)


def test_chat_template_kwargs_in_a_config_and_on_the_command_line(tmp_path):
    assert StudentSpec(ref="x", chat_template_kwargs={"enable_thinking": False}).chat_template_kwargs == {
        "enable_thinking": False
    }
    from rsr.cli import app

    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"messages": CHAT}) + "\n")
    out = tmp_path / "out.jsonl"
    for bad, why in (("{not json", "not JSON"), ("[1]", "a JSON object is needed")):
        result = CliRunner().invoke(app, ["score", str(data), "--out", str(out), "--chat-template-kwargs", bad])
        assert result.exit_code == 2 and why in result.output, result.output


@pytest.mark.parametrize("call_end", ["<|call|>", ""])
def test_a_tool_call_turn_may_end_with_its_own_marker_or_none(smollm, call_end):
    """gpt-oss ends a tool-call turn with `<|call|>` and other turns with `<|end|>`; Apriel ends one with nothing."""
    template = (
        "{% for m in messages %}<|start|>{{ m.role }}<|message|>"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }}({{ c.function.arguments }})"
        "{% endfor %}" + call_end + "{% else %}{{ m.content }}<|end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|start|>assistant<|message|>{% endif %}"
    )
    student = dataclasses.replace(smollm, chat_template=template)
    call = {"type": "function", "function": {"name": "multiply", "arguments": '{"a": 12}'}}
    chat = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "156"},
        {"role": "assistant", "content": "156."},
    ]
    text, spans = student.render(chat)
    assert [text[a:b] for a, b in spans] == ['CALL multiply({"a": 12})', "156."]
    reasoning, answer, tool = student.prepare(chat).coverage
    assert tool > 0 and answer > 0 and reasoning == 0
