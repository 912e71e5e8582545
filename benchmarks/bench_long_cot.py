"""Long chains of thought through the whole `rsr add-teacher --no-score` command (ingest -> dedup -> verify):
the command's peak RSS as `/usr/bin/time -v` reports it (the process and its verifier workers' largest) and its
input throughput in MB/s.

Our seeded generator writes one JSONL file of N records with a long-CoT length distribution: response lengths
log-normal with a median of ~20 KB and a mean of ~30 KB, cut at 400 KB, plus one 8 MB record and 0.2% broken lines
(cut JSON, a wrong type, no assistant turn). Each response is words of a 5,000-word vocabulary (so MinHash does
real work) ending in a \\boxed answer; every record holds its gold; 1% repeat an earlier record exactly.

    .venv/bin/python -m benchmarks.bench_long_cot --n 20000        # ~600 MB of input
    .venv/bin/python -m benchmarks.bench_long_cot --n 100000       # the issue's target: <= 1 GB, >= 5 MB/s
    .venv/bin/python -m benchmarks.bench_long_cot --n 100000 --input FILE   # a file generate() wrote earlier

Targets (issue 22): peak RSS <= 1 GB and >= 5 MB/s at 100,000 records on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MEDIAN, MEAN, TAIL = 20_000, 30_000, 400_000  # response bytes
HUGE = 8_000_000  # the one 8 MB record
BROKEN, REPEATS = 0.002, 0.01
_BROKEN_LINES = ('{"messages": [{"role": "user", "content": "cut', '{"messages": 5}', '{"messages": []}')
_SIGMA = float(np.sqrt(2 * np.log(MEAN / MEDIAN)))  # log-normal: mean = median * exp(sigma^2 / 2)


def _vocabulary(rng: np.random.Generator, n: int = 5000) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, size=rng.integers(2, 10))) for _ in range(n)])


def _response(rng: np.random.Generator, words: np.ndarray, size: int, answer: int) -> str:
    text = " ".join(words[rng.integers(0, len(words), size=max(1, size // 6))])  # ~6 bytes a word
    return f"<think>\n{text}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


def generate(path: Path, n: int, seed: int = 0) -> dict:
    """Write the input; returns what it holds (records, bytes, broken lines, repeats)."""
    rng = np.random.default_rng(seed)
    words = _vocabulary(rng)
    sizes = np.minimum(rng.lognormal(np.log(MEDIAN), _SIGMA, size=n), TAIL).astype(int)
    sizes[n // 2] = HUGE
    broken = repeats = 0
    last = ""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            roll = rng.random()
            if roll < BROKEN:
                broken += 1
                fh.write(_BROKEN_LINES[i % 3] + "\n")
                continue
            if roll < BROKEN + REPEATS and last:
                repeats += 1
                fh.write(last)
                continue
            a, b = int(rng.integers(1, 1000)), int(rng.integers(1, 1000))
            turns = [
                {"role": "user", "content": f"Problem {i}: what is {a} + {b}?"},
                {"role": "assistant", "content": _response(rng, words, int(sizes[i]), a + b)},
            ]
            last = json.dumps({"messages": turns, "answer": str(a + b)}) + "\n"
            fh.write(last)
    return {"records": n, "bytes": path.stat().st_size, "broken": broken, "repeats": repeats}


def run_command(path: Path, state: Path) -> dict:
    """`rsr add-teacher` under /usr/bin/time -v: peak RSS (MB), wall seconds, MB/s, and the command's own lines."""
    rsr = Path(sys.executable).with_name("rsr")
    command = ["/usr/bin/time", "-v", str(rsr), "add-teacher", "bench", str(path), "--no-score", "--state", str(state)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    size = path.stat().st_size
    return {
        "exit": done.returncode,
        "peak_rss_mb": int(peak.group(1)) / 1024 if peak else None,
        "wall_s": round(wall, 1),
        "mb_per_s": round(size / 1e6 / wall, 2),
        "output": done.stdout.strip().splitlines()[:4] + ([done.stderr[-2000:]] if done.returncode else []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rsr-bench-long-cot"))
    parser.add_argument("--keep", action="store_true", help="keep the generated input and state")
    parser.add_argument("--input", type=Path, help="a file this generator wrote earlier (same --n): not written again")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    path = args.input or args.work / "long_cot.jsonl"
    if args.input is None:
        started = time.perf_counter()
        held = generate(path, args.n)
        print(f"generated {held} in {time.perf_counter() - started:.0f}s", flush=True)
    load_before = os.getloadavg()[0]
    result = run_command(path, args.work / "state")
    load = {"load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    print(json.dumps({"n": args.n, "input_mb": round(path.stat().st_size / 1e6, 1), **result, **load}, indent=2))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
