"""How much faster and leaner is the product's scorer than the authors'-style baseline, and how near the ceiling?

On real trajectories (../shared/data/zeroeval-math-l5, round-robin over the teacher files, conversation =
[user: problem, assistant: the teacher's raw output]), in one run per device (the CPU, then CUDA when present):

1. throughput, end to end (conversations in, TrajectoryStats out; chat rendering and tokenising included), of
   - fast: the product, `Student.score` (one unpadded sequence per forward, float32 head on response positions);
   - baseline: benchmarks/baseline_scorer.py (fixed batches of 8 in file order, full float32 logits);
   - body: the ceiling, the model's body alone (`model.base_model(input_ids)`, no head) on the same token
     sequences one at a time, which is the body work the product does;
   on `--subset` trajectories (whole baseline batches spread over the --n pool; --subset >= --n: the whole pool)
   timed --repeats times, the order of the measurements rotated every repeat and the dtypes interleaved; medians.
2. identity: per-trajectory RSR, fast vs baseline, on the timed trajectories.
3. peak memory scoring one --mem-tokens trajectory (real responses joined), fast vs baseline, per dtype and
   --mem-students student, each in a fresh process (CPU: the VmHWM rise; CUDA: max_memory_allocated's).

Writes --out/<device>.md (the tables, targets with PASS/MISS) and .json.

    RSR_HOME=/tmp/rsr-bench .venv/bin/python -m benchmarks.bench_scorer            # ~50 min on 2 cores
    RSR_HOME=/tmp/rsr-bench .venv/bin/python -m benchmarks.bench_scorer --quick    # smoke run, ~3 min
    .venv/bin/python -m benchmarks.bench_scorer --n 200 --subset 200 --repeats 1 --dtypes bfloat16 --skip-memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks._common import REPO, RESULTS, Conversation, cpu_name, load_conversations, loadavg, table, timed
from benchmarks.baseline_scorer import BATCH_SIZE, baseline_score, baseline_score_conversations, fixed_batches
from rsr.metric import TrajectoryStats, dataset_rsr
from rsr.score.student import Prepared, RecordError, Student

DTYPES = ("bfloat16", "float32")
KINDS = ("fast", "baseline", "body")
CHAT_TEMPLATE = {"gemma3-270m": "chatml"}  # a base model without a chat template
VOCAB = {"gemma3-270m": 262144}  # for the memory pre-check (default 49,152: SmolLM2)
SPEED_COLUMNS = ["dtype", "fast resp. tok/s", "baseline resp. tok/s", "body alone total tok/s", "fast total tok/s",
                 "fast / ceiling", "speed-up bound", "seconds fast / baseline / body per repeat"]  # fmt: skip
MEMORY_COLUMNS = ["student", "vocab", "dtype", "fast MB", "baseline MB", "fast / baseline", "RSR rel diff"]
TARGETS = {"bfloat16": 3.0, "float32": 2.0, "mem_ratio": 0.25, "rsr_rel_diff": 1e-4}


def load_student(ref: str, dtype: str, device: str) -> Student:
    return Student.load(ref, dtype=dtype, device=device, chat_template=CHAT_TEMPLATE.get(ref))


def score_fast(student: Student, convs: list[Conversation], max_tokens: int | None = None) -> list[TrajectoryStats]:
    results = student.score(convs, max_tokens=max_tokens, progress=False)
    bad = [r.error for r in results if r.stats is None]
    if bad:
        raise RuntimeError(f"the product rejected {len(bad)} of {len(convs)} conversations, e.g. {bad[0]}")
    return [r.stats for r in results]


@torch.inference_mode()
def body_alone(student: Student, prepared: list[Prepared]) -> None:
    for p in prepared:
        student.model.base_model(input_ids=torch.tensor([p.ids], device=student.device))


def max_rel_diff(a: list[TrajectoryStats], b: list[TrajectoryStats]) -> float:
    return max(abs(x.rsr - y.rsr) / abs(y.rsr) for x, y in zip(a, b, strict=True))


@dataclass
class Workload:
    convs: list[Conversation]
    prepared: list[Prepared]

    @property
    def response_tokens(self) -> int:
        return sum(len(p.scored) for p in self.prepared)

    @property
    def total_tokens(self) -> int:
        return sum(len(p.ids) for p in self.prepared)

    def pick(self, idx: list[int]) -> Workload:
        return Workload([self.convs[i] for i in idx], [self.prepared[i] for i in idx])

    def stats(self, vocab: int) -> dict:
        padded = sum(len(b) * max(len(p.ids) for p in b) for b in fixed_batches(self.prepared, BATCH_SIZE, vocab))
        return {
            "trajectories": len(self.prepared),
            "response_tokens": self.response_tokens,
            "total_tokens": self.total_tokens,
            "longest": max(len(p.ids) for p in self.prepared),
            "baseline_padded_over_real": padded / self.total_tokens,
        }


def stride_subset(n_pool: int, subset: int) -> list[int]:
    """Indices of subset // 8 whole baseline batches (8 consecutive trajectories) spread evenly over the pool: the
    baseline's batches stay as in a full run, and the mix of lengths (so of padding) stays near the pool's."""
    n_batches, k = n_pool // BATCH_SIZE, max(1, subset // BATCH_SIZE)
    if k >= n_batches:
        return list(range(n_pool))
    picks = [int((i + 0.5) * n_batches / k) for i in range(k)]
    return [b * BATCH_SIZE + j for b in picks for j in range(BATCH_SIZE)]


def prepare_pool(student: Student, convs: list[Conversation], max_tokens: int | None) -> Workload:
    kept: list[Conversation] = []
    prepared: list[Prepared] = []
    for c in convs:
        try:
            prepared.append(student.prepare(c, max_tokens=max_tokens, index=len(kept)))
        except RecordError as err:  # e.g. a prompt longer than --max-tokens: out of every scorer's workload
            print(f"left out of the pool: {err}", flush=True)
            continue
        kept.append(c)
    return Workload(kept, prepared)


# ---------------------------------------------------------------------------------------------------------------
# Throughput and identity
# ---------------------------------------------------------------------------------------------------------------
def time_repeats(args: argparse.Namespace, students: dict[str, Student], sub: Workload, warm: Workload) -> tuple:
    """Seconds per (dtype, kind) over the repeats, and each scorer's stats from its last repeat."""

    def run(st: Student, kind: str, w: Workload) -> object:
        if kind == "fast":
            return score_fast(st, w.convs, args.max_tokens)
        if kind == "baseline":
            return baseline_score_conversations(st, w.convs, args.max_tokens)
        return body_alone(st, w.prepared)

    for st in students.values():  # first calls pay for kernel selection / oneDNN JIT, not for scoring
        for kind in KINDS:
            run(st, kind, warm)
    seconds = {dt: {k: [] for k in KINDS} for dt in students}
    stats: dict[tuple[str, str], list[TrajectoryStats]] = {}
    for rep in range(args.repeats):
        for dt in list(students)[:: 1 if rep % 2 == 0 else -1]:
            for kind in KINDS[rep % 3 :] + KINDS[: rep % 3]:
                out, secs = timed(lambda st=students[dt], k=kind: run(st, k, sub), students[dt].device)
                seconds[dt][kind].append(secs)
                if kind != "body":
                    stats[(dt, kind)] = out
                print(f"  rep {rep} {dt:8s} {kind:8s} {secs:7.1f} s  (load {loadavg():.1f})", flush=True)
    return seconds, stats


