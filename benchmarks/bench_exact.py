"""Exact, batch-invariant scoring (issue 9), measured in one run on real trajectories.

1. bf16 exact vs fp32: per-trajectory relative RSR difference between the exact scorer in bfloat16 and in float32
   (max, median, p99), next to the old bf16 scorer's (bf16 logits, padded batches) difference from fp32.
2. Batch invariance: every trajectory scored in three compositions (the whole pool in one call, alone, the pool
   in reverse order in one call); per trajectory, the largest relative difference of sum_rank, sum_surprisal and
   RSR across the three, for the exact scorer in both dtypes and for the old bf16 scorer (pool at batch_tokens
   8192, alone, pool at batch_tokens 2048).
3. The time cost of exactness: old bf16 path vs exact bf16 path on the same trajectories in the same process,
   A-B-A-B, whole pipeline (chat rendering + tokenisation + forward + head): on the truncated pool of (2) and on
   --timing-n untruncated trajectories.

Trajectories: round-robin over the teacher files of ../shared/data/zeroeval-math-l5 (as bench_scorer.py), each cut
to --max-tokens tokens (prompt + response) so that the run fits ~25 min on the 2-core CPU; the timing subset is not
cut. Two torch threads (the whole box; run it under the shared flock). Writes benchmarks/results/cpu-exact.md.

    RSR_HOME=/tmp/rsr-bench flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_exact.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from bench_scorer import load_conversations, load_student, loadavg  # benchmarks/ is on sys.path as a script
from old_scorer import old_score

from rsr.metric import TrajectoryStats
from rsr.score.student import RecordError, Student

RESULTS = Path(__file__).resolve().parent / "results"
Stats = list[TrajectoryStats]


def new_scorer(student: Student, max_tokens: int | None) -> Callable[[list], Stats]:
    def run(convs: list) -> Stats:
        results = student.score(convs, max_tokens=max_tokens, progress=False)
        bad = [r.error for r in results if r.stats is None]
        if bad:
            raise RuntimeError(f"{len(bad)} conversations not scored, e.g. {bad[0]}")
        return [r.stats for r in results]

    return run


def old_scorer(student: Student, max_tokens: int | None, batch_tokens: int) -> Callable[[list], Stats]:
    def run(convs: list) -> Stats:
        prepared = [student.prepare(c, max_tokens=max_tokens, index=i) for i, c in enumerate(convs)]
        return old_score(student, prepared, batch_tokens)

    return run


def timed(fn: Callable[[], Stats]) -> tuple[Stats, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else (0.0 if a == b else float("inf"))


def spread(runs: list[Stats]) -> dict[str, list[float]]:
    """Per trajectory: the largest relative difference from the first composition, per statistic."""
    out: dict[str, list[float]] = {"sum_rank": [], "sum_surprisal": [], "rsr": []}
    for i, first in enumerate(runs[0]):
        for key in out:
            out[key].append(max(rel(getattr(r[i], key), getattr(first, key)) for r in runs[1:]))
    return out


def compositions(score_pool: Callable[[list], Stats], score_alt: Callable[[list], Stats], convs: list) -> list[Stats]:
    """The pool in one call, each trajectory alone, and the alternative (reversed pool or another batch size)."""
    pool = score_pool(convs)
    alone = [score_pool([c])[0] for c in convs]
    return [pool, alone, score_alt(convs)]


def summary(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return f"{max(values):.1e} | {statistics.median(values):.1e} | {p99:.1e}"


def with_response_left(student: Student, convs: list, max_tokens: int) -> list:
    """Leave out trajectories whose prompt alone fills max_tokens (nothing to score once cut)."""
    kept = []
    for c in convs:
        try:
            student.prepare(c, max_tokens=max_tokens)
        except RecordError as err:
            print(f"left out: {err}")
            continue
        kept.append(c)
    return kept


def measure_pool(bf16: Student, fp32: Student, convs: list, mt: int, log) -> tuple[dict, dict]:
    """Three compositions for each scorer; the pool pass of each bf16 scorer is timed (exact first, then old)."""
    new_scorer(bf16, mt)(convs[:2]), old_scorer(bf16, mt, 8192)(convs[:2])  # oneDNN kernel selection, once
    runs: dict[str, list[Stats]] = {}
    secs: dict[str, float] = {}
    for name, pool_fn, alt_fn in (
        ("exact bf16", new_scorer(bf16, mt), lambda c: new_scorer(bf16, mt)(c[::-1])[::-1]),
        ("old bf16", old_scorer(bf16, mt, 8192), old_scorer(bf16, mt, 2048)),
        ("exact fp32", new_scorer(fp32, mt), lambda c: new_scorer(fp32, mt)(c[::-1])[::-1]),
    ):
        pool, secs[name] = timed(lambda f=pool_fn: f(convs))
        alone = [pool_fn([c])[0] for c in convs]
        runs[name] = [pool, alone, alt_fn(convs)]
        log(f"{name}: 3 compositions done (pool pass {secs[name]:.1f} s)")
    return runs, secs


def measure_timing(bf16: Student, convs: list, log) -> dict[str, list[float]]:
    """Old vs exact bf16 on untruncated trajectories, A-B-A-B."""
    t_secs: dict[str, list[float]] = {"old": [], "new": []}
    for kind in ("old", "new", "old", "new"):
        fn = old_scorer(bf16, None, 8192) if kind == "old" else new_scorer(bf16, None)
        t_secs[kind].append(timed(lambda f=fn: f(convs))[1])
        log(f"timing {kind}: {t_secs[kind][-1]:.1f} s")
    return t_secs


def report_pool(args, runs: dict[str, list[Stats]], n: int) -> list[str]:
    ref = runs["exact fp32"][0]
    tokens, n_cut = sum(s.n_tokens for s in ref), sum(s.truncated for s in ref)

    def vs_fp32(name: str) -> str:
        return summary([rel(a.rsr, b.rsr) for a, b in zip(runs[name][0], ref, strict=True)])

    lines = [
        f"# Exact scoring (issue 9), CPU: {args.student}, {n} trajectories",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {args.threads} torch thread(s). Pool: round-robin over the 8 teachers of "
        f"zeroeval-math-l5, each trajectory cut to its first {args.max_tokens} tokens (prompt + response; {n_cut} "
        f"of {n} cut) to fit the run in ~25 min; {tokens} response tokens scored; {args.left_out} trajectories "
        "left out (their prompt alone is longer than the cut).",
        "",
        "## bf16 vs fp32 (per-trajectory relative RSR difference from the exact fp32 score)",
        "",
        "| scorer | max | median | p99 |",
        "|---|---|---|---|",
        f"| exact bf16 (bf16 body, fp32 head) | {vs_fp32('exact bf16')} |",
        f"| old bf16 (bf16 logits, padded batches) | {vs_fp32('old bf16')} |",
        "",
        "## Batch invariance (per trajectory, largest relative difference across 3 compositions)",
        "",
        "Exact scorer: pool in one call / each alone / pool reversed in one call. Old scorer: pool at batch_tokens "
        "8192 / each alone / pool at batch_tokens 2048.",
        "",
        "| scorer | statistic | max | median | p99 |",
        "|---|---|---|---|---|",
    ]
    for name in ("exact fp32", "exact bf16", "old bf16"):
        lines += [f"| {name} | {key} | {summary(values)} |" for key, values in spread(runs[name]).items()]
    return lines


def report_timing(args, secs: dict[str, float], t_secs: dict[str, list[float]], n: int, t_tokens: int) -> list[str]:
    old, new = statistics.mean(t_secs["old"]), statistics.mean(t_secs["new"])
    return [
        "",
        "## Time cost of exactness (bf16, same process; old = padded batches of 8192 tokens + bf16 logits)",
        "",
        "| workload | old bf16 s | exact bf16 s | exact / old |",
        "|---|---|---|---|",
        f"| pool of {n}, cut to {args.max_tokens} tokens (one pass each) | {secs['old bf16']:.1f} | "
        f"{secs['exact bf16']:.1f} | {secs['exact bf16'] / secs['old bf16']:.3f} |",
        f"| {args.timing_n} untruncated ({t_tokens} response tokens; A-B-A-B, mean of 2) | {old:.1f} | {new:.1f} | "
        f"{new / old:.3f} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=192, help="cut each trajectory of the pool (default 192)")
    ap.add_argument("--timing-n", type=int, default=24, help="untruncated trajectories for the timing (default 24)")
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the whole box, under flock)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu-exact.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s, load {loadavg():.1f}] {msg}", flush=True)

    bf16, fp32 = load_student(args.student, "bfloat16", "cpu"), load_student(args.student, "float32", "cpu")
    loaded = load_conversations(args.n + 40)
    convs = with_response_left(bf16, loaded, args.max_tokens)[: args.n]
    args.left_out = loaded.index(convs[-1]) + 1 - len(convs)  # prompts alone longer than --max-tokens
    runs, secs = measure_pool(bf16, fp32, convs, args.max_tokens, log)
    timing_convs = load_conversations(args.timing_n)
    t_secs = measure_timing(bf16, timing_convs, log)
    t_tokens = sum(len(bf16.prepare(c).scored) for c in timing_convs)
    lines = report_pool(args, runs, len(convs)) + report_timing(args, secs, t_secs, len(convs), t_tokens)
    text = "\n".join([*lines, "", f"Whole run: {time.perf_counter() - started:.0f} s."]) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
