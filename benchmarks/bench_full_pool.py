"""The whole trajectory pool, one dtype, one pass per scorer in A-B-A order (fast, naive, fast).

bench_scorer.py times a 48-trajectory subset three times, because a full pass in both dtypes takes hours on the
2-core CPU. Length-sorted batching pays off with many trajectories (the fast scorer's padding is 1.21 padded
tokens per real one on that subset, 1.03 on the 400-trajectory pool; the naive scorer's ~1.56 on both), so this
script gives the speed-up on the whole pool in one dtype, as a user scoring a real dataset would see it.

    RSR_HOME=/tmp/rsr-bench .venv/bin/python benchmarks/bench_full_pool.py --dtype bfloat16     # ~40 min here
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_scorer import (  # benchmarks/ is on sys.path when run as a script
    Workload,
    fast_scorer,
    load_conversations,
    load_student,
    loadavg,
    max_rel_diff,
    padding_stats,
    timed,
)
from naive_scorer import naive_score

from rsr.metric import dataset_rsr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="trajectories (default 400, the bench_scorer pool)")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as bench_scorer)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    student = load_student(args.student, args.dtype, args.device)
    convs = load_conversations(args.n)
    pool = Workload(convs, [student.prepare(c, index=i) for i, c in enumerate(convs)])
    pad = padding_stats(pool, int(student.model.config.vocab_size), 8192)
    print(
        f"{len(convs)} trajectories, {pool.response_tokens} response / {pool.total_tokens} total tokens; padded/real: "
        f"fast {pad['fast_padded_over_real']:.3f}, naive {pad['naive_padded_over_real']:.3f}",
        flush=True,
    )
    fast = fast_scorer(student, 8192)
    warm = convs[1:3]
    fast(warm), naive_score(student, warm)  # first calls pay for oneDNN kernel selection

    seconds: dict[str, list[float]] = {"fast": [], "naive": []}
    stats = {}
    for kind in ("fast", "naive", "fast"):
        run = (lambda: fast(convs)) if kind == "fast" else (lambda: naive_score(student, convs))
        stats[kind], secs = timed(run, student.device)
        seconds[kind].append(secs)
        print(f"  {kind:5s} {secs:7.1f} s = {pool.response_tokens / secs:6.0f} response tok/s (load {loadavg():.1f})")
    f, n = statistics.mean(seconds["fast"]), seconds["naive"][0]
    print(
        f"\n{args.student} {args.dtype} on {args.device}, {len(convs)} trajectories: "
        f"fast {pool.response_tokens / f:.0f} response tok/s (mean of {len(seconds['fast'])}), "
        f"naive {pool.response_tokens / n:.0f}; speed-up "
        f"{n / f:.2f}x; RSR max rel diff {max_rel_diff(stats['fast'], stats['naive']):.1e}, dataset RSR "
        f"{dataset_rsr(stats['fast']):.6f} vs {dataset_rsr(stats['naive']):.6f}"
    )


if __name__ == "__main__":
    main()
