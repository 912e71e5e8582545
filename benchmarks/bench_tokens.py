"""Does `rsr score --tokens` keep memory flat? The same command on N and 4N real trajectories (the N four times),
with and without per-token rows, as whole processes: peak RSS (the process tree, sampled) and wall time, as ratios
in one run.

    .venv/bin/python -m benchmarks.bench_tokens [--n 40]

Data: ZeroEval MATH level-5 outputs of ../shared/data (four teachers' first records), as `messages` JSONL.
Writes nothing: the table is printed (benchmarks/results/cpu-tokens.md keeps a run's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks._common import load_conversations, table

TEACHERS = ("gpt-4o-2024-08-06", "Qwen2.5-7B-Instruct", "Meta-Llama-3.1-8B-Instruct", "gemma-2-9b-it")


def write_input(path: Path, n: int, copies: int) -> None:
    """`copies` times the same n trajectories (each copy's problem marked, so none repeats another): the longest
    sequence, which sets the forward's own peak, is the same at every size, and only what is held can grow."""
    chats = load_conversations(n, teachers=TEACHERS)
    rows = []
    for k in range(copies):
        for i, (user, assistant) in enumerate(chats):
            user = user | {"content": f"{user['content']} (copy {k})"}
            rows.append({"id": f"r{k}-{i}", "messages": [user, assistant]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of the whole process tree."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, ps = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}")
    return time.perf_counter() - started, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    n = ap.parse_args().n
    rsr = str(Path(sys.executable).with_name("rsr"))
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for copies in (1, 4):
            size = copies * n
            src = Path(tmp) / f"in-{size}.jsonl"
            write_input(src, n, copies)
            base = [rsr, "score", str(src), "--out", str(Path(tmp) / "out.jsonl"), "--dtype", "bfloat16"]
            plain = run(base)
            with_tokens = run([*base, "--tokens", str(Path(tmp) / f"tokens-{size}.parquet")])
            rows.append((size, plain, with_tokens))
    header = ["trajectories", "without --tokens: s, peak MB", "with --tokens: s, peak MB", "peak ratio (with/without)"]
    cells = [
        [size, f"{ps:.1f}, {pm:.0f}", f"{ts:.1f}, {tm:.0f}", f"{tm / pm:.2f}"] for size, (ps, pm), (ts, tm) in rows
    ]
    print(table(header, cells))
    (_, (_, small)), (_, (_, large)) = [(r[0], r[2]) for r in rows]
    print(f"\npeak RSS with --tokens, {4 * n} vs {n} trajectories: {large / small:.2f}x (flat = 1.0)")


if __name__ == "__main__":
    main()
