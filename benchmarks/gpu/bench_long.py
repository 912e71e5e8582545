"""Issue 11: scoring at the scale users run (1-8B students, long chains of thought, one H200), in one command.

    python -m benchmarks.gpu.bench_long --out OUT             # on the GPU host (via run.sh long), ~9 min
    python -m benchmarks.gpu.bench_long --dry-run --out OUT   # tiny configs on CPU: every phase's code runs

Students: Qwen2.5-7B's and Gemma-3-1B's published architectures with random weights made on the GPU in bf16
(long_setup.py): speed and memory do not depend on the weights. Trajectories: --n log-normal lengths over
1k-16k tokens plus --n-long of 32k, a real problem as the prompt and real teacher responses joined as the response.

Phases (--phases, default all; b needs a, g needs a and d):
  a  fast scorer vs the body alone (the model's forward without the head, replaying the scorer's own calls)
  b  model FLOPs utilisation of the fast scorer on the 7B (formula printed)
  c  speed-up vs the baseline (benchmarks/baseline_scorer.py) at its largest batch size that does not OOM
  d  one 32k-token trajectory under the 7B: peak memory; the 32k throughput
  e  exact ranks' cost: the float32 head vs the model's own bf16 head on the same hidden states, 7B
  f  GPU-idle share of end-to-end scoring (torch.profiler kernel intervals vs wall time), 1B student
  g  extrapolation to the paper's workload (5,000 trajectories at 32k context, 7B)
  h  the Ray path once (one worker, num_gpus=1) gives the in-process scores, 1B student
A markdown table (targets, measured, PASS/MISS) and a JSON go to --out after every phase; when a target misses,
a torch.profiler table of kernel time by op for the fast scorer on the 7B goes with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks._common import REPO, ZEROEVAL, table, timed
from benchmarks.baseline_scorer import baseline_score
from benchmarks.gpu import long_setup as ls
from rsr.score.student import Student, token_ranks_surprisals

GiB = 2**30
PAPER_N, PAPER_MINUTES = 5000, 45.0
# bf16 dense peak (no sparsity) from the vendors' datasheets, TFLOP/s; matched against the device name in order.
PEAK_TFLOPS = (("H200 NVL", 835.0), ("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0))
# Seconds each phase may use on the GPU host (the whole run fits one 10-minute command); c shrinks to what is left.
BUDGET = {"build": 60, "a": 150, "d": 45, "e": 60, "c": 150, "profile": 30, "f": 75, "h": 75}
ROWS = (  # id, phase, measure, student, goal
    ("a_fraction", "a", "fast scorer / body-only throughput (same calls, end to end)", "big", ">= 90%"),
    ("b_mfu", "b", "model FLOPs utilisation of the fast scorer", "big", ">= 55%"),
    ("c_speedup", "c", "speed-up vs the authors'-style baseline at its largest batch that fits", "big", ">= 2x"),
    ("d_peak_32k", "d", "one 32k-token trajectory: peak memory", "big", "no OOM"),
    ("e_exact", "e", "exact ranks: cost on the GPU", "big", "measured"),
    ("f_idle", "f", "GPU-idle share of end-to-end scoring (conversations in, stats out)", "small", "< 10%"),
    ("f_fraction", "f", "fast scorer / body-only throughput", "small", "info"),
    ("g_paper", "g", "paper workload: 5,000 long-CoT trajectories at 32k context", "big", "<= 45 min"),
    ("g_full32k", "g", "5,000 trajectories of a full 32k tokens each (upper bound)", "big", "info"),
    ("h_ray", "h", "Ray worker (num_gpus=1) gives the in-process scores", "small", "identical"),
)
NEEDS = {"b": "a", "g": "ad"}
NOTES = [
    "a/f: end to end = conversations in, stats out (rendering and tokenising included); body = the model's forward "
    "without the head replayed on the calls the fast scorer made (a forward pre-hook records them)",
    "c: the baseline is benchmarks/baseline_scorer.py (fixed batches in file order, right padding + mask, full "
    "[batch, seq, vocab] logits in float32), without its 6 GiB split (the OOM search sets the batch)",
    "e: the product's float32 head (rsr.score.student.ExactHead) vs the model's own bf16 head, then the same rank "
    "and logsumexp, on the same hidden states of the response positions",
    "g: minutes = 5,000 x the measured seconds per trajectory, weighted by this run's length mix",
]


# ---------------------------------------------------------------------------------------------------------------
# The report: every row always present; rewritten after each phase so a killed run still leaves its numbers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    id: str
    phase: str
    measure: str
    student: str
    goal: str
    measured: str = "not run"
    result: str = "-"
    note: str = ""


@dataclass
class Report:
    out: Path
    dry: bool
    meta: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    profile: str = ""
    rows: dict = field(default_factory=lambda: {r[0]: Row(*r) for r in ROWS})

    def set(self, row_id: str, measured: str, ok: bool | None = None, note: str = "", result: str | None = None):
        row = self.rows[row_id]
        row.measured, row.note = measured, note
        row.result = result or ("INFO" if ok is None else "PASS" if ok else "MISS")
        if self.dry and row.result in ("PASS", "MISS"):
            row.result += " (dry run)"

    def skip(self, phase: str, why: str) -> None:
        for row in self.rows.values():
            if row.phase == phase and row.measured == "not run":
                row.measured, row.result, row.note = f"skipped: {why}", "SKIP", ""

    def missed(self, student: str) -> bool:
        return any(r.result.startswith("MISS") for r in self.rows.values() if r.student == student)

    def markdown(self) -> str:
        m = self.meta
        names = {k: m.get("students", {}).get(k, {}).get("label", k) for k in ("big", "small")}
        cells = [
            [r.phase, r.measure, names[r.student], r.goal, r.measured + (f" ({r.note})" if r.note else ""), r.result]
            for r in self.rows.values()
        ]
        parts = [
            "# Long-CoT scoring at real student sizes (benchmarks/gpu/bench_long.py)",
            f"{m.get('hardware_line', '')}. {m.get('run_line', '')}",
            "\n".join(f"- {line}" for line in m.get("setup_lines", [])),
            table(["#", "measure", "student (random weights†)", "goal", "measured", "result"], cells),
            "† random weights made on the device: speed and memory do not depend on the weights' values (RSR values "
            "do); every figure above is a speed, a memory or an identity of scores between two paths.",
            "\n".join(f"- {line}" for line in NOTES),
        ]
        if self.errors:
            parts += ["## Errors", "\n".join(f"- phase {k}: `{v.splitlines()[-1]}`" for k, v in self.errors.items())]
        if self.profile:
            parts += ["## Kernel time by op, fast scorer on the 7B (top 15)", f"```\n{self.profile}\n```"]
        return "\n\n".join(parts) + "\n"

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "bench_long.md").write_text(self.markdown())
        rows = [dataclasses.asdict(r) for r in self.rows.values()]
        doc = {"meta": self.meta, "rows": rows, "raw": self.raw, "errors": self.errors, "profile": self.profile}
        (self.out / "bench_long.json").write_text(json.dumps(doc, indent=2, default=str))


# ---------------------------------------------------------------------------------------------------------------
# Run state and small helpers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    args: argparse.Namespace
    report: Report
    device: torch.device
    phases: str
    work: Path
    start: float = field(default_factory=time.monotonic)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def timed(self, fn: Callable, *args, **kwargs) -> tuple[object, float]:
        return timed(lambda: fn(*args, **kwargs), self.device)

    def phase(self, name: str, fn: Callable, *args, forced: bool = False) -> None:
        """Run one phase if selected and if time is left; an exception is recorded, and the next phase runs."""
        if name not in self.phases and not forced:
            self.report.skip(name, "not selected (--phases)")
            return
        need = 0 if self.args.dry_run else min(BUDGET.get(name, 30), 30)
        if self.left() < need:
            self.report.skip(name, f"time budget ({self.left():.0f} s left of --budget-s)")
            return
        print(f"[{time.monotonic() - self.start:6.1f} s] phase {name}", flush=True)
        try:
            fn(self, *args)
        except Exception:  # one phase's failure must not lose the others' numbers on a one-shot GPU run
            self.report.errors[name] = traceback.format_exc()
            print(self.report.errors[name], file=sys.stderr, flush=True)
            self.report.skip(name, "error (see Errors)")
        finally:
            self.free()
            self.report.write()

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def score_ok(student: Student, convs, max_tokens: int) -> list:
    results = student.score(convs, max_tokens=max_tokens, progress=False)
    bad = [r.error for r in results if r.stats is None]
    if bad:
        raise RuntimeError(f"the scorer rejected {len(bad)} of {len(convs)} trajectories, e.g. {bad[0]}")
    return results


def peak_tflops(name: str, override: float | None) -> tuple[float, str]:
    if override:
        return override, "given with --peak-tflops"
    for key, value in PEAK_TFLOPS:
        if key in name:
            return value, f"{key} bf16 dense peak (datasheet)"
    return 989.4, f"unknown device {name!r}: H200 SXM bf16 dense peak assumed"


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def needs(run: Run, *phases: str) -> list[dict]:
    missing = [p for p in phases if p not in run.report.raw]
    if missing:
        raise RuntimeError(f"phase {' and '.join(missing)} gave no measurement in this run")
    return [run.report.raw[p] for p in phases]


# ---------------------------------------------------------------------------------------------------------------
# The body alone, on the fast scorer's own calls
# ---------------------------------------------------------------------------------------------------------------
def _clone(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


class BodyCalls:
    """Records every call of the model's body (base_model) while the fast scorer runs, to replay them alone:
    the same inputs and arguments, without the head and without the scorer's host-side work."""

    def __init__(self, model: torch.nn.Module):
        self.body = model.base_model
        self.calls: list[tuple[tuple, dict]] = []
        self._handle = None

    def __enter__(self) -> BodyCalls:
        def hook(module, args, kwargs):
            self.calls.append((tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()}))

        self._handle = self.body.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    @torch.inference_mode()
    def replay(self) -> None:
        for args, kwargs in self.calls:
            self.body(*args, **kwargs)


