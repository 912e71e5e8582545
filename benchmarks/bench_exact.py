"""Are the product's scores exact and batch-invariant? Measured in one run on real trajectories.

1. bf16 vs fp32: per trajectory, the relative RSR difference from the product's float32 score, of the product in
   bfloat16 (bf16 body, float32 head) and of the baseline in bfloat16 (benchmarks/baseline_scorer.py: bf16 logits
   cast to float32, padded batches).
2. Batch invariance: every trajectory scored in three compositions; per trajectory, the largest relative
   difference of sum_rank, sum_surprisal and RSR across them. The product: the pool in one call, each trajectory
   alone, the pool reversed in one call. The baseline: batches of 8, each alone, batches of 3.
   The seconds of each scorer's first (pool) pass are printed too; speed is bench_scorer.py's question.

Trajectories: round-robin over the teacher files of ../shared/data/zeroeval-math-l5, each cut to --max-tokens tokens
(prompt + response), those whose prompt alone fills the cut left out. Two torch threads (the whole 2-core box).

    RSR_HOME=/tmp/rsr-bench .venv/bin/python -m benchmarks.bench_exact [--n 200] [--max-tokens 512]   # ~20 min
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks._common import RESULTS, cpu_name, load_conversations, loadavg, table, timed
from benchmarks.baseline_scorer import baseline_score_conversations
from benchmarks.bench_scorer import load_student, score_fast
from rsr.metric import TrajectoryStats
from rsr.score.student import RecordError, Student

Stats = list[TrajectoryStats]
KEYS = ("sum_rank", "sum_surprisal", "rsr")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else (0.0 if a == b else float("inf"))


def summary(values: list[float]) -> list[str]:
    """max, median, p99."""
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return [f"{max(values):.1e}", f"{statistics.median(values):.1e}", f"{p99:.1e}"]


def spread(runs: list[Stats]) -> dict[str, list[float]]:
    """Per trajectory and statistic: the largest relative difference from the first composition."""
    return {
        k: [max(rel(getattr(r[i], k), getattr(s, k)) for r in runs[1:]) for i, s in enumerate(runs[0])] for k in KEYS
    }


def compositions(student: Student, baseline: bool, max_tokens: int) -> list[Callable[[list], Stats]]:
    """The scorer in its three compositions: the pool first (its pass is timed), then each alone, then another."""
    if baseline:
        return [lambda c, b=b: baseline_score_conversations(student, c, max_tokens, batch_size=b) for b in (8, 1, 3)]
    return [
        lambda c: score_fast(student, c, max_tokens),
        lambda c: [score_fast(student, [x], max_tokens)[0] for x in c],
        lambda c: score_fast(student, c[::-1], max_tokens)[::-1],
    ]


def measure(bf16: Student, fp32: Student, convs: list, max_tokens: int, log) -> tuple[dict, dict]:
    runs: dict[str, list[Stats]] = {}
    secs: dict[str, float] = {}
    for name, student, baseline in (
        ("exact fp32", fp32, False),
        ("exact bf16", bf16, False),
        ("baseline bf16", bf16, True),
    ):
        first, *others = compositions(student, baseline, max_tokens)
        first(convs[:2])  # oneDNN kernel selection, once per scorer
        pool, secs[name] = timed(lambda f=first: f(convs))
        runs[name] = [pool, *(f(convs) for f in others)]
        log(f"{name}: 3 compositions done (pool pass {secs[name]:.1f} s)")
    return runs, secs


def report(args: argparse.Namespace, runs: dict[str, list[Stats]], secs: dict[str, float], left_out: int) -> str:
    ref = runs["exact fp32"][0]
    tokens, n, n_cut = sum(s.n_tokens for s in ref), len(ref), sum(s.truncated for s in ref)
    versus = [
        [name, *summary([rel(a.rsr, b.rsr) for a, b in zip(runs[name][0], ref, strict=True)])]
        for name in ("exact bf16", "baseline bf16")
    ]
    invariance = [[name, k, *summary(v)] for name in runs for k, v in spread(runs[name]).items()]
    return "\n\n".join([
        f"# Exact scoring, CPU: {args.student}, {n} trajectories (benchmarks/bench_exact.py)",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {cpu_name()}, torch {torch.__version__}, {args.threads} torch "
        f"thread(s). Pool: round-robin over the teachers of zeroeval-math-l5, each trajectory cut to its first "
        f"{args.max_tokens} tokens (prompt + response; {n_cut} of {n} cut); {tokens} response tokens scored; "
        f"{left_out} left out (their prompt alone is longer than the cut).",
        "## bf16 vs fp32 (per-trajectory relative RSR difference from the product's float32 score)",
        table(["scorer", "max", "median", "p99"], versus),
        "## Batch invariance (per trajectory, largest relative difference across 3 compositions)",
        "Product: pool in one call / each alone / pool reversed in one call. Baseline: batches of 8 / each alone / "
        "batches of 3.",
        table(["scorer", "statistic", "max", "median", "p99"], invariance),
        "Pool pass (one call on the pool, seconds): " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()) + ".",
    ])  # fmt: skip


def scorable(student: Student, loaded: list, n: int, max_tokens: int) -> tuple[list, int]:
    """The first n conversations with a response token left once cut, and how many were left out before them."""
    convs, left_out = [], 0
    for c in loaded:
        try:
            student.prepare(c, max_tokens=max_tokens)
        except RecordError as err:
            print(f"left out: {err}")
            left_out += 1
            continue
        convs.append(c)
        if len(convs) == n:
            break
    return convs, left_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=512, help="cut each trajectory (default 512)")
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole box)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu-exact.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s, load {loadavg():.1f}] {msg}", flush=True)

    bf16, fp32 = load_student(args.student, "bfloat16", "cpu"), load_student(args.student, "float32", "cpu")
    convs, left_out = scorable(bf16, load_conversations(args.n + 40), args.n, args.max_tokens)
    runs, secs = measure(bf16, fp32, convs, args.max_tokens, log)
    text = report(args, runs, secs, left_out) + f"\n\nWhole run: {time.perf_counter() - started:.0f} s.\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
