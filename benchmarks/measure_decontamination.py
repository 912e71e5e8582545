"""How much of a benchmark does decontamination find, and how many clean problems does it flag?

From a public benchmark's test split (the benchmark registered) and the train split of the same set (clean problems
of the same style), seeded variants of every test problem, each as a trajectory's user turn:

verbatim      the problem as written
reformatted   inside a longer prompt (an instruction before, a request after), its case, spacing, line breaks and
              punctuation changed, numbers in $...$, a Markdown heading
numbers       every number changed (digits to another value, number words to another number word); and the same
              reformatted inside a longer prompt
clean         every train problem (and the same wrapped as the reformatted ones): the false positives

    .venv/bin/python -m benchmarks.measure_decontamination --test gsm8k/test.jsonl --train gsm8k/train.jsonl
    .venv/bin/python -m benchmarks.measure_decontamination --zeroeval   # ../shared/data: ZeroEval vs MATH-500

GSM8K is openai/grade-school-math on GitHub (grade_school_math/data/{test,train}.jsonl; `question` column). Nothing
is downloaded here: give the files. Targets: >= 99% of verbatim and reformatted, >= 90% of numbers, <= 1% clean.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks._common import SHARED, ZEROEVAL, cpu_name, table
from rsr.curate.decontaminate import BenchmarkProblem, Matcher
from rsr.records import normalize_text

NUMBER_WORDS = "two three four five six seven eight nine ten eleven twelve".split()
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?")
_WORDS = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
INTROS = (
    "You are a careful math tutor. Read the problem below, reason step by step and give the final answer in \\boxed{}.",
    "Solve the following problem. Explain each step briefly and make sure the final answer is a number.",
    "Here is a question from my homework that I could not solve on my own, please help me with it:",
)
OUTROS = ("Show your work.", "Please answer in a friendly tone and check your result.", "Think it through first.")


def changed_numbers(text: str, rng: random.Random) -> str:
    """Every number another value (same form), every number word another number word."""

    def digits(m: re.Match[str]) -> str:
        old = m.group()
        new = old
        while new == old:  # a value of about the same size, written the same way (thousands separators, decimals)
            size = 10 ** len(old.replace(",", "").split(".")[0])
            whole = rng.randint(max(2, size // 10), size)
            new = f"{whole:,}" if "," in old else str(whole)
            new += f".{rng.randint(1, 9)}" if "." in old else ""
        return new

    def word(m: re.Match[str]) -> str:
        return rng.choice([w for w in NUMBER_WORDS if w != m.group().lower()])

    return _WORDS.sub(word, _NUMBER.sub(digits, text))


def reformatted(text: str, rng: random.Random) -> str:
    """The problem as someone pasting it would: other case, spacing, breaks, punctuation, $ numbers, inside a prompt."""
    sentences = re.split(r"(?<=[.?!])\s+", text.strip())
    style = rng.randrange(3)
    if style == 0:
        sentences = [s.upper() for s in sentences]
    elif style == 1:
        sentences = [s.lower().replace(", ", " , ") for s in sentences]
    else:
        sentences = [s.replace(". ", ".  ").replace("?", " ?") for s in sentences]
    body = rng.choice(("\n", "\n\n", "  ")).join(sentences)
    body = _NUMBER.sub(lambda m: f"${m.group()}$", body) if rng.random() < 0.5 else body
    heading = rng.choice(("### Problem\n", "**Question:** ", "Problem: "))
    return f"{rng.choice(INTROS)}\n\n{heading}{body}\n\n{rng.choice(OUTROS)}"


def problems(path: Path, column: str | None) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    key = column or next(k for k in ("question", "problem", "prompt") if k in rows[0])
    return [r[key] for r in rows]


def measure(test: list[str], train: list[str], seed: int) -> tuple[list[list[object]], dict]:
    rng = random.Random(seed)
    test_norm = {normalize_text(t) for t in test}
    train = [t for t in train if normalize_text(t) not in test_norm]  # a train problem that is a test one is no clean
    started = time.perf_counter()
    matcher = Matcher([BenchmarkProblem("bench", i, t) for i, t in enumerate(test)])
    built = time.perf_counter() - started
    cases = {
        "verbatim": [[t] for t in test],
        "reformatted (inside a longer prompt)": [[reformatted(t, rng)] for t in test],
        "numbers changed": [[changed_numbers(t, rng)] for t in test],
        "numbers changed, reformatted inside a prompt": [[reformatted(changed_numbers(t, rng), rng)] for t in test],
        "clean (train split)": [[t] for t in train],
        "clean, wrapped like the reformatted": [[reformatted(t, rng)] for t in train],
    }
    rows, methods, seconds = [], {}, 0.0
    for name, prompts in cases.items():
        started = time.perf_counter()
        hits = matcher.match(prompts)
        seconds += time.perf_counter() - started
        flagged = sum(bool(h) for h in hits)
        if name.startswith("clean"):
            right = flagged
        else:  # found: its own problem is among the hits
            right = sum(any(h.row == i for h in hs) for i, hs in enumerate(hits))
        methods[name] = Counter(h.method for hs in hits for h in hs)
        rows.append([name, len(prompts), right, f"{100 * right / len(prompts):.2f}%", dict(methods[name])])
    info = {"index_s": built, "match_s": seconds, "prompts": sum(map(len, cases.values())), "clean": cases}
    return rows, info


def zeroeval_vs_math500() -> None:
    """Every ZeroEval problem (one teacher's file: all hold the same 721) against shared MATH-500."""
    math500 = problems(SHARED / "problems" / "math500.jsonl", "problem")
    teacher = json.loads((ZEROEVAL / "gpt-4o-2024-08-06.json").read_text(encoding="utf-8"))
    matcher = Matcher([BenchmarkProblem("math500", i, t) for i, t in enumerate(math500)])
    exact = {normalize_text(t) for t in math500}
    hits = matcher.match([[r["problem"]] for r in teacher])
    same = sum(normalize_text(r["problem"]) in exact for r in teacher)
    flagged = [(r, h) for r, h in zip(teacher, hits, strict=True) if h]
    print(f"ZeroEval math-l5 ({len(teacher)} problems) vs MATH-500: {same} normalised exact matches, "
          f"{len(flagged)} flagged: {dict(Counter(x.method for _, hs in flagged for x in hs))}")  # fmt: skip
    for r, hs in flagged:
        if normalize_text(r["problem"]) not in exact:
            for h in hs:
                print(f"- ZeroEval id {r['id']} ~ MATH-500 row {h.row} ({h.method}, share {h.share}):\n"
                      f"  ZeroEval: {r['problem'][:300]!r}\n  MATH-500: {math500[h.row][:300]!r}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", type=Path, help="the benchmark (a JSONL test split)")
    parser.add_argument("--train", type=Path, help="clean problems of the same set (its JSONL train split)")
    parser.add_argument("--column", help="the problem column (default: question, problem or prompt)")
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--show", type=int, default=5, help="print this many flagged clean problems")
    parser.add_argument("--zeroeval", action="store_true", help="ZeroEval's MATH level-5 problems vs MATH-500")
    args = parser.parse_args()
    if args.zeroeval:
        zeroeval_vs_math500()
        return
    if not (args.test and args.train):
        sys.exit("give --test and --train (JSONL files), or --zeroeval")
    test, train = problems(args.test, args.column), problems(args.train, args.column)
    rows, info = measure(test, train, args.seed)
    print(f"{args.test.name}: {len(test)} benchmark problems vs {len(train)} train problems; {cpu_name()}")
    print(table(["case", "prompts", "found / flagged", "share", "methods"], rows, "lrrrl"))
    print(f"index {info['index_s']:.2f} s, matching {info['prompts']} prompts {info['match_s']:.2f} s")
    matcher = Matcher([BenchmarkProblem("bench", i, t) for i, t in enumerate(test)])
    for name in ("clean (train split)", "clean, wrapped like the reformatted"):
        shown = 0
        for prompt, hits in zip(info["clean"][name], matcher.match(info["clean"][name]), strict=True):
            for h in hits[: max(0, args.show - shown)]:
                shown += 1
                print(f"- {name}: {h.method} {h.share} ~ test row {h.row}\n  clean: {prompt[0][:240]!r}\n"
                      f"  test:  {test[h.row][:240]!r}")  # fmt: skip


if __name__ == "__main__":
    main()
