"""A brute-force reference scorer: one sequence at a time, the model's own full logits, float32, token by token."""

from __future__ import annotations

import torch

from rsr.metric import TrajectoryStats


def reference_stats(student, messages, max_tokens: int | None = None) -> TrajectoryStats:
    p = student.prepare(messages, max_tokens=max_tokens)
    ids = torch.tensor([p.ids])
    with torch.inference_mode():
        logits = student.model(input_ids=ids).logits[0].float()
    ranks, surprisals = [], []
    for pos in p.scored:
        row, target = logits[pos - 1], p.ids[pos]
        ranks.append(1 + int((row > row[target]).sum()))
        surprisals.append(float(-torch.log_softmax(row.double(), dim=0)[target]))
    return TrajectoryStats.from_tokens(
        torch.tensor(ranks), torch.tensor(surprisals, dtype=torch.float64), truncated=p.truncated
    )
