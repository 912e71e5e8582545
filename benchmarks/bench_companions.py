"""What do the companion metrics (entropy, top-1 share) cost the scorer, and how near is it to this box's GEMM rate?

On GSM8K trajectories (--gsm8k: a file in GSM8K's schema, `question` + `answer`, e.g. data/train.jsonl of
github.com/openai/grade-school-math; conversation = [user: question, assistant: answer]), in one process:

1. score each of the first --n trajectories with `Student.score` (what `rsr score` runs, after reading the file
   and loading the model) with the companion metrics and without them (ExactHead.entropy, the internal switch),
   back to back, the order alternating from one trajectory to the next (--repeats rounds): the box's load, which
   drifts over minutes on a shared machine, falls on both sides alike. Wall and CPU seconds are summed per side;
   the RSR statistics must be the same bits both ways;
2. count the FLOPs the scorer must do: each distinct prompt's forward once (a problem's teachers share it), each
   response's forward over the prompt's cache, i.e. 2 x the body's linear weights per token plus attention
   (4 x heads x head_dim per query per key attended), and the LM head on the scored positions only
   (2 x hidden x vocab each); rank, logsumexp and entropy passes are not counted;
3. measure this box's own GEMM rate in the same run and threads: torch.mm on --gemm-size square matrices, in
   bfloat16 and float32, by wall time (best run) and by CPU time; the scorer's achieved rate (FLOPs / seconds
   with the metrics) as a share of the rate in the scorer's dtype is how near it is to what the box can do. On a
   shared box CPU time is the fair measure for both (wall time counts the other jobs' turns too).

    .venv/bin/python -m benchmarks.bench_companions --gsm8k /tmp/gsm8k/train.jsonl             # ~15 min here
    .venv/bin/python -m benchmarks.bench_companions --gsm8k FILE --n 40                         # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks._common import RESULTS, Conversation, cpu_name, loadavg, table
from rsr.score.student import Prepared, Student


def gsm8k_conversations(path: Path, n: int) -> list[Conversation]:
    convs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            convs.append(
                [{"role": "user", "content": rec["question"]}, {"role": "assistant", "content": rec["answer"]}]
            )
            if len(convs) == n:
                break
    if not convs:
        raise SystemExit(f"{path}: no GSM8K records (question, answer) read")
    return convs


def body_shape(student: Student) -> dict[str, int]:
    """What the FLOP count needs: the body's linear weights (embeddings are lookups), its attention width and
    layers, the head's size."""
    body = student.model.base_model
    linear = sum(m.weight.numel() for m in body.modules() if isinstance(m, torch.nn.Linear))
    cfg = student.model.config
    heads, dim = cfg.num_attention_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    vocab, hidden = student.head.weight.shape
    return {"linear": linear, "attn": heads * dim, "layers": cfg.num_hidden_layers, "vocab": vocab, "hidden": hidden}


def _attended(start: int, stop: int) -> int:
    """Keys attended by the queries at positions start .. stop - 1 (causal: position i sees i + 1 keys)."""
    return (stop * (stop + 1) - start * (start + 1)) // 2


def flops(prepared: list[Prepared], shape: dict[str, int]) -> dict[str, float]:
    """The work the scorer must do, as its hot path does it (Student._score_one): a prompt's forward once per run
    of trajectories sharing it, each response's forward over its cache, the head on scored positions."""
    tokens = keys = scored = 0
    last_prompt = None
    for p in sorted(prepared, key=lambda p: (p.ids[: p.scored[0]], p.index)):  # the scorer's order (_by_prompt)
        split, last = p.scored[0], p.scored[-1]
        if p.ids[:split] != last_prompt:
            tokens, keys, last_prompt = tokens + split, keys + _attended(0, split), p.ids[:split]
        tokens, keys, scored = tokens + (last - split), keys + _attended(split, last), scored + len(p.scored)
    body = 2 * shape["linear"] * tokens + 4 * shape["attn"] * shape["layers"] * keys
    head = 2 * shape["hidden"] * shape["vocab"] * scored
    return {"body": float(body), "head": float(head), "total": float(body + head), "tokens": tokens, "scored": scored}


