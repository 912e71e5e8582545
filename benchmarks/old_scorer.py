"""The scorer as it was before exact scoring (issue 9), kept as a baseline for benchmarks/bench_exact.py.

Length-sorted padded batches of up to `batch_tokens` padded tokens through the body, then the LM head in the
model's dtype (bf16 logits in a bf16 model) in 64 MB chunks. Its scores depend on the batch composition and,
in bf16, on logits rounded to bf16. Same tokens and scored positions as the product (`Student.prepare`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsr.metric import TrajectoryStats, token_ranks_surprisals
from rsr.score.student import Prepared, Student


def length_sorted_batches(prepared: Sequence[Prepared], batch_tokens: int) -> list[list[Prepared]]:
    """Longest first, each batch's padded size (rows x longest) within the token budget."""
    batches: list[list[Prepared]] = []
    for p in sorted(prepared, key=lambda p: len(p.ids), reverse=True):
        if batches and (len(batches[-1]) + 1) * len(batches[-1][0].ids) <= batch_tokens:
            batches[-1].append(p)
        else:
            batches.append([p])
    return batches


@torch.inference_mode()
def old_score(student: Student, prepared: Sequence[Prepared], batch_tokens: int = 8192) -> list[TrajectoryStats]:
    """TrajectoryStats per prepared conversation, in the order given."""
    out: dict[int, TrajectoryStats] = {}
    for batch in length_sorted_batches(prepared, batch_tokens):
        for p, stats in zip(batch, _score_batch(student, batch), strict=True):
            out[id(p)] = stats
    return [out[id(p)] for p in prepared]


def _score_batch(student: Student, batch: list[Prepared]) -> list[TrajectoryStats]:
    width = max(len(p.ids) for p in batch)
    pad = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    for row, p in enumerate(batch):
        ids[row, : len(p.ids)] = torch.tensor(p.ids)
    ids = ids.to(student.device)
    hidden = student.model.base_model(input_ids=ids).last_hidden_state
    rows = torch.cat([torch.full((len(p.scored),), r, dtype=torch.long) for r, p in enumerate(batch)])
    cols = torch.cat([torch.tensor(p.scored, dtype=torch.long) for p in batch])
    ranks, surprisals = _ranks_surprisals(student, hidden[rows, cols - 1], ids[rows, cols])
    out, start = [], 0
    for p in batch:
        n = len(p.scored)
        r, s = ranks[start : start + n], surprisals[start : start + n]
        out.append(TrajectoryStats.from_tokens(r, s, student.r_max, p.truncated))
        start += n
    return out


def _ranks_surprisals(student: Student, hidden: torch.Tensor, targets: torch.Tensor):
    head = student.model.get_output_embeddings()
    vocab = head.weight.shape[0]
    chunk = max(1, (64 << 20) // (vocab * 4))
    softcap = getattr(student.model.config, "final_logit_softcapping", None)
    ranks, surprisals = [], []
    for i in range(0, hidden.shape[0], chunk):
        logits = head(hidden[i : i + chunk])  # in the model's dtype: bf16 logits in a bf16 model
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        r, s = token_ranks_surprisals(logits, targets[i : i + chunk])
        ranks.append(r)
        surprisals.append(s)
    return torch.cat(ranks).cpu(), torch.cat(surprisals).cpu()
