"""A/B on the GPU: batch_tokens and the LM-head chunking of the fast scorer, in one process.

    python benchmarks/gpu/batch_ab.py [ROUNDS]      (AB_DEVICE=cpu AB_N=16 for a smoke run without a GPU)

"old" is the scorer's head loop as it was before 2026-11-26 (64 MB chunks, one host copy per chunk); "new" is
Student._ranks_surprisals as it is now (when the committed results were measured it used 1 GB chunks; now
64 MB). Variants run in interleaved rounds (order flipped every round, round 0 a warm-up); medians.
Results: benchmarks/results/cuda-h100-batch.md.
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_scorer as b  # noqa: E402

from rsr import student as st  # noqa: E402
from rsr.metric import token_ranks_surprisals  # noqa: E402


def old_ranks_surprisals(self, hidden, targets):
    head = self.model.get_output_embeddings()
    chunk = max(1, (64 << 20) // (head.weight.shape[0] * 4))
    ranks, surprisals = [], []
    for i in range(0, hidden.shape[0], chunk):
        r, s = token_ranks_surprisals(head(hidden[i : i + chunk]), targets[i : i + chunk])
        ranks.append(r.cpu())
        surprisals.append(s.cpu())
    return torch.cat(ranks), torch.cat(surprisals)


new_ranks_surprisals = st.Student._ranks_surprisals
DEV = os.environ.get("AB_DEVICE", "cuda")
GPU = DEV == "cuda"
convs = b.load_conversations(int(os.environ.get("AB_N", "400")))
rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
for dtype, variants in (
    ("bfloat16", [("old", 8192), ("new", 8192), ("new", 32768), ("new", 65536)]),
    ("float32", [("old", 8192), ("new", 8192), ("new", 32768)]),
):
    s = st.Student.load("smollm2-135m", dtype=dtype, device=DEV)
    prepared = [s.prepare(c) for c in convs]
    resp = sum(len(p.scored) for p in prepared)
    times = {v: [] for v in variants}
    peaks, rsr = {}, {}
    for r in range(rounds + 1):  # round 0 = warm-up
        for v in variants if r % 2 else variants[::-1]:
            st.Student._ranks_surprisals = old_ranks_surprisals if v[0] == "old" else new_ranks_surprisals
            if GPU:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            out = s.score(convs, batch_tokens=v[1], progress=False)
            if GPU:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            if r:
                times[v].append(dt)
            peaks[v] = torch.cuda.max_memory_allocated() / 2**20 if GPU else 0
            rsr[v] = [o.stats.rsr for o in out]
    base = statistics.median(times[variants[0]])
    ref = rsr[variants[0]]
    where = torch.cuda.get_device_name(0) if GPU else DEV
    print(f"\n{where} {dtype}: {len(convs)} trajectories, {resp} response tokens, {rounds} rounds")
    print("| variant | batch_tokens | median s | response tok/s | speed-up vs old 8192 | peak MB | max RSR rel diff |")
    print("|---|---|---|---|---|---|---|")
    for v in variants:
        m = statistics.median(times[v])
        diff = max(abs(a - c) / abs(c) for a, c in zip(rsr[v], ref, strict=True))
        print(
            f"| {v[0]} | {v[1]} | {m:.2f} ({', '.join(f'{x:.2f}' for x in times[v])}) | {resp / m:,.0f} | "
            f"{base / m:.2f}x | {peaks[v]:,.0f} | {diff:.1e} |",
            flush=True,
        )
    del s
    if GPU:
        torch.cuda.empty_cache()