def summarise(seconds: dict, stats: dict, sub: Workload) -> dict:
    out = {}
    for dt, by_kind in seconds.items():
        med = {k: statistics.median(v) for k, v in by_kind.items()}
        fast, base = stats[(dt, "fast")], stats[(dt, "baseline")]
        out[dt] = {
            "seconds": by_kind,
            "median_s": med,
            "tok_s": {k: (sub.total_tokens if k == "body" else sub.response_tokens) / v for k, v in med.items()},
            "speedup": med["baseline"] / med["fast"],
            "speedup_runs": [b / f for b, f in zip(by_kind["baseline"], by_kind["fast"], strict=True)],
            "fast_total_tok_s": sub.total_tokens / med["fast"],
            "fraction_of_ceiling": med["body"] / med["fast"],
            "speedup_bound": med["baseline"] / med["body"],
            "max_rel_diff": max_rel_diff(fast, base),
            "dataset_rsr": [dataset_rsr(fast), dataset_rsr(base)],
            "sum_rank_equal": sum(x.sum_rank == y.sum_rank for x, y in zip(fast, base, strict=True)) / len(fast),
        }
    return out


def throughput(args: argparse.Namespace, device: str, convs: list[Conversation]) -> dict:
    students = {dt: load_student(args.student, dt, device) for dt in args.dtypes}
    first = next(iter(students.values()))
    vocab = int(first.model.config.vocab_size)
    pool = prepare_pool(first, convs, args.max_tokens)
    idx = stride_subset(len(pool.convs), args.subset)
    sub = pool.pick(idx)
    res = {"n": len(pool.convs), "subset_indices": idx, "pool": pool.stats(vocab), "timed": sub.stats(vocab)}
    for name in ("pool", "timed"):
        x = res[name]
        print(
            f"[{device}] {args.student} {name}: {x['trajectories']} trajectories, {x['response_tokens']} response / "
            f"{x['total_tokens']} total tokens, longest {x['longest']}; baseline padded/real "
            f"{x['baseline_padded_over_real']:.3f}",
            flush=True,
        )
    seconds, stats = time_repeats(args, students, sub, pool.pick([1, 2]))
    res["dtypes"] = summarise(seconds, stats, sub)
    return res


