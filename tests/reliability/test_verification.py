"""Adversarial answers cannot hang a run.

- math-verify runs in worker processes with a per-check time limit: huge exponents, towers, factorials, products
  and deeply nested LaTeX end as verdict "error" ("timed out after Xs") or a plain verdict;
- the text work done outside those workers (answer extraction at verify time, reading a teacher's JSON at ingest
  time) has no time limit, so it must stay linear on hostile text. Two regexes were quadratic (300 kB took 11 s
  and 205 s, 1 MB hours); these cases pin them with a hang guard (minutes, where linear code takes well under a
  second even on a busy machine), not a speed assertion.
"""

from __future__ import annotations

import threading

import pytest

from rsr.curate.ingest.zeroeval import parse_teacher_json
from rsr.curate.verify import VerifierPool, extract_answer, verify_many
from rsr.records import Message, Trajectory

SIZE = 1_000_000  # quadratic code takes hours on this, linear code well under a second
HANG_GUARD_S = 300
HOSTILE_TEXT = {
    "unclosed \\( on the answer line": "The answer is " + "\\(" * (SIZE // 2),
    "unclosed \\[ on the answer line": "Final answer: " + "\\[" * (SIZE // 2),
    "unclosed $ spans": "The answer is " + "$x" * (SIZE // 2),
    "unclosed \\boxed{": "\\boxed{" * (SIZE // 7),
    "nested \\boxed{": "\\boxed{" * (SIZE // 16) + "1" + "}" * (SIZE // 16),
    "reasoning keys, no answer after": '"answer": "5"' + '"reasoning": "x' * (SIZE // 16),
    "reasoning key, then spaces": '"answer": "5", "reasoning": "' + " " * SIZE,
    "answer keys": '"answer": "' * (SIZE // 11),
    "code fences": "```json\n{" * (SIZE // 9),
}


@pytest.mark.parametrize("name", list(HOSTILE_TEXT))
def test_hostile_text_is_read_in_linear_time(name):
    text = HOSTILE_TEXT[name]

    def read() -> None:
        extract_answer(text)
        parse_teacher_json(text)
        extract_answer(text, declared=text[:5000])

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive(), f"{name}: still reading {len(text)} characters after {HANG_GUARD_S}s (quadratic?)"


ADVERSARIAL = {
    "tower of 9s": "9^{9^{9^{9^{9}}}}",
    "tower of 2s": "2^{2^{2^{2^{2^{2^{2^{2}}}}}}}",
    "factorial of a huge number": "(10^{10^{10}})!",
    "huge cancelling powers": "10^{10^{10^{10}}} - 10^{10^{10^{10}}} + 5",
    "long product": "\\prod_{k=1}^{10^{9}} (1 + \\frac{1}{k^2})",
    "huge sum": "\\sum_{k=1}^{10^{12}} k",
    "nested fractions": "\\frac{" * 90 + "1" + "}{2}" * 90,
    "nested roots": "\\sqrt{" * 120 + "2" + "}" * 120,
    "nested parentheses": "(" * 450 + "5" + ")" * 450,
    "nested exponents": "2^{" * 150 + "2" + "}" * 150,
}
GOOD = [("5", "5", "correct"), ("\\frac{10}{2}", "5", "correct"), ("2+3", "5", "correct"), ("7", "5", "incorrect")]


def _trajectory(problem: str, answer: str, gold: str) -> Trajectory:
    return Trajectory.build(
        teacher="t",
        problem=problem,
        messages=[
            Message(role="user", content=problem),
            Message(role="assistant", content=f"So the answer is $\\boxed{{{answer}}}$."),
        ],
        gold_answer=gold,
        source_file="adversarial.jsonl",
        source_line=0,
    )


@pytest.mark.slow
def test_adversarial_answers_are_cut_off_by_the_time_limit():
    timeout_s, workers = 2.0, 2
    trajectories = [_trajectory(f"adversarial {name}", a, "5") for name, a in ADVERSARIAL.items()]
    trajectories += [_trajectory(f"good {i}", a, g) for i, (a, g, _) in enumerate(GOOD)]
    with VerifierPool(workers=workers) as pool:
        verdicts = verify_many(trajectories, timeout_s=timeout_s, pool=pool)
    by_problem = {t.problem: v for t, v in zip(trajectories, verdicts, strict=True)}
    for i, (_, _, expected) in enumerate(GOOD):
        assert by_problem[f"good {i}"].verdict == expected
    adversarial = [by_problem[f"adversarial {name}"] for name in ADVERSARIAL]
    assert all(v.verdict in ("error", "incorrect", "correct") for v in adversarial)
    timed_out = [v for v in adversarial if v.verdict == "error" and "timed out" in (v.detail or "")]
    assert len(timed_out) >= 3  # the towers and the factorial really would run for ever: each was killed