def fast_and_body(run: Run, student: Student, convs, lengths: list[int]) -> dict:
    """One timed fast pass (recording the body's calls), then the body alone on the same calls."""
    score_ok(student, convs[:4], run.args.context)  # warm-up: kernels, allocator
    run.free()
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    with BodyCalls(student.model) as calls:
        _, t_fast = run.timed(score_ok, student, convs, run.args.context)
    peak = torch.cuda.max_memory_allocated() / GiB if run.cuda else None
    _, t_body = run.timed(calls.replay)  # the fast pass just ran the same shapes: kernels and allocator are warm
    tokens = sum(lengths)
    return {
        "trajectories": len(convs),
        "tokens": tokens,
        "body_calls": len(calls.calls),
        "t_fast_s": t_fast,
        "t_body_s": t_body,
        "fast_tok_s": tokens / t_fast,
        "body_tok_s": tokens / t_body,
        "fraction": t_body / t_fast,
        "fast_peak_gib": peak,
    }


# ---------------------------------------------------------------------------------------------------------------
# Phases on the 7B
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Scored:
    """A student with its trajectories, prepared once for token counts (prepare is public and what score uses)."""

    arch: ls.Arch
    tokenizers: Path
    student: Student
    convs: list
    lengths: list[int]
    long_convs: list
    long_lengths: list[int]
    flops: ls.FlopModel


