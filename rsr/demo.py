"""Demo data, authored here: three teachers with different styles on the same generated math problems.

It exercises every stage: gold answers from a problems file, a teacher that is sometimes wrong, one that skips
the final answer, a near duplicate across teachers, a malformed line that goes to quarantine, and a small benchmark
of our own (BENCHMARK) three of whose problems the teachers also answered, with their numbers changed, reworded or
inside a longer request: the decontaminate stage flags them, so they are not scored nor published.
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from math import gcd
from pathlib import Path

import yaml

N_PROBLEMS = 36
# Our demo benchmark: word problems with their answers (registered as `demo-bench`, its problems in `question`).
BENCHMARK = [
    ("A baker makes 48 muffins in the morning and sells 3 boxes of 12 muffins before noon. In the afternoon she "
     "bakes 24 more muffins. How many muffins does she have at the end of the day?", "36"),
    ("A cyclist rides 18 kilometres to the library, then 7 kilometres to the park, and finally rides straight home "
     "along a road that is 15 kilometres long. How many kilometres does she ride in total?", "40"),
    ("Tom has 5 red marbles and twice as many blue marbles. He gives away 4 blue marbles and buys 9 green marbles. "
     "How many marbles does Tom have now?", "20"),
    ("A rectangular garden is 12 metres long and 8 metres wide. A path 1 metre wide runs all the way around the "
     "outside of the garden. What is the area of the path in square metres?", "44"),
    ("The average of five numbers is 14. When a sixth number is added, the average becomes 15. What is the sixth "
     "number?", "20"),
    ("A shop sells pencils at 3 for 45 cents and erasers at 2 for 70 cents. How many cents do 9 pencils and 4 "
     "erasers cost together?", "275"),
]  # fmt: skip
# The benchmark's problems 0, 2 and 3 as the demo teachers met them: numbers changed, reworded, inside a request.
LEAKED = [
    ("A baker makes 60 muffins in the morning and sells 4 boxes of 12 muffins before noon. In the afternoon she "
     "bakes 30 more muffins. How many muffins does she have at the end of the day?", "42",
     "She sells $4 \\times 12 = 48$ muffins, so $60 - 48 = 12$ are left.\n"
     "After baking 30 more she has $12 + 30 = 42$."),
    ("Tom owns 5 red marbles and twice as many blue marbles. He gives away 4 blue marbles and buys 9 green "
     "marbles. How many marbles does he have altogether now?", "20",
     "Tom has $2 \\times 5 = 10$ blue marbles; after giving 4 away, 6 are left.\nIn all: $5 + 6 + 9 = 20$."),
    ("Please help me with my homework, I am stuck on this one: A rectangular garden is 10 metres long and 6 metres "
     "wide. A path 1 metre wide runs all the way around the outside of the garden. What is the area of the path "
     "in square metres? Explain each step.", "36",
     "With the path the garden is $12 \\times 8 = 96$ square metres.\nThe garden alone is $10 \\times 6 = 60$, so "
     "the path is $96 - 60 = 36$."),
]  # fmt: skip


def _problem(kind: int, rng: random.Random) -> tuple[str, str, str]:
    """One problem of a kind (0-3): its text, its answer, and the careful tutor's steps towards it."""
    if kind == 0:
        a, b = rng.randint(12, 99), rng.randint(12, 99)
        t, u = divmod(b, 10)
        steps = (
            f"We split the second factor: ${b} = {t * 10} + {u}$.\n"
            f"Then ${a} \\times {t * 10} = {a * t * 10}$ and ${a} \\times {u} = {a * u}$.\n"
            f"Adding the parts gives ${a * t * 10} + {a * u} = {a * b}$."
        )
        return f"Compute ${a} \\times {b}$.", str(a * b), steps
    if kind == 1:
        x, a, b = rng.randint(2, 20), rng.randint(2, 9), rng.randint(1, 30)
        c = a * x + b
        steps = (
            f"Subtract ${b}$ from both sides: ${a}x = {c - b}$.\n"
            f"Divide both sides by ${a}$: $x = {x}$.\n"
            f"Check: ${a} \\cdot {x} + {b} = {c}$."
        )
        return f"Solve for $x$: ${a}x + {b} = {c}$.", str(x), steps
    if kind == 2:
        n = rng.randint(10, 60)
        total = n * (n + 1) // 2
        steps = (
            f"The sum $1 + 2 + \\dots + n$ equals $\\frac{{n(n+1)}}{{2}}$.\n"
            f"With $n = {n}$ this is $\\frac{{{n} \\cdot {n + 1}}}{{2}} = {total}$."
        )
        return f"What is the sum of the first ${n}$ positive integers?", str(total), steps
    p, q, k = rng.randint(1, 9), rng.randint(10, 19), rng.randint(2, 9)
    f, g = Fraction(p, q), gcd(p * k, q * k)
    steps = (
        f"The greatest common divisor of ${p * k}$ and ${q * k}$ is ${g}$.\n"
        f"Dividing both by ${g}$ gives $\\frac{{{p * k // g}}}{{{q * k // g}}}$."
    )
    return (
        f"Simplify the fraction $\\frac{{{p * k}}}{{{q * k}}}$.",
        f"\\frac{{{f.numerator}}}{{{f.denominator}}}",
        steps,
    )


def _problems(rng: random.Random) -> list[dict]:
    out: list[dict] = []
    while len(out) < N_PROBLEMS:
        problem, answer, steps = _problem(len(out) % 4, rng)
        if all(o["problem"] != problem for o in out):  # the same problem twice would merge into one problem id
            careful = f"{steps}\n\nThe answer is $\\boxed{{{answer}}}$."
            out.append({"problem": problem, "answer": answer, "careful": careful})
    for problem, answer, steps in LEAKED:  # last: a demo trimmed to its first problems has none of them
        careful = f"{steps}\n\nThe answer is $\\boxed{{{answer}}}$."
        out.append({"problem": problem, "answer": answer, "careful": careful})
    return out


def _terse(p: dict, rng: random.Random) -> str:
    """Short; about one in five answers off by a small slip (a fraction is never off)."""
    answer = p["answer"]
    if rng.random() < 0.2 and answer.isdigit():
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
    if rng.random() < 0.3 and answer.isdigit():
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
        teachers["careful-tutor"].append(p["careful"])
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

    with open(folder / "benchmark.jsonl", "w", encoding="utf-8") as fh:
        for i, (question, answer) in enumerate(BENCHMARK):
            fh.write(json.dumps({"id": f"bench-{i}", "question": question, "answer": answer}) + "\n")
    config = {
        "benchmarks": [{"name": "demo-bench", "source": "benchmark.jsonl"}],
        "teachers": [{"name": name, "path": f"{name}.jsonl", "format": "messages"} for name in teachers],
        "problems": "problems.jsonl",
        "students": ["smollm2-135m"],
        "policy": {"name": "per_problem_min_rsr", "verified_only": True, "exclude_duplicates": True},
        "output": "demo-sft",
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
