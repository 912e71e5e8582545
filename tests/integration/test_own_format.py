"""Never a foreign or doubled format (issue 31), on real chat templates: the 13 in ../shared/data/chat-templates and
two committed beside this suite (tests/support/chat_templates/: Kimi-K2-Thinking, Apriel 1.6 Thinker).

- No scored render holds reasoning markup twice, or in two families' tags, or the reasoning twice: checked on every
  scored turn of single-turn, multi-turn and tool-call chats under every template.
- Kimi-K2-Thinking writes an empty `<think></think>` in its last plain turn and `<think>{reasoning}</think>` only in
  the turns after it: its student writes `<think>...</think>answer` after its generation prompt, and that is scored.
  Without what rsr learns from the later turns, the load-time check refuses reasoning records (never a score).
- Apriel 1.6's generation prompt opens the reasoning (`Here are my reasoning steps:\\n`) and its turns do not repeat
  it: the completion after that prompt is the reasoning, the marker and the answer.

Text-level: SmolLM2's tokenizer with each template swapped in (its control tokens added as special tokens).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path

import pytest

from rsr.records import RecordError, join_reasoning
from rsr.score import native
from rsr.score.markup import MARKUPS
from rsr.score.student import Student
from tests.support.shared_data import SHARED_DATA

OURS = Path(__file__).resolve().parents[1] / "support" / "chat_templates"
KIMI, APRIEL = OURS / "Kimi-K2-Thinking.jinja", OURS / "Apriel-1.6-15b-Thinker.jinja"
SHARED = sorted((SHARED_DATA / "chat-templates").glob("*.jinja"))
OPTIONS = {"deepseek-ai-DeepSeek-V3.1": {"thinking": True}}  # its reasoning mode (off by default)

Q1 = {"role": "user", "content": "What is 12 times 13?"}
Q2 = {"role": "user", "content": "And 12 times 14?"}
R1, ANS1 = "12 * 13 = 120 + 36 = 156.", "The answer is 156."
R2, ANS2 = "One more 12: 156 + 12 = 168.", "It is 168."
CALL = {"type": "function", "function": {"name": "multiply", "arguments": '{"a": 12, "b": 13}'}, "id": "call_1"}
CASES = {
    "single-turn": [Q1, {"role": "assistant", "content": join_reasoning(R1, ANS1)}],
    "multi-turn": [
        Q1, {"role": "assistant", "content": join_reasoning(R1, ANS1)},
        Q2, {"role": "assistant", "content": join_reasoning(R2, ANS2)},
    ],
    "tool call": [
        Q1, {"role": "assistant", "content": join_reasoning("I multiply.", ""), "tool_calls": [CALL]},
        {"role": "tool", "name": "multiply", "tool_call_id": "call_1", "content": "156"},
        {"role": "assistant", "content": join_reasoning("The tool says 156.", ANS1)},
    ],
}  # fmt: skip


def _student(smollm: Student, path: Path) -> Student:
    template = path.read_text()
    tokenizer = copy.deepcopy(smollm.tokenizer)
    specials = set(re.findall(r"<\|\w+\|>|<｜[^｜]+｜>|<\|\w+>|<\w+\|>|<seed:[a-z_]+>|\[/?[A-Z_]+\]", template))
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(specials)})
    options = OPTIONS.get(path.stem, {})
    return dataclasses.replace(smollm, tokenizer=tokenizer, chat_template=template, chat_template_kwargs=options)


def _blocks(region: str) -> dict[str, tuple[int, int]]:
    """Per markup family found in a scored turn (with the generation prompt's end): its open and close tags."""
    found = {}
    for m in MARKUPS:
        opens = region.count(m.open.strip()) if m.open.strip() else 0
        if opens or region.count(m.close.strip()):
            found[m.name] = (opens, region.count(m.close.strip()))
    return found


@pytest.mark.parametrize("path", [*SHARED, KIMI, APRIEL], ids=lambda p: p.stem)
def test_no_scored_turn_holds_doubled_or_foreign_reasoning_markup(smollm, path):
    if not path.is_file():
        pytest.skip(f"real chat templates not found at {path.parent}")
    student = _student(smollm, path)
    for case, chat in CASES.items():
        try:
            r = student.renderer.layout(chat)
        except RecordError:
            continue  # refused with its reason (a template that takes no tool turn): never scored
        turns = [i for i, m in enumerate(chat) if m["role"] == "assistant"]
        for i, (_, b) in zip(turns[-len(r.spans) :], r.spans, strict=True):
            # the scored body and its turn's header (a generation prompt's opened tag): what the turn adds to the
            # render of the turns before it
            start = native.common_prefix(student.renderer.apply(student.renderer.native(chat[:i]), False), r.text)
            found = _blocks(r.text[start:b])
            assert len(found) <= 1, f"{case}: two families' markup in one scored turn: {r.text[start:b]!r}"
            assert all(o <= 1 and c <= 1 for o, c in found.values()), f"{case}: doubled: {r.text[start:b]!r}"
        scored = "".join(r.text[a:b] for a, b in r.spans)
        for reasoning in (R1, R2, "The tool says 156."):
            assert scored.count(reasoning) <= 1, f"{case}: the reasoning twice"


def test_kimi_k2_thinking_scores_the_think_block_it_writes_after_its_generation_prompt(smollm):
    student = _student(smollm, KIMI)
    assert student.render_mode == "generation" and student.renderer.reasoning_field == "reasoning_content"
    text, [(a, b)] = student.render(CASES["single-turn"])
    kw = {"chat_template": student.chat_template, "tokenize": False}
    assert text[:a] == student.tokenizer.apply_chat_template([Q1], add_generation_prompt=True, **kw)
    assert text[a:b] == f"<think>{R1}</think>{ANS1}" and text[b:] == "<|im_end|>"
    assert "<think></think><think>" not in text
    # The template's own render of a turn that shows its reasoning writes exactly that form.
    shown = [Q1, {"role": "assistant", "content": ANS1, "reasoning_content": R1}, Q2]
    shown.append({"role": "assistant", "content": ANS2, "reasoning_content": R2})
    own = student.tokenizer.apply_chat_template(shown, **kw)
    text, [(a, b)] = student.render(CASES["multi-turn"])
    assert f"<think>{R2}</think>{ANS2}<|im_end|>" in own and text[a:b] == f"<think>{R2}</think>{ANS2}"
    reasoning, answer, tool = student.prepare(CASES["single-turn"]).coverage
    assert reasoning > 0 and answer > 0 and tool == 0
    with pytest.raises(RecordError, match="access to attribute 'append'"):  # its tool-call turns: the sandbox's refusal
        student.prepare(CASES["tool call"])


def test_without_what_the_later_turns_show_kimis_doubled_tags_are_refused_at_load(smollm, monkeypatch):
    """The safety net: were its reasoning field not learnt, rsr would write `<think>` inline after the template's own
    empty block; the load-time check refuses every reasoning record instead of scoring that."""
    monkeypatch.setattr(native, "field_use", lambda render: native.FieldUse())
    student = _student(smollm, KIMI)
    assert "`<think>` twice in one turn" in student.renderer.refusal and "REFUSED" in student.render_note
    [result] = student.score([CASES["single-turn"]], progress=False)
    assert result.stats is None and "cannot be given reasoning in its own format" in result.error
    plain = [Q1, {"role": "assistant", "content": ANS1}]
    assert student.prepare(plain).scored  # a record without reasoning is still scored


def test_apriel_scores_reasoning_marker_and_answer_after_its_generation_prompt(smollm):
    student = _student(smollm, APRIEL)
    assert student.render_mode == "generation" and student.renderer.preamble == "Here are my reasoning steps:\n"
    text, [(a, b)] = student.render(CASES["single-turn"])
    kw = {"chat_template": student.chat_template, "tokenize": False}
    prompt = student.tokenizer.apply_chat_template([Q1], add_generation_prompt=True, **kw)
    assert text[:a] == prompt and prompt.endswith("\n<|begin_assistant|>\nHere are my reasoning steps:\n")
    assert text[a:b] == f"{R1}\n[BEGIN FINAL RESPONSE]\n{ANS1}"
    p = student.prepare(CASES["single-turn"])
    reasoning, answer, tool = p.coverage
    assert reasoning > 0 and answer > 0 and tool == 0
    assert student.training_example(CASES["single-turn"]) == {"prompt": prompt, "completion": text[a:]}
    text, [(a, b)] = student.render(CASES["multi-turn"])  # earlier turns keep their answer only, as it renders them
    assert text[a:b] == f"{R2}\n[BEGIN FINAL RESPONSE]\n{ANS2}" and R1 not in text