def fit_to_budget(run: Run, s: Scored, seconds: float, passes: float) -> int:
    """How many trajectories (a prefix of the seeded list, at least 16) fit `passes` fast-scorer passes in
    `seconds` at the fast scorer's speed, measured once per student on 8 of them after a warm-up on 4."""
    if run.args.dry_run:
        return len(s.convs)
    cal = run.report.raw.setdefault("calibration", {})
    if s.arch.key not in cal:
        score_ok(s.student, s.convs[:4], run.args.context)
        _, t = run.timed(score_ok, s.student, s.convs[4:12], run.args.context)
        cal[s.arch.key] = sum(s.lengths[4:12]) / t
    n, total = 0, 0
    for length in s.lengths:
        if (total + length) / cal[s.arch.key] * passes > seconds:
            break
        n, total = n + 1, total + length
    return max(n, 16)


def phase_a(run: Run, s: Scored) -> None:
    n = fit_to_budget(run, s, BUDGET["a"], 2.2)
    r = fast_and_body(run, s.student, s.convs[:n], s.lengths[:n])
    r["flops"] = sum(s.flops.trajectory(x) for x in s.lengths[:n])
    r["head_flops"] = s.flops.head(r["tokens"])
    run.report.raw["a"] = r
    fewer = "" if n == len(s.convs) else f"; {n} of {len(s.convs)} trajectories (time budget)"
    wl = run.report.raw["workload"]["big"]
    prep = wl["prepare_s"] * r["tokens"] / (wl["tokens"] + sum(wl["long"]))
    run.report.set(
        "a_fraction",
        f"{r['fraction']:.1%}",
        r["fraction"] >= 0.90,
        f"fast {r['fast_tok_s']:,.0f} tok/s in {fmt_s(r['t_fast_s'])}, body {r['body_tok_s']:,.0f} tok/s; "
        f"{r['trajectories']} trajectories, {r['tokens']:,} tokens in {r['body_calls']} body calls; rendering + "
        f"tokenising alone ~{prep:.1f} s{fewer}",
    )


