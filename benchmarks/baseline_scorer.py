"""The baseline scorer, written the way the paper's authors score (their released code), without the product's
machinery. It is the speed and memory baseline of bench_scorer.py and gpu/bench_long.py, and the test oracle of
tests/integration/test_scorer_matches_reference.py.

- fixed batches of `batch_size` conversations in input order, right-padded, with an attention mask;
- the model's full `[batch, seq, vocab]` logits from its own forward (its logit scaling / softcapping included),
  cast to float32;
- rank = 1 + #{v : logit_v > logit_target} (strictly greater), surprisal = logsumexp(logits) - logit_target.

`baseline_score` takes `Student.prepare`'s token ids, so it scores exactly the tokens the product scores. One
concession to a CPU box: a batch whose float32 logits and their temporaries would exceed `max_logits_gib` is halved
until it fits (it only removes padding, so it can only make the baseline faster); a single sequence is never split.

`reference` is the oracle: it shares no code with the product beyond the model, tokenizer and chat template. For
each assistant turn it renders the conversation before it with add_generation_prompt=True (the prefix), appends
the response text, tokenises prefix and prefix + response (the authors' split), runs the whole sequence once and
scores every token after the prefix, in float64 from a float32 student's logits. Its ranks are an interval
[lo, hi] (lo counts logits above target + tol, hi those above target - tol): two float32 GEMMs that sum in another
order legitimately decide such near-ties differently, so an exact scorer's rank must lie in the interval, which is
a point wherever no other logit is within tol of the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rsr.metric import TrajectoryStats
from rsr.score.student import Prepared, Student

BATCH_SIZE = 8
MAX_LOGITS_GIB = 6.0
REL_TOL = 2e-5  # of max(1, |target logit|): float32 summation-order error over a few hundred terms, with margin


def ranks_surprisals(
    logits: torch.Tensor, targets: torch.Tensor, tol: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rank_lo, rank_hi, surprisal) of each target under its row of logits ([..., vocab]; targets [...]).
    With tol=0 the rank is a point: rank_lo == rank_hi == 1 + #{strictly greater}."""
    t = logits.gather(-1, targets.unsqueeze(-1))
    surprisal = torch.logsumexp(logits, dim=-1) - t.squeeze(-1)
    if not tol:
        rank = 1 + (logits > t).sum(dim=-1)
        return rank, rank, surprisal
    margin = tol * t.abs().clamp(min=1.0)
    return 1 + (logits > t + margin).sum(dim=-1), (logits > t - margin).sum(dim=-1), surprisal