# ---------------------------------------------------------------------------------------------------------------
# Peak memory: one fresh process per (student, dtype, scorer)
# ---------------------------------------------------------------------------------------------------------------
def long_conversation(student: Student, convs: list[Conversation], tokens: int) -> Conversation:
    """One user turn and one assistant turn of real responses joined until it renders to >= tokens tokens."""
    parts: list[str] = []
    for conv in convs:
        parts.append(conv[1]["content"])
        msgs = [convs[0][0], {"role": "assistant", "content": "\n\n".join(parts)}]
        if len(parts) % 4 == 0 and len(student.prepare(msgs, max_tokens=10**9).ids) >= tokens:
            return msgs
    sys.exit(f"bench_scorer: the loaded trajectories are too short to build a {tokens}-token conversation")


def _proc_kb(name: str) -> int:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(name + ":"))
    return int(line.split()[1])


def mem_child(args: argparse.Namespace) -> None:
    """In a fresh process: load, warm up, reset the high-water mark, score the long trajectory, print the rise.

    CPU: writing 5 to /proc/self/clear_refs resets VmHWM (the peak RSS) to the current RSS, so VmHWM after minus
    VmRSS before is the scorer's own peak. CUDA: max_memory_allocated after reset_peak_memory_stats, minus
    memory_allocated before."""
    torch.set_num_threads(args.threads)
    student = load_student(args.student, args.dtype, args.device)
    cuda = student.device.type == "cuda"
    convs = load_conversations(64)
    conv = long_conversation(student, convs, args.mem_tokens)

    def run(c: Conversation, max_tokens: int | None) -> TrajectoryStats:
        if args.scorer == "fast":
            return score_fast(student, [c], max_tokens)[0]
        return baseline_score(student, [student.prepare(c, max_tokens=max_tokens)])[0]

    run(convs[0], None)  # warm-up on a short real trajectory
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_kb("VmRSS") * 1024
    stats, secs = timed(lambda: run(conv, args.mem_tokens), student.device)
    peak = torch.cuda.max_memory_allocated() if cuda else _proc_kb("VmHWM") * 1024
    result = {"peak_mb": (peak - before) / 2**20, "seconds": secs, "rsr": stats.rsr, "tokens": args.mem_tokens}
    print("MEMRESULT " + json.dumps(result | {"vocab": int(student.model.config.vocab_size)}), flush=True)


def mem_available() -> int:
    line = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemAvailable:"))
    return int(line.split()[1]) * 1024


