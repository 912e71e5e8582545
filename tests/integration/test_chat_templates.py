"""Scored tokens = trained tokens, on five real chat templates (../shared/data/chat-templates/, read at test time).

The independent computation is transformers' own: a training copy of each real template, edited minimally so that
`{% generation %}...{% endgeneration %}` wraps each assistant turn's body (the convention an SFT trainer's assistant
mask follows: not the role header, not the end-of-turn marker), rendered with
`apply_chat_template(..., return_assistant_tokens_mask=True)`. The scorer must render the same text and score
exactly the masked tokens (position p is scored when token p is trained: it is predicted from p - 1).

Templates that rewrite assistant text (R1-Distill, QwQ, Qwen3) are scored in "generation" mode: the training copy
is the real template with the reasoning-dropping split removed from the final turn and only that turn wrapped,
after the generation prompt (the same rendering the student generates).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import pytest

from rsr.records import RecordError, join_reasoning
from rsr.score.student import Student
from tests.support.shared_data import SHARED_DATA

TEMPLATES = SHARED_DATA / "chat-templates"
R1, QWQ, QWEN3 = "DeepSeek-R1-Distill-Qwen-7B", "QwQ-32B", "Qwen3-8B"
QWEN25, LLAMA31 = "Qwen2.5-7B-Instruct", "Llama-3.1-8B-Instruct"


def _edit(text: str, *pairs: str) -> str:
    """Replace each `old` by `new` (pairs: old, new, old, new, ...); each `old` must occur exactly once."""
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert text.count(old) == 1, f"the real template changed: {old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


# Each training copy: the real template with `{% generation %}` around the assistant bodies (raw strings: the
# `\n` below are Jinja escapes, as in the template files).
def _qwen25_training(t: str) -> str:
    return _edit(
        t,
        r"{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}",
        r"{{- '<|im_start|>' + message.role + '\n' }}{%- if message.role == 'assistant' %}{% generation %}"
        r"{{- message.content }}{% endgeneration %}{%- else %}{{- message.content }}{%- endif %}"
        r"{{- '<|im_end|>' + '\n' }}",
        # a tool-calling turn: its body starts after the header's newline, with the content or the first call
        "{{- '<|im_start|>' + message.role }}\n        {%- if message.content %}\n"
        "            {{- '\\n' + message.content }}",
        "{{- '<|im_start|>' + message.role + '\\n' }}{% generation %}\n        {%- if message.content %}\n"
        "            {{- message.content }}",
        r"""{{- '\n<tool_call>\n{"name": "' }}""",
        r"""{{- ('\n' if (message.content or not loop.first) else '') + '<tool_call>\n{"name": "' }}""",
        "{%- endfor %}\n        {{- '<|im_end|>\\n' }}",
        "{%- endfor %}{% endgeneration %}\n        {{- '<|im_end|>\\n' }}",
    )


def _llama31_training(t: str) -> str:
    return _edit(
        t,
        r"{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
        r"'<|eot_id|>' }}",
        r"{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
        r"{%- if message.role == 'assistant' %}{% generation %}{{- message['content'] | trim }}{% endgeneration %}"
        r"{%- else %}{{- message['content'] | trim }}{%- endif %}{{- '<|eot_id|>' }}",
        """{{- '{"name": "' + tool_call.name + '", ' }}""",
        """{% generation %}{{- '{"name": "' + tool_call.name + '", ' }}""",
        """{{- "}" }}""",
        """{{- "}" }}{% endgeneration %}""",
    )


# Generation mode: the final turn after the generation prompt; `<think>\n` opened by that prompt is context.
_AFTER_OPENED_THINK = (
    "{% generation %}{{- content[8:] if content.startswith('<think>\\n') else content }}{% endgeneration %}"
)


def _r1_training(t: str) -> str:
    return _edit(
        t,
        "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
        "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}",
        "{% if '</think>' in content and not loop.last %}{% set content = content.split('</think>')[-1] %}{% endif %}"
        "{% if loop.last %}{{'<｜Assistant｜><think>\\n'}}" + _AFTER_OPENED_THINK + "{% else %}"
        "{{'<｜Assistant｜>' + content}}{% endif %}{{'<｜end▁of▁sentence｜>'}}",
    )


def _qwq_training(t: str) -> str:
    line = r"{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}"
    last = r"{{- '<|im_start|>' + message.role + '\n<think>\n' }}" + _AFTER_OPENED_THINK + r"{{- '<|im_end|>\n' }}"
    # QwQ splits only `not loop.last` turns: the final turn is already whole. (The line occurs in the tool branch too.)
    head, sep, rest = t.partition(line)
    return head + "{%- if loop.last %}" + last + "{%- else %}" + sep + "{%- endif %}" + rest


def _qwen3_training(t: str) -> str:
    think = (
        r"'<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + "
        r"content.lstrip('\n') }}"
    )
    wrapped = (
        r"{%- if loop.last %}{{- '<|im_start|>' + message.role + '\n' }}{% generation %}"
        r"{{- '<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}"
        r"{% endgeneration %}{%- else %}{{- " + think + "{%- endif %}"
    )
    return _edit(t, "{{- " + think, wrapped)


TRAINING = {QWEN25: _qwen25_training, LLAMA31: _llama31_training, R1: _r1_training, QWQ: _qwq_training}
TRAINING[QWEN3] = _qwen3_training
MODES = {QWEN25: "template", LLAMA31: "template", R1: "generation", QWQ: "generation", QWEN3: "generation"}


@pytest.fixture(scope="module")
def base():
    return Student.load("smollm2-135m", dtype="float32")


def _real(name: str) -> str:
    path = TEMPLATES / f"{name}.jinja"
    if not path.is_file():
        pytest.skip(f"real chat templates not found at {TEMPLATES} (set RSR_SHARED_DATA or lay out ../shared/data)")
    return path.read_text()


def _student(base: Student, name: str) -> Student:
    template = _real(name)
    tokenizer = copy.deepcopy(base.tokenizer)  # the module's student keeps its own tokenizer
    # SmolLM2's tokenizer lacks these templates' control tokens (<｜Assistant｜>, <|start_header_id|>, ...): as
    # plain text BPE would merge their characters with a neighbour's, so the boundary between header and body
    # would fall inside a token. Added as special tokens they are single tokens, as in the real students'
    # tokenizers, and token boundaries sit exactly where the real ones do. (<think>, <tool_call> are plain text
    # in Qwen's tokenizers too.)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": sorted(set(re.findall(r"<\|\w+\|>|<｜[^｜]+｜>", template)))}
    )
    return dataclasses.replace(base, tokenizer=tokenizer, chat_template=template)


def _assert_scored_equals_trained(student: Student, name: str, messages: list[dict]) -> None:
    training = TRAINING[name](student.chat_template)
    msgs = student.renderer.native(messages)  # as published: tool-call arguments as the template is given them
    kw = {"chat_template": training, "add_generation_prompt": False}
    text, _ = student.render(messages)
    assert student.tokenizer.apply_chat_template(msgs, tokenize=False, **kw) == text
    out = student.tokenizer.apply_chat_template(
        msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **kw
    )
    p = student.prepare(messages)
    assert list(out["input_ids"]) == p.ids
    trained = [i for i, m in enumerate(out["assistant_masks"]) if m]
    assert trained and p.scored == trained


SYSTEM = {"role": "system", "content": "You are a careful mathematician."}
Q1 = {"role": "user", "content": "What is 12 times 13?"}
Q2 = {"role": "user", "content": "And 12 times 14?"}
A1 = {"role": "assistant", "content": join_reasoning("12 * 13 = 120 + 36 = 156.", "The answer is 156.")}
A2 = {"role": "assistant", "content": join_reasoning("One more 12: 156 + 12 = 168.", "It is 168.")}
CALL = {"type": "function", "function": {"name": "multiply", "arguments": {"a": 12, "b": 13}}}
AGENT = [
    Q1,
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "name": "multiply", "content": "156"},
    {"role": "assistant", "content": join_reasoning("The tool says 156.", "12 times 13 is 156.")},
]
CASES = {
    "single-turn reasoning": [SYSTEM, Q1, A1],
    "multi-turn, earlier reasoning": [Q1, A1, Q2, A2],
    "agent with a tool call": AGENT,
}
WITH_TOOLS = {QWEN25, LLAMA31, QWEN3}


# Agent chats on the templates that render an OpenAI-style tool-call turn (Qwen2.5, Llama 3.1, Qwen3); R1's and
# QwQ's refuse one, each record with a clear error (test below).
PAIRS = [(n, c) for n in sorted(TRAINING) for c in sorted(CASES) if c != "agent with a tool call" or n in WITH_TOOLS]


@pytest.mark.parametrize(("name", "case"), PAIRS)
def test_scored_tokens_are_the_tokens_a_trainer_masks(base, name, case):
    student = _student(base, name)
    _assert_scored_equals_trained(student, name, CASES[case])


@pytest.mark.parametrize("name", sorted(set(TRAINING) - WITH_TOOLS))
def test_a_template_that_refuses_a_tool_call_turn_is_that_records_clear_error(base, name):
    student = _student(base, name)
    with pytest.raises(RecordError, match="the chat template refused this conversation"):
        student.prepare(AGENT)
    [result] = student.score([AGENT], progress=False)
    assert result.stats is None and "refused this conversation (roles: user, assistant, tool)" in result.error


@pytest.mark.parametrize("name", sorted(MODES))
def test_render_mode_says_whether_the_template_keeps_assistant_text(base, name):
    student = _student(base, name)
    assert student.render_mode == MODES[name]
    assert student.info()["render_mode"] == MODES[name] and student.info()["render_note"] == student.render_note
    if MODES[name] == "generation":
        assert "prompt`/`completion" in student.render_note


def test_tool_call_tokens_are_scored_in_template_mode(base):
    student = _student(base, QWEN25)
    p = student.prepare(AGENT)
    scored = student.tokenizer.decode([p.ids[i] for i in p.scored])
    # The arguments as the student writes them (a JSON object), not JSON text encoded again by `| tojson`.
    assert '<tool_call>\n{"name": "multiply", "arguments": {"a": 12, "b": 13}}\n</tool_call>' in scored
    assert "<|im_end|>" not in scored
    reasoning, answer, tool = p.coverage
    assert reasoning > 0 and answer > 0 and tool > 0 and sum(p.coverage) == len(p.scored)


def test_generation_mode_scores_only_the_final_response_as_generated(base):
    student = _student(base, R1)
    text, spans = student.render([Q1, A1, Q2, A2])
    [(a, b)] = spans
    assert text[a:b] == A2["content"].removeprefix("<think>\n")
    assert text.endswith("<｜Assistant｜><think>\n" + text[a:b] + "<｜end▁of▁sentence｜>")
    assert "12 * 13 = 120" not in text  # the earlier turn's reasoning is dropped, as at inference
    example = student.training_example([Q1, A1, Q2, A2])
    assert example["prompt"] + example["completion"] == text
    assert example["completion"] == text[a:b] + "<｜end▁of▁sentence｜>"


def test_a_trace_without_reasoning_is_not_refused_under_r1(base):
    student = _student(base, R1)
    plain = [Q1, {"role": "assistant", "content": "12 times 13 is 156."}]
    text, [(a, b)] = student.render(plain)
    assert text[a:b] == "12 times 13 is 156."
    assert student.prepare(plain).scored


def test_a_final_tool_call_under_a_generation_mode_student_is_scored_as_its_template_renders_it(base):
    """An agent trajectory's last assistant turn is often a tool call. A rewriting template that writes reasoning
    from its field (Qwen3) renders that turn itself: scored after the generation prompt, the calls as tool tokens.
    One that reads reasoning inline only (DeepSeek-V3.1 with thinking) cannot: that record's clear error."""
    student = _student(base, QWEN3)
    messages = student.renderer.native(AGENT[:2])
    kw = {"chat_template": student.chat_template, "tokenize": False}
    prompt = student.tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, **kw)
    turn = student.tokenizer.apply_chat_template(messages, **kw)
    text, [(a, b)] = student.render(AGENT[:2])
    assert text == turn and text[:a] == prompt and text[b:] == student.eot and "<tool_call>" in text[a:b]
    assert student.prepare(AGENT[:2]).coverage[2] > 0  # tool tokens
    v31 = dataclasses.replace(_student(base, "deepseek-ai-DeepSeek-V3.1"), chat_template_kwargs={"thinking": True})
    with pytest.raises(RecordError, match="calls tools"):
        v31.prepare(AGENT[:2])


def test_max_tokens_above_the_context_is_capped_with_a_message(base):
    n = base.context_length
    assert base.max_tokens_for(None) == (n, None)
    assert base.max_tokens_for(n // 2) == (n // 2, None)
    limit, message = base.max_tokens_for(2 * n)
    assert limit == n and message == f"max_tokens {2 * n} is above smollm2-135m's context of {n}: capped to {n}"


def test_score_reports_coverage_that_adds_up_to_the_scored_tokens(base):
    conv = [Q1, A1]
    (res,) = base.score([conv], max_tokens=10**6, progress=False)
    assert res.error is None and res.render == "template" and res.max_tokens == base.context_length
    assert res.n_reasoning_tokens > 0 and res.n_answer_tokens > 0 and res.n_tool_tokens == 0
    score = res.to_score("t-1", base.student_id)
    assert score.n_reasoning_tokens + score.n_answer_tokens + score.n_tool_tokens == score.n_tokens > 0
    assert score.render == "template" and math.isfinite(score.rsr)
