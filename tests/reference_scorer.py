"""An independent brute-force reference, written the way the paper's authors score a response.

For each assistant turn: render the conversation before it with add_generation_prompt=True (the prefix), append
the response text, tokenise the prefix and prefix + response, run the whole sequence once, and score every token
after the prefix from the full-vocabulary logits. It shares no code with the scorer (no `render`, no `prepare`,
no span finding): only the student's model, tokenizer and chat template.

Logits: a float32 student's own forward (`model(ids).logits`, its scaling and softcapping included); for a bfloat16
student, the final hidden state times the head weights as the model holds them, in float64 (no logit transform:
use it on plain students only).

Ranks come as an interval [lo, hi]: lo counts logits above target + tol, hi those above target - tol. Two float32
GEMMs that sum in different orders legitimately decide such near-ties differently, so an exact scorer's rank must
lie in the interval; the interval is a point wherever no other logit is within tol of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

REL_TOL = 2e-5  # of max(1, |target logit|): float32 summation-order error over a few hundred terms, with margin


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
    student, messages: list[dict], max_tokens: int | None = None, trim: bool = False, split_at_chars: bool = False
) -> Reference:
    """trim: the template trims content (llama3's `| trim`), so the response text it renders is content.strip().

    split_at_chars: where prefix + response does not tokenise as the prefix's own tokens followed by more (llama3's
    header ends in "\n\n", one token alone but "\n" + "\n" before a letter), the authors' token-count split is off
    by one; then the response starts at the first token ending past the prefix's characters.
    """
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
        parts.append(_score_positions(student, ids, range(start, len(ids))))
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
def _score_positions(student, ids: list[int], positions: range):
    model = student.model
    x = torch.tensor([ids], device=student.device)
    if model.dtype == torch.float32:
        logits = model(input_ids=x).logits[0, positions.start - 1 : positions.stop - 1].double()
    else:
        hidden = model.base_model(input_ids=x).last_hidden_state[0, positions.start - 1 : positions.stop - 1]
        weight = model.get_output_embeddings().weight
        logits = hidden.double() @ weight.double().T
    targets = torch.tensor(ids[positions.start : positions.stop], device=logits.device)
    t = logits.gather(1, targets.view(-1, 1))
    tol = REL_TOL * t.abs().clamp(min=1.0)
    rank_lo = 1 + (logits > t + tol).sum(dim=1)
    rank_hi = 1 + (logits > t - tol).sum(dim=1) - 1  # the target itself is within tol of itself
    surprisal = torch.logsumexp(logits, dim=1) - t.squeeze(1)
    return rank_lo.cpu(), rank_hi.cpu(), surprisal.cpu()