def mem_one(args: argparse.Namespace, ref: str, dtype: str, scorer: str, device: str) -> dict:
    # The baseline holds [tokens, vocab] float32 logits and their temporaries at once.
    need = 2 * args.mem_tokens * VOCAB.get(ref, 49152) * 4 if scorer == "baseline" else 0
    avail = mem_available() if device == "cpu" else None
    if avail is not None and need > 0.9 * avail:
        return {"skipped": f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"}
    flags = {"student": ref, "dtype": dtype, "scorer": scorer, "device": device}
    flags |= {"mem-tokens": args.mem_tokens, "threads": args.threads}
    cmd = [sys.executable, "-m", "benchmarks.bench_scorer", "--mem-child"]
    cmd += [x for k, v in flags.items() for x in (f"--{k}", str(v))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMRESULT ")]
    if proc.returncode != 0 or not lines:
        why = "killed by SIGKILL (out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"failed": why}
    return json.loads(lines[-1].removeprefix("MEMRESULT "))


def memory(args: argparse.Namespace, device: str) -> list[dict]:
    rows = []
    for ref in args.mem_students:
        for dt in args.dtypes:
            row = {"student": ref, "dtype": dt} | {s: mem_one(args, ref, dt, s, device) for s in ("fast", "baseline")}
            f, b = row["fast"], row["baseline"]
            print(f"[{device}] memory {ref} {dt}: fast {f}, baseline {b}", flush=True)
            if "peak_mb" in f and "peak_mb" in b:
                row["ratio"] = f["peak_mb"] / b["peak_mb"]
                row["rsr_rel_diff"] = abs(f["rsr"] - b["rsr"]) / abs(b["rsr"])
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def targets(args: argparse.Namespace, tp: dict, mem: list[dict]) -> str:
    rows = []

    def add(measure: str, goal: str, measured: str, ok: bool) -> None:
        rows.append([measure, goal, measured, "PASS" if ok else "MISS"])

    for dt, x in tp["dtypes"].items():
        runs = ", ".join(f"{r:.2f}" for r in x["speedup_runs"])
        measured, goal = f"{x['speedup']:.2f}x (median of {args.repeats}: {runs})", TARGETS[dt]
        add(f"speed-up in {dt} (baseline time / fast time)", f">= {goal:.0f}x", measured, x["speedup"] >= goal)
    if ratios := [r["ratio"] for r in mem if "ratio" in r]:
        worst = max(ratios)
        add(f"peak memory at {args.mem_tokens} tokens, fast / baseline", "<= 25%", f"{worst:.1%}", worst <= 0.25)
    if "float32" in tp["dtypes"]:
        long = [r["rsr_rel_diff"] for r in mem if r["dtype"] == "float32" and "rsr_rel_diff" in r]
        diff = max([tp["dtypes"]["float32"]["max_rel_diff"], *long])
        add("RSR identical in float32 (max relative difference per trajectory)", "<= 1e-4", f"{diff:.2e}", diff <= 1e-4)
    return table(["target", "goal", "measured", "result"], rows)


def _row(dt: str, x: dict) -> list[str]:
    tok, per_repeat = x["tok_s"], " / ".join(", ".join(f"{s:.1f}" for s in x["seconds"][k]) for k in KINDS)
    speed = [f"{tok['fast']:.0f}", f"{tok['baseline']:.0f}", f"{tok['body']:.0f}", f"{x['fast_total_tok_s']:.0f}"]
    ratios = [f"{x['fraction_of_ceiling']:.0%}", f"{x['speedup_bound']:.2f}x", per_repeat]
    rsr = [f"{x['max_rel_diff']:.2e}", *(f"{v:.6f}" for v in x["dataset_rsr"]), f"{x['sum_rank_equal']:.0%}"]
    return [dt, *speed, *ratios, *rsr]


def _memory_row(r: dict) -> list[str]:
    def cell(m: dict, key: str, fmt: str) -> str:
        return format(m[key], fmt) if key in m else m.get("skipped") or m.get("failed") or "-"

    peaks = [cell(r[scorer], "peak_mb", ".0f") for scorer in ("fast", "baseline")]
    return [
        r["student"],
        r["fast"].get("vocab", "-"),
        r["dtype"],
        *peaks,
        cell(r, "ratio", ".1%"),
        cell(r, "rsr_rel_diff", ".1e"),
    ]


def measurements(tp: dict, mem: list[dict]) -> str:
    idx = tp["subset_indices"]
    timed_set = "the whole pool" if len(idx) == tp["n"] else f"whole baseline batches of 8 from {idx[::BATCH_SIZE]}"
    keys = ("trajectories", "response_tokens", "total_tokens", "longest")
    sets = [
        [name, *(tp[name][k] for k in keys), f"{tp[name]['baseline_padded_over_real']:.3f}"]
        for name in ("pool", "timed")
    ]
    rows = [_row(dt, x) for dt, x in tp["dtypes"].items()]
    speed = table(SPEED_COLUMNS, [r[:8] for r in rows])
    identity = table(
        ["dtype", "max rel diff (trajectory RSR)", "dataset RSR fast", "baseline", "equal sum_rank"],
        [r[:1] + r[8:] for r in rows],
    )
    peak = table(MEMORY_COLUMNS, [_memory_row(r) for r in mem])
    return "\n\n".join(
        [
            "## Workload",
            table(["set", "trajectories", "response tokens", "total tokens", "longest", "baseline padded/real"], sets),
            f"Timed: {timed_set}.",
            "## Throughput (end to end: conversations in, stats out; medians)",
            speed,
            "Ceiling = the body alone on the same sequences; speed-up bound = baseline time / body time: the most a "
            "scorer that runs the body can gain here.",
            "## Identity (fast vs baseline)",
            identity,
            "## Peak memory scoring one long trajectory (rise over the loaded, warm model)",
            peak if mem else "skipped",
        ]
    )


def report(args: argparse.Namespace, device: str, tp: dict, mem: list[dict], meta: dict) -> str:
    head = (
        f"{meta['hardware']}; torch {meta['torch']}, transformers {meta['transformers']}; {args.threads} torch "
        f"thread(s); student `{args.student}`; {tp['n']} trajectories in the pool"
        + (f", cut to {args.max_tokens} tokens" if args.max_tokens else "")
        + f"; wall time {meta['wall_s'] / 60:.1f} min; 1-min load average {meta['load'][0]:.1f} at start, "
        f"{meta['load'][1]:.1f} at end. Each scorer timed {args.repeats} times on the same trajectories, the order "
        "rotated every repeat and the dtypes interleaved, after one warm-up call on 2 short trajectories."
    )
    title = f"# Product scorer vs the baseline (benchmarks/bench_scorer.py, {device})"
    return "\n\n".join([title, head, "## Targets", targets(args, tp, mem), measurements(tp, mem)]) + "\n"


def run_device(args: argparse.Namespace, device: str, convs: list[Conversation]) -> None:
    import transformers

    started, load = time.perf_counter(), [loadavg()]
    hardware = torch.cuda.get_device_name(0) if device == "cuda" else f"{cpu_name()} ({os.cpu_count()} cores)"
    tp = throughput(args, device, convs)
    mem = [] if args.skip_memory else memory(args, device)
    meta = {"hardware": hardware, "torch": torch.__version__, "transformers": transformers.__version__}
    meta |= {"load": load + [loadavg()], "wall_s": time.perf_counter() - started, "platform": platform.platform()}
    meta["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    text = report(args, device, tp, mem, meta)
    print("\n" + text, flush=True)
    name = device + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(text, encoding="utf-8")
    payload = {"meta": meta, "throughput": tp, "memory": mem}
    (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"wrote {args.out / name}.md and .json", flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="trajectories in the pool (default 400)")
    ap.add_argument("--subset", type=int, default=48, help="trajectories timed, multiple of 8 (default 48)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    ap.add_argument("--student", default="smollm2-135m", help="student for throughput (default smollm2-135m)")
    ap.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    ap.add_argument("--mem-students", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--mem-tokens", type=int, default=8192, help="length of the memory trajectory (default 8192)")
    ap.add_argument("--max-tokens", type=int, default=None, help="cut every trajectory (all scorers)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: 2 ran 2-3x slower on 2 shared cores)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 8 trajectories cut to 192 tokens, 512-token memory"
    )
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), help="default: the CPU, and CUDA when present")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    ap.add_argument("--mem-child", action="store_true", help=argparse.SUPPRESS)  # one memory measurement
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--scorer", choices=("fast", "baseline"), default="fast", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.subset, args.repeats = min(args.n, 48), 8, 2
        args.max_tokens, args.mem_tokens, args.mem_students = 192, 512, ["smollm2-135m"]
    if args.n < BATCH_SIZE or args.repeats < 1:
        sys.exit(f"bench_scorer: --n must be at least {BATCH_SIZE}, --repeats at least 1")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.mem_child:
        return mem_child(args)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        sys.exit("bench_scorer: --devices cuda asked for, but torch sees no CUDA GPU")
    convs = load_conversations(args.n)
    for device in devices:
        run_device(args, device, convs)


if __name__ == "__main__":
    main()