# ---------------------------------------------------------------------------------------------------------------
# The speed baseline
# ---------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def baseline_score(
    student: Student,
    prepared: Sequence[Prepared],
    batch_size: int = BATCH_SIZE,
    max_logits_gib: float = MAX_LOGITS_GIB,
) -> list[TrajectoryStats]:
    """One TrajectoryStats per prepared conversation, in order."""
    model, device = student.model, student.device
    pad = student.tokenizer.pad_token_id if student.tokenizer.pad_token_id is not None else 0
    out: list[TrajectoryStats] = []
    for batch in fixed_batches(prepared, batch_size, int(model.config.vocab_size), max_logits_gib):
        ids = torch.full((len(batch), max(len(p.ids) for p in batch)), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(batch):
            ids[row, : len(p.ids)], mask[row, : len(p.ids)] = torch.tensor(p.ids), 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()  # [B, T, V]
        # Every position predicts the next token; the scored ones are picked afterwards.
        ranks, _, surprisals = ranks_surprisals(logits[:, :-1], ids[:, 1:])
        del logits
        for row, p in enumerate(batch):
            at = torch.tensor(p.scored, device=device) - 1  # position k - 1 predicts token k
            r, s = ranks[row, at].cpu().numpy(), surprisals[row, at].cpu().numpy()
            out.append(TrajectoryStats.from_tokens(r, s, student.r_max, p.truncated))
    return out


def fixed_batches(
    prepared: Sequence[Prepared], batch_size: int, vocab: int, max_logits_gib: float = MAX_LOGITS_GIB
) -> list[list[Prepared]]:
    """Batches of batch_size in input order; one whose float32 logits (x2, for temporaries) exceed the cap is halved."""

    def split(batch: list[Prepared]) -> list[list[Prepared]]:
        size = 2 * 4 * len(batch) * max(len(p.ids) for p in batch) * vocab
        if len(batch) == 1 or size <= max_logits_gib * 2**30:
            return [batch]
        return split(batch[: len(batch) // 2]) + split(batch[len(batch) // 2 :])

    return [b for i in range(0, len(prepared), batch_size) for b in split(list(prepared[i : i + batch_size]))]


def baseline_score_conversations(
    student: Student, conversations: Sequence[Sequence[dict]], max_tokens: int | None = None, **kwargs
) -> list[TrajectoryStats]:
    """Prepare (the product's tokens and truncation) then score with the baseline."""
    prepared = [student.prepare(m, max_tokens=max_tokens, index=i) for i, m in enumerate(conversations)]
    return baseline_score(student, prepared, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# The test oracle
# ---------------------------------------------------------------------------------------------------------------
class BoundaryMerge(AssertionError):
    """prefix + response does not tokenise as the prefix's tokens followed by more: the authors' split is ambiguous."""


@dataclass
class Reference:
    rank_lo: torch.Tensor  # [n] int64
    rank_hi: torch.Tensor  # [n] int64
    surprisal: torch.Tensor  # [n] float64
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return int(self.rank_lo.numel())

    def sum_rank_bounds(self, r_max: int | None = None) -> tuple[float, float]:
        lo, hi = self.rank_lo, self.rank_hi
        if r_max is not None:
            lo, hi = lo.clamp(max=r_max), hi.clamp(max=r_max)
        return float(lo.sum()), float(hi.sum())

    @property
    def sum_surprisal(self) -> float:
        return float(self.surprisal.sum())


def reference(
    student: Student,
    messages: list[dict],
    max_tokens: int | None = None,
    trim: bool = False,
    split_at_chars: bool = False,
) -> Reference:
    """trim: the template trims content (llama3's `| trim`), so the response text it renders is content.strip().

    split_at_chars: where prefix + response does not tokenise as the prefix's own tokens followed by more (llama3's
    header ends in "\n\n", one token alone but "\n" + "\n" before a letter), the authors' token-count split is off
    by one; then the response starts at the first token ending past the prefix's characters.
    """
    if student.model.dtype != torch.float32:
        raise ValueError("the reference scores a float32 student (its own logits, in float32, then float64)")
    parts, truncated = [], False
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = student.tokenizer.apply_chat_template(
            messages[:i], chat_template=student.chat_template, tokenize=False, add_generation_prompt=True
        )
        response = message["content"].strip() if trim else message["content"]
        (prefix_ids, _), (ids, ends) = _encode(student.tokenizer, prefix), _encode(student.tokenizer, prefix + response)
        start = len(prefix_ids)
        if ids[:start] != prefix_ids:
            if not split_at_chars:
                raise BoundaryMerge(f"turn {i}: the prefix's last tokens differ once the response follows")
            start = next(p for p, end in enumerate(ends) if end > len(prefix))
        if max_tokens is not None and len(ids) > max_tokens:
            ids, truncated = ids[:max_tokens], True
        parts.append(_score_from(student, ids, start))
    lo, hi, s = (torch.cat([p[k] for p in parts]) for k in range(3))
    return Reference(lo, hi, s, truncated)


def _encode(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """Token ids and each token's end offset in characters."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, ends = list(enc["input_ids"]), [e for _, e in enc["offset_mapping"]]
    bos = tokenizer.bos_token_id
    # A tokenizer that adds BOS by default gets one, as in training, unless the template wrote it already.
    if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] and ids[:1] != [bos]:
        ids, ends = [bos, *ids], [0, *ends]
    return ids, ends


@torch.inference_mode()
def _score_from(student: Student, ids: list[int], start: int) -> tuple[torch.Tensor, ...]:
    """Rank interval and surprisal of every token from position `start` on, one unpadded forward."""
    x = torch.tensor([ids], device=student.device)
    logits = student.model(input_ids=x).logits[0, start - 1 : -1].double()
    return tuple(t.cpu() for t in ranks_surprisals(logits, x[0, start:], tol=REL_TOL))


def main() -> None:
    """`python -m benchmarks.baseline_scorer IN.jsonl OUT.jsonl [--student REF] [--dtype D]`: the authors' method as
    a whole command (bench_vs_authors times it against `rsr score`): one {"rsr": ...} line per record of IN (the
    messages format), in order."""
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    student = Student.load(args.student, dtype=args.dtype)
    with open(args.input, encoding="utf-8") as f:
        conversations = [json.loads(line)["messages"] for line in f if line.strip()]
    with open(args.output, "w", encoding="utf-8") as f:
        for stats in baseline_score_conversations(student, conversations):
            f.write(json.dumps({"rsr": stats.rsr}) + "\n")


if __name__ == "__main__":
    main()
