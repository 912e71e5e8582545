"""Reasoning markup of each model family: recognised in any text, taken apart, and written in a student's own tags."""

from __future__ import annotations

import pytest

from rsr.records import join_reasoning
from rsr.score import markup
from rsr.score.markup import MARKUPS, THINK, markup_of_template, reasoning_spans, split

TRACES = {  # a trace as each family writes it: reasoning "R r", answer "A a"
    "think": "<think>\nR r\n</think>\n\nA a",
    "seed": "<seed:think>\nR r\n</seed:think>\nA a",
    "mistral": "[THINK]R r[/THINK]A a",
    "openthoughts": "<|begin_of_thought|>\n\nR r\n\n<|end_of_thought|>\n\nA a",
    "gpt-oss": "<|channel|>analysis<|message|>R r<|end|>A a",
    "gemma": "<|channel>thought\nR r<channel|>A a",
    "apriel": "R r\n[BEGIN FINAL RESPONSE]\nA a",
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_each_familys_trace_is_taken_apart_into_reasoning_and_answer(name):
    found, reasoning, answer = split(TRACES[name])
    assert (found.name, reasoning, answer) == (name, "R r", "A a")


@pytest.mark.parametrize("m", MARKUPS, ids=[m.name for m in MARKUPS])
def test_a_trace_written_in_a_familys_tags_reads_back_the_same(m):
    assert m.join("R r", "A a") == TRACES[m.name]
    assert split(m.join("R r", "A a"))[1:] == ("R r", "A a")


def test_the_records_joined_form_is_the_think_familys():
    assert THINK.join("R", "A") == join_reasoning("R", "A")


def test_a_response_without_reasoning_is_all_answer_and_a_cut_trace_all_reasoning():
    assert split("just an answer") == (None, None, "just an answer")
    assert split("<think>\nhalf a thought")[1:] == ("half a thought", "")


@pytest.mark.parametrize("name", sorted(TRACES))
def test_reasoning_tokens_are_counted_in_every_familys_markup(name):
    text = TRACES[name]
    [(a, b)] = reasoning_spans(text)
    assert "R r" in text[a:b] and "A a" not in text[a:b] and text[b:].endswith("A a")


def test_a_close_tag_first_means_the_prompt_opened_the_block():
    assert reasoning_spans("R</think>A") == [(0, 9)]
    assert reasoning_spans("R[/THINK]A") == [(0, 9)]


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ '<seed:think>' }}", "seed"),
        ("[THINK]{{ m.thinking }}[/THINK]", "mistral"),
        ("<|channel|>analysis<|message|>", "gpt-oss"),
        ("{{ '<|channel>thought\\n' }}", "gemma"),
        ("{{ content }}", "think"),
        (None, "think"),
    ],
)
def test_a_templates_own_tags_are_read_from_its_text(source, name):
    assert markup_of_template(source).name == name
    assert markup.MARKUPS[0] is THINK