def phase_b(run: Run, s: Scored) -> None:
    (a,) = needs(run, "a")
    peak, _ = run.report.meta["peak"]
    mfu = a["flops"] / a["t_fast_s"] / (peak * 1e12)
    body_mfu = (a["flops"] - a["head_flops"]) / a["t_body_s"] / (peak * 1e12)
    run.report.raw["b"] = {"mfu": mfu, "body_mfu": body_mfu, "flops": a["flops"], "peak_tflops": peak}
    achieved = a["flops"] / a["t_fast_s"] / 1e12
    note = f"{achieved:,.0f} TFLOP/s of {peak:,.0f}; body alone {body_mfu:.1%} (head FLOPs left out)"
    run.report.set("b_mfu", f"{mfu:.1%}", mfu >= 0.55, note)


def phase_d(run: Run, s: Scored) -> None:
    ctx = run.args.context
    run.free()
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated() / GiB if run.cuda else None
    res, t_one = run.timed(score_ok, s.student, s.long_convs[:1], ctx)
    peak = torch.cuda.max_memory_allocated() / GiB if run.cuda else None
    _, t_all = run.timed(score_ok, s.student, s.long_convs, ctx)
    n, long_tok_s = s.long_lengths[0], sum(s.long_lengths) / t_all
    run.report.raw["d"] = {"tokens": n, "scored_tokens": res[0].stats.n_tokens, "peak_gib": peak,
                           "resident_gib": resident, "t_one_s": t_one, "n_long": len(s.long_convs), "t_all_s": t_all,
                           "long_tok_s": long_tok_s}  # fmt: skip
    if peak is None:
        run.report.set("d_peak_32k", "ran; peak n/a on CPU", None, f"{n:,} tokens", result="SKIP")
        return
    note = f"{n:,} tokens; {resident:.1f} GiB resident before (weights); {len(s.long_convs)} x 32k at {long_tok_s:,.0f}"
    run.report.set("d_peak_32k", f"peak {peak:.1f} GiB", True, note + " tok/s")


def phase_g(run: Run, s: Scored) -> None:
    a, d = needs(run, "a", "d")
    per_main, per_long = a["t_fast_s"] / a["trajectories"], d["t_all_s"] / d["n_long"]
    share = d["n_long"] / (a["trajectories"] + d["n_long"])
    mix = PAPER_N * ((1 - share) * per_main + share * per_long) / 60
    full = PAPER_N * per_long / 60
    peak, _ = run.report.meta["peak"]
    ideal = PAPER_N * s.flops.trajectory(d["tokens"]) / (peak * 1e12) / 60
    run.report.raw["g"] = {"minutes_mix": mix, "minutes_full32k": full, "minutes_full32k_at_peak": ideal}
    run.report.set(
        "g_paper",
        f"{mix:.1f} min",
        mix <= PAPER_MINUTES,
        f"this run's length mix ({share:.1%} at 32k, the rest 1k-16k log-normal) at its measured "
        f"{per_main:.2f} s and {per_long:.2f} s per trajectory; the paper: under an hour",
    )
    note = f"{PAPER_N:,} x {d['tokens']:,} tokens at the measured 32k throughput; at 100% of peak {ideal:.0f} min"
    run.report.set("g_full32k", f"{full:.1f} min", None, note)


