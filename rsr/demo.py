"""Demo data, authored here: three teachers with different styles on the same generated math problems.

It exercises every stage: gold answers from a problems file, a teacher that is sometimes wrong, one that skips
the final answer, a near duplicate across teachers, and a malformed line that goes to quarantine.
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from math import gcd
from pathlib import Path

import yaml

N_PROBLEMS = 36


def _problems(rng: random.Random) -> list[dict]:
    out: list[dict] = []
    while len(out) < N_PROBLEMS:
        kind = len(out) % 4
        if kind == 0:
            a, b = rng.randint(12, 99), rng.randint(12, 99)
            out.append({"problem": f"Compute ${a} \\times {b}$.", "answer": str(a * b), "kind": "mul", "a": a, "b": b})
        elif kind == 1:
            x, a, b = rng.randint(2, 20), rng.randint(2, 9), rng.randint(1, 30)
            c = a * x + b
            out.append(
                {
                    "problem": f"Solve for $x$: ${a}x + {b} = {c}$.",
                    "answer": str(x),
                    "kind": "lin",
                    "a": a,
                    "b": b,
                    "c": c,
                }
            )
        elif kind == 2:
            n = rng.randint(10, 60)
            out.append(
                {
                    "problem": f"What is the sum of the first ${n}$ positive integers?",
                    "answer": str(n * (n + 1) // 2),
                    "kind": "sum",
                    "n": n,
                }
            )
        else:
            p, q, k = rng.randint(1, 9), rng.randint(10, 19), rng.randint(2, 9)
            f = Fraction(p, q)
            out.append(
                {
                    "problem": f"Simplify the fraction $\\frac{{{p * k}}}{{{q * k}}}$.",
                    "answer": f"\\frac{{{f.numerator}}}{{{f.denominator}}}",
                    "kind": "frac",
                    "num": p * k,
                    "den": q * k,
                }
            )
        if any(o["problem"] == out[-1]["problem"] for o in out[:-1]):
            out.pop()  # the same problem twice would merge into one problem id
    return out


def _careful(p: dict) -> str:
    """Step by step, always right, final answer boxed."""
    if p["kind"] == "mul":
        a, b = p["a"], p["b"]
        t, u = divmod(b, 10)
        return (
            f"We split the second factor: ${b} = {t * 10} + {u}$.\n"
            f"Then ${a} \\times {t * 10} = {a * t * 10}$ and ${a} \\times {u} = {a * u}$.\n"
            f"Adding the parts gives ${a * t * 10} + {a * u} = {a * b}$.\n\nThe answer is $\\boxed{{{a * b}}}$."
        )
    if p["kind"] == "lin":
        a, b, c = p["a"], p["b"], p["c"]
        return (
            f"Subtract ${b}$ from both sides: ${a}x = {c - b}$.\n"
            f"Divide both sides by ${a}$: $x = {(c - b) // a}$.\n"
            f"Check: ${a} \\cdot {(c - b) // a} + {b} = {c}$.\n\nThe answer is $\\boxed{{{(c - b) // a}}}$."
        )
    if p["kind"] == "sum":
        n = p["n"]
        return (
            f"The sum $1 + 2 + \\dots + n$ equals $\\frac{{n(n+1)}}{{2}}$.\n"
            f"With $n = {n}$ this is $\\frac{{{n} \\cdot {n + 1}}}{{2}} = {n * (n + 1) // 2}$.\n\n"
            f"The answer is $\\boxed{{{n * (n + 1) // 2}}}$."
        )
    g = gcd(p["num"], p["den"])
    return (
        f"The greatest common divisor of ${p['num']}$ and ${p['den']}$ is ${g}$.\n"
        f"Dividing both by ${g}$ gives $\\frac{{{p['num'] // g}}}{{{p['den'] // g}}}$.\n\n"
        f"The answer is $\\boxed{{{p['answer']}}}$."
    )


def _terse(p: dict, rng: random.Random) -> str:
    """Short; about one in five answers off by a small slip."""
    answer = p["answer"]
    if rng.random() < 0.2 and p["kind"] != "frac":
        answer = str(int(answer) + rng.choice([-2, -1, 1, 10]))
    return f"Direct computation.\nAnswer: {answer}"


def _rambling(p: dict, rng: random.Random, i: int) -> str:
    """Long-winded; sometimes wrong, sometimes never states a final answer."""
    opener = rng.choice(
        [
            "Okay, let me think about this problem carefully before doing anything.",
            "Hmm, this looks like a standard exercise, but let me not rush.",
            "Alright, so we need to be careful here and read the question again.",
        ]
    )
    if i % 9 == 4:
        return f"{opener}\nThere are several ways to approach this, and I think the setup matters most here."
    answer = p["answer"]
    if rng.random() < 0.3 and p["kind"] != "frac":
        answer = str(int(answer) * 2)
    return (
        f"{opener}\nFirst I restate the problem: {p['problem']}\n"
        f"Then I work it out piece by piece, double-checking each step as I go along.\n"
        f"After all that, I am fairly confident.\nThe final answer is {answer}."
    )


def write_demo_data(folder: Path, seed: int = 7) -> Path:
    """Write problems, three teachers' files and a pipeline config into folder; return the config path."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    problems = _problems(rng)
    with open(folder / "problems.jsonl", "w", encoding="utf-8") as fh:
        for i, p in enumerate(problems):
            fh.write(json.dumps({"id": f"demo-{i}", "problem": p["problem"], "answer": p["answer"]}) + "\n")

    teachers = {"careful-tutor": [], "terse-solver": [], "rambling-model": []}
    for i, p in enumerate(problems):
        teachers["careful-tutor"].append(_careful(p))
        teachers["terse-solver"].append(_terse(p, rng))
        teachers["rambling-model"].append(_rambling(p, rng, i))
    # A near duplicate across teachers: the rambler copies the tutor on problem 0 with one word changed.
    teachers["rambling-model"][0] = teachers["careful-tutor"][0].replace("We split", "Let us split")

    for name, responses in teachers.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for i, (p, r) in enumerate(zip(problems, responses, strict=True)):
                record = {
                    "id": f"{name}-{i}",
                    "messages": [{"role": "user", "content": p["problem"]}, {"role": "assistant", "content": r}],
                }
                fh.write(json.dumps(record) + "\n")
            if name == "terse-solver":
                fh.write('{"id": "terse-solver-broken", "messages": [{"role": "user", "content": "unterminated\n')

    config = {
        "teachers": [{"name": name, "path": f"{name}.jsonl", "format": "messages"} for name in teachers],
        "problems": "problems.jsonl",
        "students": ["smollm2-135m"],
        "policy": {"name": "per_problem_min_rsr", "verified_only": True, "exclude_duplicates": True},
        "output": "demo-sft",
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
