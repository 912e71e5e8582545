"""Is the product faster than the paper authors' code, as a whole process, on the data users meet?

Two inputs from ../shared/data/zeroeval-math-l5, 4 teachers on the same problems (so each problem's prompt is shared):
  short: the --short-problems problems whose 4 responses are shortest (prompt-heavy: short-answer data);
  long:  the --long-problems problems whose 4 responses are longest (the prompt's share is small).
Each is scored, in the dtype `auto` picks on this machine, by two whole commands, alternated A-B-A-B (--repeats):
  A  authors: python -m benchmarks.baseline_scorer IN OUT  (their method: batches of 8, full float32 logits)
  B  product: rsr score IN --out OUT
The ratio is median(A) / median(B): process start, model load, rendering, tokenising and scoring included. The
per-trajectory RSRs of both must agree (ranks and surprisals exact in both; float rounding only).

    .venv/bin/python -m benchmarks.bench_vs_authors                      # targets: short >= 2x, long >= 1.1x
    .venv/bin/python -m benchmarks.bench_vs_authors --short-problems 5 --long-problems 2 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import REPO, RESULTS, ZEROEVAL, cpu_name, loadavg, table

TEACHERS = ("gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022", "Qwen2.5-7B-Instruct", "Meta-Llama-3.1-8B-Instruct")
TARGETS = {"short": 2.0, "long": 1.1}


def problems_by_length(folder: Path = ZEROEVAL) -> list[list[dict]]:
    """Per problem (all 4 teachers answered it), its 4 records, shortest longest-response first."""
    by_teacher = [json.loads((folder / f"{t}.json").read_text(encoding="utf-8")) for t in TEACHERS]
    rows = []
    for recs in zip(*by_teacher, strict=True):
        outs = [(r.get("output") or [""])[0] for r in recs]
        if all(isinstance(o, str) and o.strip() for o in outs) and len({r["problem"] for r in recs}) == 1:
            rows.append((max(map(len, outs)), recs))
    return [recs for _, recs in sorted(rows, key=lambda x: x[0])]


def write_input(path: Path, problems: list[list[dict]]) -> int:
    """One JSONL record per trajectory, teachers interleaved as a merged file would have them."""
    with open(path, "w", encoding="utf-8") as f:
        for recs in problems:
            for teacher, r in zip(TEACHERS, recs, strict=True):
                chat = [{"role": "user", "content": r["problem"]}, {"role": "assistant", "content": r["output"][0]}]
                f.write(json.dumps({"teacher": teacher, "messages": chat}) + "\n")
    return len(problems) * len(TEACHERS)


def commands(src: Path, work: Path) -> dict[str, list[str]]:
    py, rsr = sys.executable, str(Path(sys.executable).with_name("rsr"))
    return {
        "authors": [py, "-m", "benchmarks.baseline_scorer", str(src), str(work / f"{src.stem}.authors.jsonl")],
        "product": [rsr, "score", str(src), "--out", str(work / f"{src.stem}.product.jsonl")],
    }


def run_ab(cmds: dict[str, list[str]], repeats: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(repeats):
        for name, cmd in cmds.items():  # A-B-A-B: a drift in the machine's load hits both alike
            started = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def max_rsr_diff(a: Path, b: Path) -> float:
    """Largest relative difference of per-trajectory RSR between the two outputs (same order)."""
    ra = [json.loads(line)["rsr"] for line in a.open(encoding="utf-8")]
    rb = [json.loads(line)["rsr"] for line in b.open(encoding="utf-8")]
    assert len(ra) == len(rb), (len(ra), len(rb))
    return max(abs(x - y) / abs(y) for x, y in zip(ra, rb, strict=True))


def cpu_flags() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split())
    return ", ".join(f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags) or "none of note"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short-problems", type=int, default=100, help="problems x 4 teachers (default 100: 400)")
    ap.add_argument("--long-problems", type=int, default=25, help="problems x 4 teachers (default 25: 100)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", choices=tuple(TARGETS), default=list(TARGETS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/rsr-bench-vs-authors"))
    ap.add_argument("--out", type=Path, default=RESULTS / "cpu-vs-authors.md")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ranked = problems_by_length()
    cases = {"short": ranked[: args.short_problems], "long": ranked[::-1][: args.long_problems]}
    cases = {case: problems for case, problems in cases.items() if case in args.cases}
    rows = []
    for case, problems in cases.items():
        src = args.work / f"{case}.jsonl"
        n = write_input(src, problems)
        cmds = commands(src, args.work)
        secs = run_ab(cmds, args.repeats)
        a, b = statistics.median(secs["authors"]), statistics.median(secs["product"])
        diff = max_rsr_diff(Path(cmds["product"][-1]), Path(cmds["authors"][-1]))
        verdict = "PASS" if a / b >= TARGETS[case] else "MISS"
        rows.append([case, n, f"{a:.1f}", f"{b:.1f}", f"**{a / b:.2f}x** ({verdict}, target {TARGETS[case]}x)",
                     f"{diff:.1e}", " / ".join(f"{s:.0f}" for s in secs["authors"] + secs["product"])])  # fmt: skip
        print(rows[-1], flush=True)
    header = ["case", "trajectories", "authors s", "product s", "product speed-up", "max RSR rel diff",
              "runs A... / B... s"]  # fmt: skip
    text = (f"CPU: {cpu_name()} ({cpu_flags()}); dtype: auto; A-B-A-B x{args.repeats}, medians; "
            f"load average at the end {loadavg():.1f}\n\n{table(header, rows, 'lrrrrrl')}\n")  # fmt: skip
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