def phase_e(run: Run, s: Scored) -> None:
    """The float32 head against the model's own bf16 head on the same hidden states, and their difference as a
    share of the fast scorer's end-to-end time on the same trajectories."""
    student, ctx = s.student, run.args.context
    convs = s.convs[: min(16, fit_to_budget(run, s, BUDGET["e"], 3.0))]
    own, chunk = student.model.get_output_embeddings(), student.head.chunk

    def bf16_head(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [token_ranks_surprisals(own(a), b) for a, b in zip(h.split(chunk), t.split(chunk), strict=True)]
        return tuple(torch.cat(p).cpu() for p in zip(*parts, strict=True))

    def positions(conv) -> tuple[torch.Tensor, torch.Tensor]:
        p = student.prepare(conv, max_tokens=ctx)
        ids = torch.tensor([p.ids], device=run.device)
        hidden = student.model.base_model(input_ids=ids).last_hidden_state[0]
        cols = torch.tensor(p.scored, device=run.device)
        return hidden[cols - 1], ids[0, cols]

    heads = {"fp32": student.head.ranks_surprisals, "bf16": bf16_head}
    secs, tokens = {"fp32": 0.0, "bf16": 0.0}, 0
    with torch.inference_mode():
        for head in heads.values():  # warm-up
            head(*positions(convs[0]))
        for conv in convs:
            hidden, targets = positions(conv)
            tokens += len(targets)
            for name, head in heads.items():
                secs[name] += run.timed(head, hidden, targets)[1]
    _, t_e2e = run.timed(score_ok, student, convs, ctx)
    cost = (secs["fp32"] - secs["bf16"]) / t_e2e
    run.report.raw["e"] = {"head_s": secs, "positions": tokens, "trajectories": len(convs), "t_e2e_s": t_e2e}
    run.report.set(
        "e_exact",
        f"{cost:+.1%} of end-to-end time",
        None,
        f"float32 head {secs['fp32']:.2f} s vs the model's bf16 head {secs['bf16']:.2f} s on {tokens:,} response "
        f"positions of {len(convs)} trajectories, scored end to end in {t_e2e:.2f} s",
    )


def largest_batch(run: Run, student: Student, prepared: list) -> tuple[int, dict]:
    """The baseline's largest batch size in 1, 2, 4, ... whose worst fixed batch (file order) does not OOM."""
    cap = 2 if run.args.dry_run else 64  # a CPU never raises OutOfMemoryError: the dry run stops at 2
    best, tried, b = 0, {}, 1
    while b <= min(cap, len(prepared)):
        chunks = [prepared[i : i + b] for i in range(0, len(prepared), b)]
        worst = max(chunks, key=lambda c: len(c) * max(len(p.ids) for p in c))
        fits = True
        try:
            baseline_score(student, worst, b, math.inf)
        except torch.cuda.OutOfMemoryError:
            fits = False
        run.free()  # outside the except block: the traceback no longer holds the failed batch's tensors
        tried[b] = "ok" if fits else "OOM"
        if not fits:
            break
        best, b = b, b * 2
    if not best:
        raise RuntimeError("the baseline runs out of memory at batch size 1")
    return best, tried


def baseline_pass(run: Run, s: Scored, b: int, seconds: float) -> tuple[int, float]:
    """The authors' loop: fixed batches of b in file order, each tokenised then scored with full logits; stops
    after the batch that crosses `seconds` (the fast scorer is then timed on the same prefix)."""
    done, total = 0, 0.0
    for i in range(0, len(s.convs), b):
        chunk = s.convs[i : i + b]

        def one(chunk=chunk):
            prepared = [s.student.prepare(m, max_tokens=run.args.context, index=j) for j, m in enumerate(chunk)]
            baseline_score(s.student, prepared, b, math.inf)

        _, t = run.timed(one)
        done, total = done + len(chunk), total + t
        if total > seconds:
            break
    return done, total


def phase_c(run: Run, s: Scored) -> None:
    reserve = sum(BUDGET[k] for k in "fh" if k in run.phases) + BUDGET["profile"] + BUDGET["build"] // 2
    seconds = 1e9 if run.args.dry_run else max(40.0, min(BUDGET["c"], run.left() - reserve))
    prepared = [s.student.prepare(m, max_tokens=run.args.context, index=i) for i, m in enumerate(s.convs)]
    (b, tried), t_search = run.timed(largest_batch, run, s.student, prepared)
    del prepared
    budget = (seconds - t_search) * 0.6  # what is left goes to the baseline and the fast scorer on the same prefix
    try:
        done, t_base = baseline_pass(run, s, b, budget)
    except torch.cuda.OutOfMemoryError:  # the cache fragmented since the search: the next size down, once
        done = None
    if done is None:
        run.free()
        tried[f"{b} in the pass"], b = "OOM", max(1, b // 2)
        done, t_base = baseline_pass(run, s, b, budget)
    a = run.report.raw.get("a", {})
    if a.get("trajectories") == done:
        t_fast = a["t_fast_s"]
    else:
        _, t_fast = run.timed(score_ok, s.student, s.convs[:done], run.args.context)
    tokens = sum(s.lengths[:done])
    run.report.raw["c"] = {"batch": b, "tried": tried, "trajectories": done, "tokens": tokens,
                           "t_baseline_s": t_base, "t_fast_s": t_fast}  # fmt: skip
    run.report.set(
        "c_speedup",
        f"{t_base / t_fast:.2f}x",
        t_base / t_fast >= 2.0,
        f"baseline batch {b} (tried {', '.join(f'{k}: {v}' for k, v in tried.items())}): "
        f"{tokens / t_base:,.0f} tok/s vs fast {tokens / t_fast:,.0f} tok/s on the same {done} trajectories",
    )


def kernel_profile(run: Run, s: Scored) -> str:
    """torch.profiler over the fast scorer on 8 median-length trajectories: time by op, top 15."""
    from torch.profiler import ProfilerActivity, profile

    order = sorted(range(len(s.convs)), key=lambda i: s.lengths[i])
    mid = max(0, len(order) // 2 - 4)
    convs = [s.convs[i] for i in order[mid : mid + 8]]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if run.cuda else [])
    with profile(activities=activities) as prof:
        run.timed(score_ok, s.student, convs, run.args.context)
    key = "self_device_time_total" if run.cuda else "self_cpu_time_total"
    return f"sorted by {key}; {len(convs)} trajectories\n" + prof.key_averages().table(sort_by=key, row_limit=15)


# ---------------------------------------------------------------------------------------------------------------
# Phases on the 1B
# ---------------------------------------------------------------------------------------------------------------
def busy_seconds(prof) -> float:
    """Union of the device's kernel / copy intervals (streams may overlap), in seconds."""
    from torch.autograd import DeviceType

    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA)
    busy, end = 0.0, -math.inf
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy / 1e6


def phase_f(run: Run, s: Scored) -> None:
    from torch.profiler import ProfilerActivity, profile

    n = fit_to_budget(run, s, BUDGET["f"], 3.0)
    convs = s.convs[:n]
    r = fast_and_body(run, s.student, convs, s.lengths[:n])
    run.report.raw["f_fraction"] = r
    head_share = s.flops.head(1) / s.flops.per_token_dense()
    note = f"fast {r['fast_tok_s']:,.0f} tok/s, body {r['body_tok_s']:,.0f} tok/s; the 262k-vocabulary head is "
    run.report.set("f_fraction", f"{r['fraction']:.1%}", None, note + f"{head_share:.0%} of the dense FLOPs")
    # Device activity only (the CPU-op tracing would slow the host side it measures); both if that saw nothing.
    for activities in ([ProfilerActivity.CUDA], [ProfilerActivity.CPU, ProfilerActivity.CUDA]):
        with profile(activities=activities if run.cuda else [ProfilerActivity.CPU]) as prof:
            _, wall = run.timed(score_ok, s.student, convs, run.args.context)
        if not run.cuda:
            run.report.set("f_idle", "n/a on CPU", None, f"profiled end-to-end run: {wall:.2f} s", result="SKIP")
            return
        if (busy := busy_seconds(prof)) > 0:
            break
    else:
        raise RuntimeError("torch.profiler recorded no CUDA kernel during a scoring run")
    idle = 1 - busy / wall
    run.report.raw["f"] = {"wall_profiled_s": wall, "busy_s": busy, "idle": idle, "wall_unprofiled_s": r["t_fast_s"]}
    run.report.set(
        "f_idle",
        f"{idle:.1%}",
        idle < 0.10,
        f"GPU busy {busy:.2f} s of {wall:.2f} s wall ({n} trajectories, torch.profiler kernel and copy intervals; "
        f"{1 - busy / r['t_fast_s']:.1%} against the unprofiled wall)",
    )


def phase_h(run: Run, s: Scored) -> None:
    try:
        import ray
    except ImportError:
        note = "ray is not installed on this host (bash benchmarks/gpu/bundle.sh with RAY=1 carries its wheels)"
        run.report.set("h_ray", "skipped: no ray", None, note, result="SKIP")
        return
    convs = s.convs[:16]
    local = [ls.stats_tuple(r) for r in score_ok(s.student, convs, run.args.context)]
    # Local workers inherit the driver's environment: they import rsr and benchmarks.gpu.long_setup from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    # num_gpus given, not detected: a detection miss would leave the task waiting for a GPU until the timeout.
    # A CPU-only dry run declares one GPU, as tests/e2e/test_ray_scoring.py does.
    gpus = torch.cuda.device_count() if run.cuda else 1
    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, object_store_memory=256 << 20)
    try:
        remote = ray.remote(num_gpus=1)(ls.score_remote)
        args = (s.arch, str(run.device), "bfloat16", run.args.seed, str(s.tokenizers), str(run.work / "ray"))
        timeout = 600 if run.args.dry_run else max(60.0, min(2 * BUDGET["h"], run.left()))
        (got, t) = run.timed(ray.get, remote.remote(*args, convs, run.args.context), timeout=timeout)
    finally:
        ray.shutdown()
    same = got == local
    diff = max(abs(a[3] - b[3]) / abs(b[3]) for a, b in zip(got, local, strict=True) if a[0] is not None)
    run.report.raw["h"] = {"local": local, "ray": got, "seconds": t, "ray_version": ray.__version__}
    run.report.set(
        "h_ray",
        "identical" if same else f"max RSR rel diff {diff:.1e}",
        same,
        f"{len(convs)} trajectories; plain ray.remote(num_gpus=1) building the same seeded student "
        f"(flows/score.py's path needs Prefect, absent on a bare GPU host); {t:.0f} s with worker start",
    )


