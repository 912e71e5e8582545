"""Each prompt once: a problem's trajectories share their prompt's forward (the canonical computation is always two
forwards: the prompt, then the response over its cached keys and values), so a score is the same bits whether its
prompt was computed for it alone or for all its teachers, in float32 and bfloat16; float32 stays within 1e-4
relative of the single-pass reference."""

from __future__ import annotations

import pytest

from benchmarks.baseline_scorer import reference
from rsr.score.student import Student
from tests.support.shared_data import zeroeval_conversations

TEACHERS = ("claude-3-5-sonnet-20241022", "gpt-4o-2024-08-06", "Qwen2.5-7B-Instruct", "Meta-Llama-3.1-8B-Instruct")


@pytest.fixture(scope="module")
def problems(shared_data) -> list[list[dict]]:
    """Two real problems x four teachers, interleaved as a file of mixed teachers would be."""
    by_teacher = [zeroeval_conversations(shared_data, t, 2, start=60) for t in TEACHERS]
    for first, *others in zip(*by_teacher, strict=True):  # the same problem across teachers: one shared prompt
        assert all(o[0] == first[0] for o in others)
    return [conv for convs in zip(*by_teacher, strict=True) for conv in convs]


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def student(request) -> Student:
    return Student.load("smollm2-135m", dtype=request.param)


def test_a_shared_prompt_gives_the_same_bits_as_a_prompt_computed_alone(student, problems, monkeypatch):
    prompts = []
    monkeypatch.setattr(student, "_prompt", lambda ids, own=student._prompt: prompts.append(len(ids)) or own(ids))
    together = student.score(problems, progress=False)
    assert len(prompts) == 2  # one prompt forward per problem, not per trajectory
    alone = [student.score([conv], progress=False)[0] for conv in problems]
    assert len(prompts) == 2 + len(problems)
    for a, b in zip(together, alone, strict=True):
        assert a.error is None and a.stats == b.stats  # every field equal, floats to the bit
    truncated = student.score(problems, max_tokens=300, progress=False)
    assert [r.stats for r in truncated] == [
        student.score([c], max_tokens=300, progress=False)[0].stats for c in problems
    ]


def test_float32_stays_within_1e4_of_the_single_pass_reference(smollm, problems):
    for conv, got in zip(problems, smollm.score(problems, progress=False), strict=True):
        ref = reference(smollm, conv)
        assert got.stats.n_tokens == ref.n_tokens
        assert got.stats.sum_surprisal == pytest.approx(ref.sum_surprisal, rel=1e-4)
        lo, hi = ref.sum_rank_bounds()  # a rank that moves is a near-tie within the reference's own float32 band
        assert lo <= got.stats.sum_rank_unclipped <= hi
