"""The naive RSR scorer: the baseline `bench_scorer.py` measures the fast scorer against.

Written in the style of the paper authors' released scoring code, on purpose without the fast path's tricks:
- fixed batches of 8 conversations in input (file) order, right-padded with the tokenizer's pad id and an
  attention mask (so SDPA gets an explicit mask instead of its fused causal path);
- the model's full `[batch, seq, vocab]` logits are materialised (`model(input_ids, attention_mask).logits`) and
  cast to float32 (`.float()`), then `log_softmax` over the whole vocabulary;
- surprisal = -log_softmax[target];
- rank via `torch.topk(log_probs, k=r_max)`: rank = 1 + #{top-r_max log-probs strictly greater than the target's},
  then clipped at r_max. For every token whose strictly-greater count c < r_max this is exactly 1 + c (all greater
  tokens are inside the top r_max); otherwise it is r_max + 1 and clips to r_max, as 1 + c does. So the clipped
  rank equals the metric's `min(1 + #{v: logit_v > logit_target}, r_max)`; only the unclipped sum differs
  (the naive path cannot see beyond r_max and reports r_max + 1 there).

It takes the token ids from `Student.prepare`, so both scorers see identical tokens and scored positions.

One concession to the 24 GB benchmark box: a batch of 8 whose float32 logits + log-probs would exceed
`max_logits_gib` (default 6 GiB; a batch padded to a 5k-token trajectory needs 17 GB with a 49k vocabulary) is
split in halves until it fits, as one would have to do by hand. This only ever removes padding, so it can only
make the baseline faster. A single sequence is never split (the peak-memory measurement scores one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rsr.metric import TrajectoryStats
from rsr.score.student import Prepared, Student

BATCH_SIZE = 8
MAX_LOGITS_GIB = 6.0


@torch.inference_mode()
def naive_score_prepared(
    student: Student,
    prepared: Sequence[Prepared],
    batch_size: int = BATCH_SIZE,
    max_logits_gib: float = MAX_LOGITS_GIB,
) -> list[TrajectoryStats]:
    """Score already-prepared conversations; one TrajectoryStats per item, in order."""
    model, device, r_max = student.model, student.device, student.r_max
    vocab = int(model.config.vocab_size)
    pad = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    out: list[TrajectoryStats] = []
    for batch in split_batches(prepared, batch_size, vocab, max_logits_gib):
        width = max(len(p.ids) for p in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, p in enumerate(batch):
            input_ids[row, : len(p.ids)] = torch.tensor(p.ids)
            attention_mask[row, : len(p.ids)] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()  # [B, T, V]
        log_probs = torch.log_softmax(logits, dim=-1)  # [B, T, V] float32
        # Every position predicts the next token (a view, no copy); the scored ones are picked afterwards.
        pred = log_probs[:, :-1]  # [B, T-1, V]
        target_lp = pred.gather(2, input_ids[:, 1:].unsqueeze(-1))  # [B, T-1, 1]
        top = torch.topk(pred, k=r_max, dim=2).values  # [B, T-1, r_max]
        ranks_all = 1 + (top > target_lp).sum(dim=2)  # [B, T-1], in 1..r_max+1; clipped by TrajectoryStats
        surprisals_all = -target_lp.squeeze(2)  # [B, T-1]
        for row, p in enumerate(batch):
            at = torch.tensor(p.scored, dtype=torch.long, device=device) - 1  # position p - 1 predicts token p
            ranks, surprisals = ranks_all[row, at].cpu(), surprisals_all[row, at].cpu()
            out.append(TrajectoryStats.from_tokens(ranks, surprisals, r_max, p.truncated))
        del logits, log_probs, pred, top
    return out


def split_batches(
    prepared: Sequence[Prepared], batch_size: int, vocab: int, max_logits_gib: float = MAX_LOGITS_GIB
) -> list[list[Prepared]]:
    """Fixed batches of batch_size in input order; one whose float32 logits + log-probs exceed the cap is halved."""

    def fits(batch: Sequence[Prepared]) -> bool:
        return len(batch) == 1 or 2 * 4 * len(batch) * max(len(p.ids) for p in batch) * vocab <= max_logits_gib * 2**30

    def halve(batch: list[Prepared]) -> list[list[Prepared]]:
        if fits(batch):
            return [batch]
        mid = len(batch) // 2
        return halve(batch[:mid]) + halve(batch[mid:])

    out: list[list[Prepared]] = []
    for start in range(0, len(prepared), batch_size):
        out.extend(halve(list(prepared[start : start + batch_size])))
    return out


def naive_score(
    student: Student,
    conversations: Sequence[Sequence[dict]],
    batch_size: int = BATCH_SIZE,
    max_tokens: int | None = None,
) -> list[TrajectoryStats]:
    """Prepare (same tokens as the fast path, same truncation) then score naively."""
    prepared = [student.prepare(msgs, max_tokens=max_tokens, index=i) for i, msgs in enumerate(conversations)]
    return naive_score_prepared(student, prepared, batch_size)