# ---------------------------------------------------------------------------------------------------------------
# Students, workload, environment
# ---------------------------------------------------------------------------------------------------------------
def make_scored(run: Run, key: str, arch: ls.Arch) -> Scored:
    """Build the student (random weights on the device), its trajectories, and their token counts."""
    args, w = run.args, run.args.workload
    tokenizers = ls.tokenizer_dir(arch.tokenizer, args.tokenizers)
    student, t_build = run.timed(ls.build_student, arch, str(run.device), "bfloat16", args.seed, tokenizers, run.work)
    pairs = ls.load_texts(args.data)
    convs = ls.conversations(student, pairs, w.lengths(), w.seed)
    long_convs = ls.conversations(student, pairs, [w.long - 256] * w.n_long, w.seed + 1)
    prepared, t_prep = run.timed(
        lambda: [student.prepare(m, max_tokens=args.context, index=i) for i, m in enumerate(convs + long_convs)]
    )
    lengths = [len(p.ids) for p in prepared]
    main, response = lengths[: len(convs)], sum(len(p.scored) for p in prepared[: len(convs)])
    flops = ls.FlopModel.of(student.model)
    params = sum(p.numel() for p in student.model.parameters())
    run.report.meta.setdefault("students", {})[key] = {
        "label": arch.label, "arch": arch.key, "config": arch.config, "params": params, "weights_gib": params * 2 / GiB,
        "tokenizer": arch.tokenizer_note, "build_s": t_build, "flops_formula": flops.formula(),
    }  # fmt: skip
    run.report.raw.setdefault("workload", {})[key] = {
        "trajectories": len(convs), "tokens": sum(main), "min": min(main), "median": statistics.median(main),
        "mean": statistics.mean(main), "max": max(main), "response_share": response / sum(main),
        "long": lengths[len(convs) :], "prepare_s": t_prep,
        "data": str(args.data) if args.data.is_dir() else "synthetic text (no data folder)",
    }  # fmt: skip
    print(f"  {arch.label}: {params / 1e9:.2f}B params, built in {t_build:.1f} s; {len(convs)} + {len(long_convs)} "
          f"trajectories, {sum(main):,} tokens", flush=True)  # fmt: skip
    return Scored(arch, tokenizers, student, convs, main, long_convs, lengths[len(convs) :], flops)