def gemm_rate(dtype: torch.dtype, size: int, seconds: float = 3.0) -> dict[str, float]:
    """GFLOP/s of torch.mm on [size, size] x [size, size] in `dtype` for ~`seconds`: the best run by wall time, and
    all runs by CPU time."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # oneDNN / MKL pick their kernels on the first call
    best, runs, until, cpu = 0.0, 0, time.perf_counter() + seconds, time.process_time()
    while time.perf_counter() < until:
        started = time.perf_counter()
        torch.mm(a, b)
        best, runs = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9), runs + 1
    return {"wall": best, "cpu": runs * 2 * size**3 / (time.process_time() - cpu) / 1e9}


def score(student: Student, convs: list[Conversation], entropy: bool) -> list:
    student.head.entropy = entropy
    try:
        results = student.score(convs, progress=False)
    finally:
        student.head.entropy = True
    if bad := [r.error for r in results if r.stats is None]:
        raise SystemExit(f"{len(bad)} conversations failed to score, e.g. {bad[0]}")
    return [r.stats for r in results]


def paired_seconds(student: Student, convs: list[Conversation], repeats: int) -> tuple[dict, dict, bool]:
    """Wall and CPU seconds per side ("with", "without"), each conversation scored both ways back to back in an
    alternating order; and whether the RSR statistics were the same bits both ways."""
    wall, cpu = {"with": 0.0, "without": 0.0}, {"with": 0.0, "without": 0.0}
    same = True
    for rep in range(repeats):
        for i, conv in enumerate(convs):
            got = {}
            for name in ("with", "without") if (i + rep) % 2 == 0 else ("without", "with"):
                w, c = time.perf_counter(), time.process_time()
                got[name] = score(student, [conv], name == "with")[0]
                wall[name] += time.perf_counter() - w
                cpu[name] += time.process_time() - c
            a, b = got["with"], got["without"]
            same &= (a.n_tokens, a.sum_rank, a.sum_surprisal) == (b.n_tokens, b.sum_rank, b.sum_surprisal)
            if (i + 1) % 50 == 0:
                done = f"wall with/without {wall['with']:.0f}/{wall['without']:.0f} s"
                done += f", CPU {cpu['with']:.0f}/{cpu['without']:.0f} s"
                print(f"  rep {rep}: {i + 1} trajectories, {done} (load {loadavg():.1f})", flush=True)
    return wall, cpu, same


def run(args: argparse.Namespace) -> dict:
    student = Student.load(args.student, dtype=args.dtype)
    convs = gsm8k_conversations(args.gsm8k, args.n)
    prepared = [student.prepare(c, index=i) for i, c in enumerate(convs)]
    work = flops(prepared, body_shape(student))
    score(student, convs[:4], True), score(student, convs[:4], False)  # warm-up: kernel choice, oneDNN JIT
    wall, cpu, same = paired_seconds(student, convs, args.repeats)
    gemm = {
        name: gemm_rate(dt, args.gemm_size) for name, dt in (("bfloat16", torch.bfloat16), ("float32", torch.float32))
    }
    dtype = str(student.dtype).removeprefix("torch.")
    sides = {"wall": wall, "cpu": cpu}
    achieved = {k: work["total"] * args.repeats / v["with"] / 1e9 for k, v in sides.items()}
    return {"wall_s": wall, "cpu_s": cpu, "ratio": {k: v["with"] / v["without"] for k, v in sides.items()},
            "rsr_identical": same, "flops": work, "gemm_gflops": gemm, "achieved_gflops": achieved, "dtype": dtype,
            "share_of_gemm": {k: achieved[k] / gemm[dtype][k] for k in achieved}, "trajectories": len(convs),
            "repeats": args.repeats}  # fmt: skip


def report(args: argparse.Namespace, res: dict, meta: dict) -> str:
    w, wall, cpu, g, r = res["flops"], res["wall_s"], res["cpu_s"], res["gemm_gflops"], res["ratio"]
    dt, ach, share = res["dtype"], res["achieved_gflops"], res["share_of_gemm"]
    rows = [
        ["scoring time with / without the companion metrics, CPU",
         f"{cpu['with']:.1f} s / {cpu['without']:.1f} s", f"**{r['cpu']:.3f}x**"],
        ["the same, wall", f"{wall['with']:.1f} s / {wall['without']:.1f} s", f"{r['wall']:.3f}x"],
        ["RSR statistics the same bits both ways", "", "yes" if res["rsr_identical"] else "**NO**"],
        ["FLOPs the scorer must do (body + head)", f"{w['body'] / 1e12:.2f} + {w['head'] / 1e12:.2f} TFLOP",
         f"{w['tokens']:,} body tokens (each prompt once), {w['scored']:,} scored positions"],
        ["this box's GEMM rate, bfloat16 / float32, CPU time",
         f"{g['bfloat16']['cpu']:.0f} / {g['float32']['cpu']:.0f} GFLOP/s",
         f"torch.mm {args.gemm_size}x{args.gemm_size}; best run by wall time: {g['bfloat16']['wall']:.0f} / "
         f"{g['float32']['wall']:.0f}"],
        ["the scorer's achieved rate (with the metrics), CPU time", f"{ach['cpu']:.0f} GFLOP/s",
         f"**{share['cpu']:.0%}** of the box's {dt} GEMM rate"],
        ["the same, wall time", f"{ach['wall']:.0f} GFLOP/s", f"{share['wall']:.0%} of the best {dt} GEMM run"],
    ]  # fmt: skip
    head = (
        f"{meta['hardware']}; torch {torch.__version__}; {args.threads} torch thread(s); student `{args.student}` in "
        f"{dt}; {res['trajectories']} GSM8K trajectories from {args.gsm8k.name}, each scored with and without the "
        f"metrics back to back ({res['repeats']} round(s)); wall time {meta['wall_s'] / 60:.1f} min; 1-min load "
        f"average {meta['load'][0]:.1f} at start, {meta['load'][1]:.1f} at end."
    )
    title = "# The companion metrics' cost and the scorer's share of the GEMM rate (benchmarks/bench_companions.py)"
    return "\n\n".join([title, head, table(["what", "measured", "detail"], rows)]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsm8k", type=Path, default=os.environ.get("RSR_GSM8K"), help="GSM8K-schema JSONL ($RSR_GSM8K)")
    ap.add_argument("--n", type=int, default=400, help="trajectories (default 400)")
    ap.add_argument("--repeats", type=int, default=1, help="rounds over the trajectories (default 1)")
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 on AVX512-BF16/AMX CPUs) | float32 | bfloat16")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: 2 ran 4-15x slower on 2 shared cores)"
    )
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.gsm8k is None or not Path(args.gsm8k).is_file():
        raise SystemExit("give --gsm8k FILE (GSM8K's data/train.jsonl: github.com/openai/grade-school-math)")
    torch.set_num_threads(args.threads)
    started, load = time.perf_counter(), [loadavg()]
    res = run(args)
    meta = {"hardware": f"{cpu_name()} ({os.cpu_count()} cores)", "load": [*load, loadavg()]}
    meta["wall_s"] = time.perf_counter() - started
    text = report(args, res, meta)
    print("\n" + text, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu-companions.md").write_text(text, encoding="utf-8")
    (args.out / "cpu-companions.json").write_text(json.dumps({"meta": meta, "result": res}, indent=2), encoding="utf-8")
    print(f"wrote {args.out / 'cpu-companions.md'} and .json", flush=True)


if __name__ == "__main__":
    main()
