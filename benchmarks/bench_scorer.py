"""Benchmark: the fast RSR scorer (rsr/student.py) against the naive baseline (benchmarks/naive_scorer.py).

One run measures, on real teacher trajectories from ../shared/data/zeroeval-math-l5 (round-robin over the teacher
files, conversation = [user: problem, assistant: the teacher's raw output]):

1. throughput (response tokens/s) of both scorers in bfloat16 and float32, and the speed-up fast/naive:
   - a fixed subset (the first --subset trajectories) timed --repeats times, the order of the measurements rotated
     every repeat and the dtypes interleaved (the machine is shared and noisy: medians are quoted);
   - the full --n trajectories once per scorer per dtype, in ABBA order (bf16 fast, bf16 naive, fp32 naive,
     fp32 fast).
   Both timings are end to end: conversations in, TrajectoryStats out (chat rendering + tokenisation included).
2. the identity check: per-trajectory RSR of both scorers on the full --n in float32 (max relative difference).
3. the ceiling: the model's own forward pass without the LM head (`model.base_model(input_ids)`) on the same
   subset sequences, each sequence alone (batch 1, no padding) and in length-sorted batches (same token budget as
   the fast scorer); the better of the two is the ceiling, and the fast scorer's total tokens/s (prompt + response)
   is quoted as a fraction of it.
4. peak memory for one ~8k-token trajectory (real responses concatenated, cut to --mem-tokens), fast vs naive,
   per dtype, for every --mem-students student, each measurement in a fresh subprocess (see `mem_child`).
5. the same on CUDA when a GPU is present (torch.cuda.max_memory_allocated for memory).

It prints a markdown table with the targets and PASS/MISS and writes benchmarks/results/<device>.md and .json.

    RSR_HOME=/tmp/rsr-bench .venv/bin/python benchmarks/bench_scorer.py            # default run (~25 min on 2 cores)
    RSR_HOME=/tmp/rsr-bench .venv/bin/python benchmarks/bench_scorer.py --quick    # smoke run (~3 min)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from naive_scorer import BATCH_SIZE as NAIVE_BATCH  # benchmarks/ is on sys.path when run as a script
from naive_scorer import naive_score, naive_score_prepared, split_batches
from old_scorer import length_sorted_batches as _length_sorted_batches  # padding stats, the batched ceiling
from tqdm.auto import tqdm

from rsr.metric import TrajectoryStats, dataset_rsr
from rsr.score.student import Prepared, RecordError, Student

REPO = Path(__file__).resolve().parents[1]
# RSR_SHARED_DATA: where ../shared/data is not beside the checkout (the tests honour it too)
DATA = Path(os.environ.get("RSR_SHARED_DATA", REPO.parent / "shared" / "data")) / "zeroeval-math-l5"
RESULTS = REPO / "benchmarks" / "results"
DTYPES = ("bfloat16", "float32")
CHAT_TEMPLATE = {"gemma3-270m": "chatml"}  # a base model without a chat template
TARGETS = {"speedup_bf16": 3.0, "speedup_fp32": 2.0, "mem_ratio": 0.25, "rsr_rel_diff": 1e-4}

Conversation = list[dict[str, str]]


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
def load_conversations(n: int) -> list[Conversation]:
    """Round-robin over the teacher files (record 0 of every teacher, then record 1, ...), skipping empty outputs."""
    if not DATA.is_dir():
        sys.exit(
            f"bench_scorer: the reference data folder {DATA} is missing. It holds the ZeroEval math-l5 teacher "
            "trajectories (see ../shared/data/README.md); run from a checkout that has ../shared/data next to it."
        )
    files = sorted(p for p in DATA.glob("*.json") if p.name != "summary.json")
    if not files:
        sys.exit(f"bench_scorer: no teacher *.json files in {DATA}")
    teachers = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    out: list[Conversation] = []
    for i in range(max(len(t) for t in teachers)):
        for records in teachers:
            if i >= len(records):
                continue
            rec = records[i]
            text = rec["output"][0] if rec.get("output") else ""
            if isinstance(text, str) and text.strip() and rec.get("problem", "").strip():
                out.append([{"role": "user", "content": rec["problem"]}, {"role": "assistant", "content": text}])
                if len(out) == n:
                    return out
    print(f"bench_scorer: only {len(out)} non-empty trajectories in {DATA} (asked for {n})", file=sys.stderr)
    return out


def long_conversation(student: Student, responses: list[Conversation], tokens: int) -> Conversation:
    """One user turn and one assistant turn made of real responses joined until it renders to >= tokens tokens."""
    parts: list[str] = []
    for conv in responses:
        parts.append(conv[1]["content"])
        if len(parts) % 4:
            continue  # tokenise every 4th append only: the check is the slow part
        msgs = [responses[0][0], {"role": "assistant", "content": "\n\n".join(parts)}]
        if len(student.prepare(msgs, max_tokens=10**9).ids) >= tokens:
            return msgs
    sys.exit(f"bench_scorer: the loaded trajectories are too short to build a {tokens}-token conversation")


# ---------------------------------------------------------------------------------------------------------------
# Scorers and timing
# ---------------------------------------------------------------------------------------------------------------
def load_student(ref: str, dtype: str, device: str) -> Student:
    return Student.load(ref, dtype=dtype, device=device, chat_template=CHAT_TEMPLATE.get(ref))


def fast_scorer(
    student: Student, batch_tokens: int, max_tokens: int | None = None
) -> Callable[[list[Conversation]], list[TrajectoryStats]]:
    def run(convs: list[Conversation]) -> list[TrajectoryStats]:
        results = student.score(convs, max_tokens=max_tokens, progress=False)  # one sequence at a time (issue 9)
        bad = [r.error for r in results if r.stats is None]
        if bad:
            raise RuntimeError(f"the fast scorer rejected {len(bad)} conversations, e.g. {bad[0]}")
        return [r.stats for r in results]

    return run


@torch.inference_mode()
def forward_alone(student: Student, prepared: list[Prepared]) -> None:
    """The ceiling, variant 1: the transformer body alone (no LM head), one unpadded sequence at a time."""
    for p in prepared:
        student.model.base_model(input_ids=torch.tensor([p.ids], device=student.device))


@torch.inference_mode()
def forward_batched(student: Student, prepared: list[Prepared], batch_tokens: int) -> None:
    """The ceiling, variant 2: the body alone on the fast scorer's length-sorted batches (near-equal lengths)."""
    pad = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    for batch in _length_sorted_batches(prepared, batch_tokens):
        ids = torch.full((len(batch), len(batch[0].ids)), pad, dtype=torch.long)
        for row, p in enumerate(batch):
            ids[row, : len(p.ids)] = torch.tensor(p.ids)
        student.model.base_model(input_ids=ids.to(student.device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    gc.collect()
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


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


def max_rel_diff(a: list[TrajectoryStats], b: list[TrajectoryStats]) -> float:
    return max(abs(x.rsr - y.rsr) / abs(y.rsr) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Throughput
# ---------------------------------------------------------------------------------------------------------------
def stride_subset(n_pool: int, subset: int, batch_size: int = NAIVE_BATCH) -> list[int]:
    """Indices of `subset // 8` whole naive batches (8 consecutive trajectories) spread evenly over the pool.

    Whole batches keep the baseline's batch composition exactly as in a full run; the spread keeps the mix of
    lengths (and so of padding) close to the pool's. The report prints both so a reader can judge.
    """
    n_batches, k = n_pool // batch_size, max(1, subset // batch_size)
    if k >= n_batches:
        return list(range(n_pool))
    picks = [int((i + 0.5) * n_batches / k) for i in range(k)]
    return [b * batch_size + j for b in picks for j in range(batch_size)]


def padding_stats(w: Workload, vocab: int, batch_tokens: int) -> dict:
    real = w.total_tokens
    fast = sum(len(b) * len(b[0].ids) for b in _length_sorted_batches(w.prepared, batch_tokens))
    naive = sum(len(b) * max(len(p.ids) for p in b) for b in split_batches(w.prepared, NAIVE_BATCH, vocab))
    return {
        "trajectories": len(w.prepared),
        "response_tokens": w.response_tokens,
        "total_tokens": real,
        "longest": max(len(p.ids) for p in w.prepared),
        "fast_padded_over_real": fast / real,
        "naive_padded_over_real": naive / real,
    }


def throughput(args: argparse.Namespace, device: str, convs: list[Conversation]) -> dict:
    students = {dt: load_student(args.student, dt, device) for dt in DTYPES}
    dev = students[DTYPES[0]].device
    vocab = int(students["float32"].model.config.vocab_size)
    kept: list[Conversation] = []
    prepared: list[Prepared] = []
    for c in convs:
        try:
            prepared.append(students["float32"].prepare(c, max_tokens=args.max_tokens, index=len(kept)))
        except RecordError as err:  # e.g. a prompt longer than --max-tokens: left out of both scorers' workload
            print(f"[{device}] left out of the pool: {err}", flush=True)
            continue
        kept.append(c)
    convs = kept
    pool = Workload(convs, prepared)
    idx = stride_subset(len(convs), args.subset)
    sub = Workload([convs[i] for i in idx], [prepared[i] for i in idx])
    res: dict = {
        "n": len(pool.convs),
        "subset": len(sub.convs),
        "subset_indices": idx,
        "pool_stats": padding_stats(pool, vocab, args.batch_tokens),
        "subset_stats": padding_stats(sub, vocab, args.batch_tokens),
        "dtypes": {},
    }
    for name in ("pool", "subset"):
        x = res[f"{name}_stats"]
        print(
            f"[{device}] {args.student} {name}: {x['trajectories']} trajectories, {x['response_tokens']} response / "
            f"{x['total_tokens']} total tokens, longest {x['longest']}; padded/real tokens: fast "
            f"{x['fast_padded_over_real']:.3f}, naive {x['naive_padded_over_real']:.3f}",
            flush=True,
        )

    runners: dict[str, dict[str, Callable[[Workload], object]]] = {}
    for dt, st in students.items():
        runners[dt] = {
            "fast": lambda w, f=fast_scorer(st, args.batch_tokens, args.max_tokens): f(w.convs),
            "naive": lambda w, s=st: naive_score(s, w.convs, max_tokens=args.max_tokens),
            "forward_alone": lambda w, s=st: forward_alone(s, w.prepared),
        }
        if dev.type == "cuda":  # batch 1 starves a GPU; on CPU padding only costs (measured), so it is skipped
            runners[dt]["forward_batched"] = lambda w, s=st: forward_batched(s, w.prepared, args.batch_tokens)
        res["dtypes"][dt] = {k: {"subset_s": [], "loadavg": []} for k in runners[dt]}
        # Warm-up: first calls pay for kernel selection / oneDNN JIT, not for scoring.
        warm = Workload(pool.convs[1:3], pool.prepared[1:3])
        for run in runners[dt].values():
            run(warm)

    # Phase A: repeated timings on the subset; dtypes interleaved, measurement order rotated every repeat.
    kinds = list(runners[DTYPES[0]])
    steps = [
        (rep, dt, kinds[(i + rep) % len(kinds)])
        for rep in range(args.repeats)
        for dt in (DTYPES if rep % 2 == 0 else DTYPES[::-1])
        for i in range(len(kinds))
    ]
    subset_stats: dict[tuple[str, str], list[TrajectoryStats]] = {}
    for rep, dt, kind in tqdm(steps, desc=f"[{device}] subset repeats", unit="run"):
        out, secs = timed(lambda r=runners[dt][kind]: r(sub), dev)
        if kind in ("fast", "naive"):
            subset_stats[(dt, kind)] = out
        res["dtypes"][dt][kind]["subset_s"].append(secs)
        res["dtypes"][dt][kind]["loadavg"].append(loadavg())
        tqdm.write(f"  rep {rep} {dt:8s} {kind:15s} {secs:7.1f} s  (load {loadavg():.1f})")

    # Phase B (--full): the whole pool once per scorer per dtype, ABBA order.
    full_stats: dict[tuple[str, str], list[TrajectoryStats]] = {}
    order = [("bfloat16", "fast"), ("bfloat16", "naive"), ("float32", "naive"), ("float32", "fast")]
    for dt, kind in order if args.full else []:
        print(f"[{device}] full n={len(pool.convs)} {dt} {kind} ...", flush=True)
        stats, secs = timed(lambda r=runners[dt][kind]: r(pool), dev)
        full_stats[(dt, kind)] = stats
        res["dtypes"][dt][kind]["full_s"] = secs
        res["dtypes"][dt][kind]["full_loadavg"] = loadavg()
        print(f"  {secs:.1f} s = {pool.response_tokens / secs:.0f} response tok/s (load {loadavg():.1f})", flush=True)

    # Identity: on the full pool when it ran, else on the subset.
    for dt in DTYPES:
        stats, on = (full_stats, "full") if (dt, "fast") in full_stats else (subset_stats, "subset")
        a, b = stats[(dt, "fast")], stats[(dt, "naive")]
        res["dtypes"][dt]["identity"] = {
            "on": on,
            "trajectories": len(a),
            "max_rel_diff_trajectory_rsr": max_rel_diff(a, b),
            "dataset_rsr_fast": dataset_rsr(a),
            "dataset_rsr_naive": dataset_rsr(b),
            "dataset_rsr_rel_diff": abs(dataset_rsr(a) - dataset_rsr(b)) / abs(dataset_rsr(b)),
            "sum_rank_equal_fraction": sum(x.sum_rank == y.sum_rank for x, y in zip(a, b, strict=True)) / len(a),
        }
    summarise_throughput(res, pool, sub)
    return res


def summarise_throughput(res: dict, full: Workload, sub: Workload) -> None:
    for d in res["dtypes"].values():
        for kind in [k for k in ("fast", "naive", "forward_alone", "forward_batched") if k in d]:
            m = d[kind]
            m["subset_median_s"] = statistics.median(m["subset_s"])
            tokens = sub.total_tokens if kind.startswith("forward") else sub.response_tokens
            m["subset_tok_s"] = tokens / m["subset_median_s"]
            if "full_s" in m:
                m["full_tok_s"] = full.response_tokens / m["full_s"]
        d["speedup_subset_median"] = d["naive"]["subset_median_s"] / d["fast"]["subset_median_s"]
        d["speedup_subset_runs"] = [n / f for n, f in zip(d["naive"]["subset_s"], d["fast"]["subset_s"], strict=True)]
        if "full_s" in d["fast"]:
            d["speedup_full"] = d["naive"]["full_s"] / d["fast"]["full_s"]
        ceiling = max(d[k]["subset_tok_s"] for k in ("forward_alone", "forward_batched") if k in d)
        d["ceiling_tok_s"] = ceiling
        d["fast_total_tok_s_subset"] = sub.total_tokens / d["fast"]["subset_median_s"]
        d["fast_fraction_of_ceiling"] = d["fast_total_tok_s_subset"] / ceiling


# ---------------------------------------------------------------------------------------------------------------
# Peak memory: one fresh subprocess per (student, dtype, scorer)
# ---------------------------------------------------------------------------------------------------------------
def _proc_status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def mem_child(args: argparse.Namespace) -> None:
    """In a fresh process: load, warm up, reset the high-water mark, score the long trajectory, report the rise.

    CPU: writing 5 to /proc/self/clear_refs resets VmHWM (the peak RSS) to the current RSS, so
    VmHWM_after - VmRSS_before is the scorer's own peak, with model loading and first-call allocations excluded.
    CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() before.
    """
    torch.set_num_threads(args.threads)
    student = load_student(args.student, args.dtype, args.device)
    dev = student.device
    convs = load_conversations(64)
    conv = long_conversation(student, convs, args.mem_tokens)

    def run(c: Conversation, max_tokens: int | None) -> TrajectoryStats:
        if args.scorer == "fast":
            r = student.score([c], max_tokens=max_tokens, progress=False)[0]
            if r.stats is None:
                raise RuntimeError(r.error)
            return r.stats
        return naive_score_prepared(student, [student.prepare(c, max_tokens=max_tokens)])[0]

    run(convs[0], None)  # warm-up on a short real trajectory
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    stats = run(conv, args.mem_tokens)
    sync(dev)
    secs = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _proc_status_kb("VmHWM") * 1024
    report = {
        "peak_mb": (peak - before) / 2**20,
        "before_mb": before / 2**20,
        "tokens": args.mem_tokens,
        "scored_tokens": stats.n_tokens,
        "seconds": secs,
        "rsr": stats.rsr,
        "vocab": int(student.model.config.vocab_size),
    }
    print("MEMRESULT " + json.dumps(report), flush=True)


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory(args: argparse.Namespace, device: str) -> list[dict]:
    rows = []
    for ref in args.mem_students:
        for dt in DTYPES:
            row: dict = {"student": ref, "dtype": dt}
            for scorer in ("fast", "naive"):
                # The naive path holds float32 logits and float32 log-probs for every position at once.
                vocab = 262144 if ref == "gemma3-270m" else 49152
                need = 2 * args.mem_tokens * vocab * 4 if scorer == "naive" else 0
                avail = mem_available_bytes() if device == "cpu" else None
                if avail is not None and need > 0.9 * avail:
                    row[scorer] = {"skipped": f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"}
                    print(f"[{device}] memory {ref} {dt} {scorer}: SKIPPED ({row[scorer]['skipped']})", flush=True)
                    continue
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--mem-child",
                    "--student",
                    ref,
                    "--dtype",
                    dt,
                    "--scorer",
                    scorer,
                    "--device",
                    device,
                    "--mem-tokens",
                    str(args.mem_tokens),
                    "--batch-tokens",
                    str(args.batch_tokens),
                    "--threads",
                    str(args.threads),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMRESULT ")]
                if proc.returncode != 0 or not lines:
                    why = "killed by SIGKILL (out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"
                    row[scorer] = {"failed": why, "stderr_tail": proc.stderr[-2000:]}
                    print(f"[{device}] memory {ref} {dt} {scorer}: FAILED {why}\n{proc.stderr[-2000:]}", flush=True)
                    continue
                row[scorer] = json.loads(lines[-1].removeprefix("MEMRESULT "))
                r = row[scorer]
                print(
                    f"[{device}] memory {ref} {dt} {scorer}: peak +{r['peak_mb']:.0f} MB over {r['tokens']} tokens "
                    f"({r['seconds']:.1f} s, rsr {r['rsr']:.6f})",
                    flush=True,
                )
            if "peak_mb" in row.get("fast", {}) and "peak_mb" in row.get("naive", {}):
                row["ratio"] = row["fast"]["peak_mb"] / row["naive"]["peak_mb"]
                row["rsr_rel_diff"] = abs(row["fast"]["rsr"] - row["naive"]["rsr"]) / abs(row["naive"]["rsr"])
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def report(args: argparse.Namespace, device: str, tp: dict, mem: list[dict], meta: dict, wall: float) -> str:
    L: list[str] = []
    d = tp["dtypes"]
    ps, ss = tp["pool_stats"], tp["subset_stats"]
    L.append(f"# Fast RSR scorer vs naive baseline ({device})\n")
    L.append(
        f"{meta['hardware']}; torch {meta['torch']}, transformers {meta['transformers']}; {args.threads} torch "
        f"thread(s); throughput student `{args.student}`; wall time {wall / 60:.1f} min; 1-min load average "
        f"{meta['load_start']:.1f} at start, {_fmt(meta.get('load_end'), '.1f')} at end (shared machine).\n"
    )
    L.append("## Targets\n")
    L.append("| target | goal | measured | result |")
    L.append("|---|---|---|---|")
    for dt, key in (("bfloat16", "speedup_bf16"), ("float32", "speedup_fp32")):
        full = d[dt].get("speedup_full")
        med = d[dt]["speedup_subset_median"]
        ok = med >= TARGETS[key] and (full is None or full >= TARGETS[key])
        full_s = f"{full:.2f}x full n={tp['n']}, " if full is not None else ""
        L.append(
            f"| speed-up {dt} (naive time / fast time, same response tokens) | >= {TARGETS[key]:.0f}x | "
            f"{full_s}{med:.2f}x (median of {args.repeats}, subset of {tp['subset']}) | {verdict(ok)} |"
        )
    ratios = [r["ratio"] for r in mem if "ratio" in r]
    missing = [f"{r['student']} {r['dtype']}" for r in mem if "ratio" not in r]
    if ratios:
        worst = max(ratios)
        note = f"; not measured: {', '.join(missing)}" if missing else ""
        L.append(
            f"| peak memory at {args.mem_tokens} tokens, fast / naive (worst of {len(ratios)}{note}) | "
            f"<= {TARGETS['mem_ratio']:.0%} | {worst:.1%} | {verdict(worst <= TARGETS['mem_ratio'])} |"
        )
    else:
        L.append(f"| peak memory at {args.mem_tokens} tokens, fast / naive | <= 25% | not measured | n/a |")
    ident = d["float32"]["identity"]
    diffs = [ident["max_rel_diff_trajectory_rsr"]]
    diffs += [r["rsr_rel_diff"] for r in mem if r["dtype"] == "float32" and "rsr_rel_diff" in r]
    where = f"{ident['trajectories']} {ident['on']} trajectories"
    n_long = len(diffs) - 1
    if n_long:
        where += f" + {n_long} x {args.mem_tokens}-token trajectory"
    L.append(
        f"| RSR identical in float32 (max relative diff per trajectory; {where}) | <= 1e-4 | {max(diffs):.2e} | "
        f"{verdict(max(diffs) <= TARGETS['rsr_rel_diff'])} |"
    )

    L.append("\n## Workload\n")
    L.append("| set | trajectories | response tokens | total tokens | longest | fast padded/real | naive padded/real |")
    L.append("|---|---|---|---|---|---|---|")
    for name, x in (("pool (--n)", ps), ("timed subset", ss)):
        L.append(
            f"| {name} | {x['trajectories']} | {x['response_tokens']} | {x['total_tokens']} | {x['longest']} | "
            f"{x['fast_padded_over_real']:.3f} | {x['naive_padded_over_real']:.3f} |"
        )
    spread = _ranges(tp["subset_indices"])
    L.append(f"\nSubset = whole naive batches of 8 spread over the pool: trajectory indices {spread}.")

    L.append("\n## Throughput (response tokens/s, end to end: conversations in, stats out)\n")
    L.append("| dtype | fast | naive | speed-up median | per repeat | fast full n | naive full n | speed-up full |")
    L.append("|---|---|---|---|---|---|---|---|")
    for dt in DTYPES:
        x = d[dt]
        runs = ", ".join(f"{r:.2f}" for r in x["speedup_subset_runs"])
        full_cols = (
            f"{x['fast']['full_tok_s']:.0f} | {x['naive']['full_tok_s']:.0f} | {x['speedup_full']:.2f}x"
            if "speedup_full" in x
            else "not run | not run | -"
        )
        L.append(
            f"| {dt} | {x['fast']['subset_tok_s']:.0f} | {x['naive']['subset_tok_s']:.0f} | "
            f"{x['speedup_subset_median']:.2f}x | {runs} | {full_cols} |"
        )
    L.append("\nSeconds per repeat (subset):\n")
    L.append("| dtype | measurement | seconds | load average after |")
    L.append("|---|---|---|---|")
    for dt in DTYPES:
        for kind, m in d[dt].items():
            if isinstance(m, dict) and "subset_s" in m:
                secs = ", ".join(f"{v:.1f}" for v in m["subset_s"])
                loads = ", ".join(f"{v:.1f}" for v in m["loadavg"])
                L.append(f"| {dt} | {kind} | {secs} | {loads} |")

    L.append("\n## Ceiling: the transformer body alone (no LM head) on the subset, total tokens/s\n")
    L.append(
        "| dtype | forward alone (batch 1) | forward length-sorted batches | fast scorer total tok/s | fraction "
        "| speed-up bound |"
    )
    L.append("|---|---|---|---|---|---|")
    for dt in DTYPES:
        x = d[dt]
        batched = f"{x['forward_batched']['subset_tok_s']:.0f}" if "forward_batched" in x else "(GPU only)"
        best = min(x[k]["subset_median_s"] for k in ("forward_alone", "forward_batched") if k in x)
        L.append(
            f"| {dt} | {x['forward_alone']['subset_tok_s']:.0f} | {batched} | "
            f"{x['fast_total_tok_s_subset']:.0f} | {x['fast_fraction_of_ceiling']:.0%} | "
            f"{x['naive']['subset_median_s'] / best:.2f}x |"
        )
    L.append(
        "\nSpeed-up bound = naive median time / ceiling time: the speed-up of a scorer that costs no more than the "
        "transformer body alone (no LM head, no metric), i.e. the most any scorer that runs the body can reach here."
    )

    L.append("\n## Identity (fast vs naive RSR)\n")
    L.append("| dtype | on | max rel diff (trajectory RSR) | dataset RSR fast | naive | rel diff | equal sum_rank |")
    L.append("|---|---|---|---|---|---|---|")
    for dt in DTYPES:
        i = d[dt]["identity"]
        L.append(
            f"| {dt} | {i['trajectories']} {i['on']} | {i['max_rel_diff_trajectory_rsr']:.2e} | "
            f"{i['dataset_rsr_fast']:.6f} | {i['dataset_rsr_naive']:.6f} | {i['dataset_rsr_rel_diff']:.2e} | "
            f"{i['sum_rank_equal_fraction']:.0%} |"
        )

    L.append(f"\n## Peak memory scoring one {args.mem_tokens}-token trajectory (rise over the loaded, warm model)\n")
    L.append("| student | vocab | dtype | fast MB | naive MB | fast / naive | fast s | naive s | RSR rel diff |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in mem:
        f, n = r.get("fast", {}), r.get("naive", {})
        vocab = f.get("vocab") or n.get("vocab") or "-"
        ratio = f"{r['ratio']:.1%}" if "ratio" in r else "-"
        diff = f"{r['rsr_rel_diff']:.1e}" if "rsr_rel_diff" in r else "-"
        L.append(
            f"| {r['student']} | {vocab} | {r['dtype']} | {_cell(f, 'peak_mb', '.0f')} | "
            f"{_cell(n, 'peak_mb', '.0f')} | {ratio} | {_cell(f, 'seconds', '.1f')} | {_cell(n, 'seconds', '.1f')} | "
            f"{diff} |"
        )
    if not mem:
        L.append("| (skipped) | | | | | | | | |")
    L.append("\n## Protocol\n")
    L.append(
        "- Data: ../shared/data/zeroeval-math-l5, round-robin over the 8 teacher files (record i of every teacher, "
        "then i+1, ...), conversation = [user: problem, assistant: output[0]] (raw teacher text); "
        f"pool = first {tp['n']}" + (f", truncated to {args.max_tokens} tokens" if args.max_tokens else "") + ".\n"
        f"- Fast: `Student.score(convs, batch_tokens={args.batch_tokens}, progress=False)`. Naive "
        "(benchmarks/naive_scorer.py): the same `Student.prepare` ids, fixed batches of 8 in file order, right "
        "padding + attention mask, full logits `.float()`, `log_softmax` over the vocabulary, rank = 1 + #{top-100 "
        "log-probs > the target's} clipped at 100 (equal to the clipped strictly-greater count), surprisal = "
        "-log-prob. Both timed end to end (chat rendering + tokenisation included), same thread count.\n"
        f"- Timing: {args.repeats} repeats on the subset; dtypes interleaved (order flipped every repeat), order of "
        "the measurements rotated every repeat; medians. One warm-up call on 2 short trajectories per runner first."
        + (" Full pool: once each, ABBA order (bf16 fast, bf16 naive, fp32 naive, fp32 fast)." if args.full else "")
        + "\n"
        "- Ceiling: `model.base_model(input_ids)` (no LM head) on the subset's token sequences, each alone (batch 1, "
        "no padding); on CUDA also in the fast scorer's length-sorted batches; the better one is the ceiling.\n"
        "- Memory: a fresh subprocess per (student, dtype, scorer): load, warm up on a short trajectory, reset the "
        "peak (CPU: `echo 5 > /proc/self/clear_refs` resets VmHWM to the current RSS; CUDA: "
        "reset_peak_memory_stats), score one conversation of real responses concatenated and cut to "
        f"{args.mem_tokens} tokens, report peak minus the resident/allocated memory just before scoring.\n"
    )
    return "\n".join(L) + "\n"


def _fmt(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _cell(m: dict, key: str, fmt: str) -> str:
    if key in m:
        return format(m[key], fmt)
    return m.get("skipped") or m.get("failed") or "-"


def _ranges(idx: list[int]) -> str:
    spans, start = [], None
    for a, b in zip(idx, idx[1:] + [None], strict=True):
        start = a if start is None else start
        if b != a + 1:
            spans.append(f"{start}-{a}" if a != start else f"{a}")
            start = None
    return ", ".join(spans)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400, help="trajectories loaded into the pool (default 400)")
    ap.add_argument("--subset", type=int, default=48, help="trajectories timed repeatedly, multiple of 8 (default 48)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats on the subset (default 3)")
    ap.add_argument("--full", action="store_true", help="also time the whole pool once per scorer per dtype (slow)")
    ap.add_argument("--student", default="smollm2-135m", help="student for throughput (default smollm2-135m)")
    ap.add_argument("--mem-students", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--mem-tokens", type=int, default=8192, help="length of the memory trajectory (default 8192)")
    ap.add_argument("--batch-tokens", type=int, default=8192, help="the fast scorer's batch_tokens (default 8192)")
    ap.add_argument("--max-tokens", type=int, default=None, help="truncate every trajectory (both scorers)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on this shared 2-core box 2 threads ran 2-3x slower than 1 under load)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run (~3 min): 8 trajectories cut to 192 tokens")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument(
        "--devices",
        nargs="+",
        choices=("cpu", "cuda"),
        help="devices to measure (default: the CPU, then CUDA when a GPU is present)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    ap.add_argument("--render", type=Path, help="re-render the markdown from a results JSON, without measuring")
    # internal: one memory measurement in a fresh process
    ap.add_argument("--mem-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--scorer", choices=("fast", "naive"), default="fast", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mem_child:
        mem_child(args)
        return
    if args.render:
        payload = json.loads(args.render.read_text(encoding="utf-8"))
        saved = argparse.Namespace(**payload["meta"]["args"])
        device = "cuda" if "cuda" in args.render.stem else "cpu"
        text = report(saved, device, payload["throughput"], payload["memory"], payload["meta"], payload["wall_s"])
        args.render.with_suffix(".md").write_text(text, encoding="utf-8")
        print(text)
        return
    if args.quick:
        args.n, args.subset, args.repeats = min(args.n, 48), 8, 2
        args.max_tokens, args.mem_tokens, args.mem_students = 192, 512, ["smollm2-135m"]
    if args.n < NAIVE_BATCH:
        sys.exit(f"bench_scorer: --n must be at least {NAIVE_BATCH}")
    torch.set_num_threads(args.threads)

    import transformers

    convs = load_conversations(args.n)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices and not torch.cuda.is_available():
        sys.exit("bench_scorer: --devices cuda asked for, but torch sees no CUDA GPU")
    if devices == ["cpu"] and not args.devices:
        print("no CUDA GPU present: the GPU table is skipped (it runs the same protocol when one is)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for device in devices:
        t0 = time.perf_counter()
        hardware = (
            torch.cuda.get_device_name(0)
            if device == "cuda"
            else f"{_cpu_name()} ({os.cpu_count()} cores, {platform.machine()})"
        )
        meta = {
            "hardware": hardware,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "load_start": loadavg(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
        tp = throughput(args, device, convs)
        mem = [] if args.skip_memory else memory(args, device)
        meta["load_end"] = loadavg()
        text = report(args, device, tp, mem, meta, time.perf_counter() - t0)
        print("\n" + text, flush=True)
        name = device + ("-quick" if args.quick else "")
        (args.out / f"{name}.md").write_text(text, encoding="utf-8")
        payload = {"meta": meta, "throughput": tp, "memory": mem, "wall_s": time.perf_counter() - t0}
        (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
        print(f"wrote {args.out / (name + '.md')} and .json", flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


if __name__ == "__main__":
    main()
