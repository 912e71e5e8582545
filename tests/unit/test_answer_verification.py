"""Verify: extraction rules, every verdict kind, timeouts that cannot hang a run, threads, and real accuracy."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from rsr.curate.ingest import ingest_file
from rsr.curate.verify import VerifierPool, extract_answer, last_boxed, verify, verify_many
from rsr.records import Message, Trajectory


def traj(response: str, gold: str | None = "5", declared: str | None = None, problem: str = "P?") -> Trajectory:
    return Trajectory.build(
        teacher="t",
        problem=problem,
        messages=[Message(role="user", content=problem), Message(role="assistant", content=response)],
        gold_answer=gold,
        declared_answer=declared,
        source_file="mem",
        source_line=0,
    )


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(2) as p:
        yield p


# ---- extraction -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "declared", "expected"),
    [
        ("blah \\boxed{3} and The answer is 4", "7", ("7", "declared")),
        ("first \\boxed{1}, finally \\boxed{\\frac{1}{\\sqrt{2}}}.", None, ("\\frac{1}{\\sqrt{2}}", "boxed")),
        ("\\fbox{ x^{2} }", None, ("x^{2}", "boxed")),
        ("done \\boxed{12} then \\boxed{unclosed", None, ("12", "boxed")),
        ("The answer is \\boxed 7.", None, ("7", "boxed")),
        ("So the answer is: $-\\frac{3}{4}$.", None, ("-\\frac{3}{4}", "the_answer_is")),
        ("the final answer is **42**.\nThanks", None, ("42", "the_answer_is")),
        ("Final answer: (1, 2)", None, ("(1, 2)", "final_answer")),
        ('Answer: "23"\n', None, ("23", "answer")),
        ('  answer": "-15"\n}', None, ("-15", "answer")),
        ("Q: what?\nA: 17", None, ("17", "a")),
        ("work\n#### 1,234", None, ("1,234", "hashes")),
        ("The answer is:\n```json", None, None),
        ("no conclusion here", None, None),
        ("nothing", "   ", None),
    ],
)
def test_extract_answer_rules(text, declared, expected):
    assert extract_answer(text, declared) == expected


def test_boxed_extraction_of_unclosed_groups_is_none():
    text = "\\boxed{" * 20_000 + "x"  # nothing closes: no answer (linear time: tests/reliability/test_verification)
    assert last_boxed(text) is None


# ---- verdicts ---------------------------------------------------------------------------------------------------


def test_each_verdict_kind(pool):
    items = [
        traj("so \\boxed{0.5}", gold="\\frac{1}{2}"),
        traj("so \\boxed{\\dfrac{1}{2}}", gold="\\frac{1}{2}"),
        traj("polar: \\boxed{\\left(3, \\frac{\\pi}{2}\\right)}", gold="(3, \\frac{\\pi}{2})"),
        traj("The answer is 5.", gold="-15"),
        traj("I give up.", gold="-15"),
        traj("The answer is 5.", gold=None),
        traj("ignored", gold="18", declared="18"),
        traj("The answer is 4√2 + 8", gold="8"),  # unicode root read as \sqrt, not dropped
        traj("The answer is 50π/2", gold="25\\pi"),
    ]
    verdicts = verify_many(items, pool=pool)
    assert [v.verdict for v in verdicts] == [
        "correct",
        "correct",
        "correct",
        "incorrect",
        "no_answer",
        "no_gold",
        "correct",
        "incorrect",
        "correct",
    ]
    assert [v.trajectory_id for v in verdicts] == [t.trajectory_id for t in items]
    assert verdicts[0].extracted_answer == "0.5" and verdicts[0].detail == "boxed"
    assert verdicts[5].extracted_answer == "5" and verdicts[6].detail == "declared"


def test_timeout_gives_error_and_the_pool_recovers():
    with VerifierPool(1) as small:
        bomb = traj("The answer is $9^{9^{9^{9}}}$", gold="2")
        nested = traj("\\boxed{" + "(" * 150 + "x" + ")" * 150 + "}", gold="x")  # deep nesting: slow to parse
        verdicts = verify_many([bomb, nested, traj("\\boxed{2}", gold="2.0")], timeout_s=1.0, pool=small)
        assert small.check_many([("\\frac{4}{2}", "2")]) == [("correct", None)]  # a fresh worker took over
    assert [v.verdict for v in verdicts] == ["error", "error", "correct"]
    assert verdicts[0].detail == "timed out after 1s"


def test_verify_single_and_from_a_worker_thread():
    assert verify(traj("\\boxed{-15}", gold="-15")).verdict == "correct"
    out: dict = {}

    def work() -> None:  # Prefect runs tasks in threads: no signals there, the pool must still bound time
        out["verdicts"] = verify_many([traj("\\boxed{x^2+2x+1}", gold="(x+1)^2"), traj("\\boxed{3}")], workers=2)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert [v.verdict for v in out["verdicts"]] == ["correct", "incorrect"]


@pytest.mark.parametrize(
    ("answer", "gold", "verdict"),
    [
        ("0.5", "\\frac{1}{2}", "correct"),
        ("-3/4", "-\\frac{3}{4}", "correct"),
        ("\\dfrac{6}{8}", "\\frac{3}{4}", "correct"),
        ("\\frac{2}{3}", "\\frac{3}{4}", "incorrect"),
        ("12", "12.0", "correct"),
        ("13", "12", "incorrect"),
        ("\\sqrt{12}", "2\\sqrt{3}", "correct"),
        ("3\\sqrt{3}", "2\\sqrt{3}", "incorrect"),
        ("-\\pi", "\\pi", "incorrect"),
        ("(1, \\frac{1}{2})", "\\left(1,0.5\\right)", "correct"),
        ("(2, 1)", "(1, 2)", "incorrect"),
    ],
)
def test_numbers_and_fractions_are_decided_without_math_verify(answer, gold, verdict):
    class Refuses:
        def check_many(self, jobs, **kwargs):
            raise AssertionError(f"sent to math-verify: {jobs}")

    assert verify_many([traj(f"\\boxed{{{answer}}}", gold=gold)], pool=Refuses())[0].verdict == verdict


def test_many_identical_pairs_are_checked_once(pool):
    items = [traj("\\boxed{(x+1)^2}", gold="x^2+2x+1", problem=f"p{i}") for i in range(300)]
    items += [traj("\\boxed{7}", gold="7.0", problem=f"q{i}") for i in range(100)]  # numbers: decided here
    items += [traj("\\boxed{\\frac{2}{4}}", gold="0.5", problem=f"r{i}") for i in range(100)]  # and fractions
    sent: list = []

    class Counting:
        def check_many(self, jobs, **kwargs):
            sent.extend(jobs)
            return pool.check_many(jobs, **kwargs)

    verdicts = verify_many(items, pool=Counting())
    assert {v.verdict for v in verdicts} == {"correct"} and len(verdicts) == 500
    assert sent == [("(x+1)^2", "x^2+2x+1")]
    assert verify_many(items[:1], pool=Counting())[0].verdict == "correct" and len(sent) == 1  # remembered


def test_real_teacher_accuracy_near_upstream(shared_data, pool):
    folder = shared_data / "zeroeval-math-l5"
    upstream = {row["Model"]: row for row in json.loads((folder / "summary.json").read_text())}
    name = "gpt-4o-2024-08-06"
    trajectories = ingest_file(folder / f"{name}.json").trajectories
    counts = Counter(v.verdict for v in verify_many(trajectories, pool=pool))
    accuracy = 100 * counts["correct"] / len(trajectories)
    no_answer = 100 * counts["no_answer"] / len(trajectories)
    assert abs(accuracy - float(upstream[name]["Acc"])) < 2.0, counts
    assert abs(no_answer - float(upstream[name]["No answer"])) < 1.0, counts
    assert counts["error"] == 0