def hardware(run: Run) -> dict:
    import importlib.util

    import transformers

    hw = {"device": str(run.device), "torch": torch.__version__, "transformers": transformers.__version__,
          "python": platform.python_version(), "cpus": os.cpu_count(), "ray": None}  # fmt: skip
    if importlib.util.find_spec("ray"):
        import ray

        hw["ray"] = ray.__version__
    if run.cuda:
        props = torch.cuda.get_device_properties(0)
        hw |= {"gpu": props.name, "gpu_memory_gib": props.total_memory / GiB, "cuda": torch.version.cuda}
    return hw


def describe(run: Run) -> None:
    """The header lines of the report: hardware, versions, peak constant, students, workload, formula."""
    m, hw, args = run.report.meta, run.report.meta["hardware"], run.args
    where = f"{hw['gpu']} ({hw['gpu_memory_gib']:.1f} GiB), CUDA {hw['cuda']}" if run.cuda else "CPU (dry run)"
    m["hardware_line"] = (
        f"{where}; torch {hw['torch']}, transformers {hw['transformers']}, Python {hw['python']}, "
        f"{hw['cpus']} CPUs, ray {hw['ray'] or 'absent'}"
    )
    m["run_line"] = f"bf16; seed {args.seed}; phases {run.phases}; wall time {fmt_s(time.monotonic() - run.start)}" + (
        "; **dry run: tiny configs on CPU, numbers meaningless**" if args.dry_run else ""
    )
    lines = [
        f"{'7B' if key == 'big' else '1B'} student: {st['label']} ({st['params'] / 1e9:.2f}B params, "
        f"{st['weights_gib']:.1f} GiB bf16, built on the device in {st['build_s']:.1f} s), tokenizer: {st['tokenizer']}"
        for key, st in m.get("students", {}).items()
    ]
    lines += [
        f"trajectories ({key}): {wl['trajectories']} of {wl['min']:,}-{wl['max']:,} tokens (median "
        f"{wl['median']:,.0f}, mean {wl['mean']:,.0f}; {wl['response_share']:.0%} response), plus {len(wl['long'])} of "
        f"{max(wl['long'], default=0):,}; text: {wl['data']}"
        for key, wl in run.report.raw.get("workload", {}).items()
    ]
    if big := m.get("students", {}).get("big"):
        lines.append(big["flops_formula"])
    peak, why = m["peak"]
    m["setup_lines"] = [*lines, f"peak: {peak:,.1f} TFLOP/s ({why})"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out/long")))
    p.add_argument("--dry-run", action="store_true", help="tiny configs, 8 short trajectories, on CPU")
    p.add_argument("--phases", default="abcdefgh", help="a subset of abcdefgh (b needs a; g needs a, d)")
    p.add_argument("--n", type=int, default=256, help="trajectories of 1k-16k tokens")
    p.add_argument("--n-long", type=int, default=4, help="trajectories of 32k tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=560.0, help="the whole run's time budget")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: by device name)")
    p.add_argument("--tokenizers", type=Path, default=None, help="folder of <student>/tokenizer.json (the bundle)")
    p.add_argument("--data", type=Path, default=ZEROEVAL, help="teacher trajectories")
    p.add_argument("--profile", action="store_true", help="record the kernel profile even if no target misses")
    args = p.parse_args(argv)
    args.workload = ls.DRY_WORKLOAD if args.dry_run else ls.Workload(n=args.n, n_long=args.n_long, seed=args.seed)
    args.context = args.workload.long
    return args


def main(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    phases = "".join(sorted(set(args.phases + "".join(NEEDS.get(p, "") for p in args.phases))))
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_long: no CUDA device here; use --dry-run for the CPU smoke run")
    work = Path(tempfile.mkdtemp(prefix="bench-long-"))  # model folders: configs + tokenizer copies, no weights
    try:
        return run_all(Run(args, Report(args.out, args.dry_run), device, phases, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_all(run: Run) -> Report:
    run.report.meta["hardware"] = hardware(run)
    run.report.meta["peak"] = peak_tflops(run.report.meta["hardware"].get("gpu", "cpu"), run.args.peak_tflops)
    big, small = (ls.QWEN_TINY, ls.GEMMA_TINY) if run.args.dry_run else (ls.QWEN25_7B, ls.GEMMA3_1B)
    steps = {"big": (big, {"a": phase_a, "b": phase_b, "d": phase_d, "g": phase_g, "e": phase_e, "c": phase_c}),
             "small": (small, {"f": phase_f, "h": phase_h})}  # fmt: skip
    for key, (arch, phases) in steps.items():
        if not any(p in run.phases for p in phases):
            for p in phases:
                run.report.skip(p, "not selected (--phases)")
            continue
        s = build_or_skip(run, key, arch, "".join(phases))
        for name, fn in phases.items() if s else ():
            run.phase(name, fn, s)
        if s and key == "big" and (run.args.dry_run or run.args.profile or run.report.missed("big")):
            run.phase("profile", lambda r, s: setattr(r.report, "profile", kernel_profile(r, s)), s, forced=True)
        del s
        run.free()
    describe(run)
    run.report.write()
    print("\n" + run.report.markdown(), flush=True)
    return run.report


def build_or_skip(run: Run, key: str, arch: ls.Arch, names: str) -> Scored | None:
    print(f"[{time.monotonic() - run.start:6.1f} s] build {key}: {arch.label}", flush=True)
    try:
        return make_scored(run, key, arch)
    except Exception:  # recorded, and the other student's phases still run
        run.report.errors[f"build {key}"] = traceback.format_exc()
        print(run.report.errors[f"build {key}"], file=sys.stderr, flush=True)
        for p in names:
            run.report.skip(p, f"building the {key} student failed (see Errors)")
        run.report.write()
        return None


if __name__ == "__main__":
    main()
