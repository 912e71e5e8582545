"""The companion metrics of the scorer's same pass (mean_entropy, top1_share) on GSM8K-schema trajectories read by
`rsr score`'s own reader, in float32, against our own reference written from the definitions: the model's own
forward over the whole conversation (full-vocabulary logits), softmax, H = -sum p log p, top-1 = no logit above
the target's."""

from __future__ import annotations

from pathlib import Path

import torch

from rsr.score.io import read_score_input
from rsr.score.student import token_ranks_surprisals, token_ranks_surprisals_entropies
from tests.support.gsm8k_style import RECORDS, write_gsm8k_style

NEAR_TIE = 1e-4  # logits this close to the target's may order either way between two float32 computations


@torch.inference_mode()
def _reference(student, messages: list[dict]) -> tuple[float, int, int, int]:
    """(mean entropy, top-1 count for sure, top-1 count allowing near-ties, tokens) of the answer turn, from the
    model's own forward on prompt + response. The response tokens are those after the prompt's tokens and before
    the end-of-turn marker."""
    tok = student.tokenizer
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(prompt + messages[1]["content"], add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # the answer starts on a token boundary under this template
    logits = student.model(input_ids=torch.tensor([ids])).logits[0].double()
    start = len(prompt_ids)
    rows, targets = logits[start - 1 : -1], torch.tensor(ids[start:])
    logp = torch.log_softmax(rows, dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    target = rows.gather(1, targets.view(-1, 1))
    sure = int(((rows > target - NEAR_TIE).sum(dim=1) == 1).sum())  # the target alone at the top, by a margin
    maybe = int(((rows > target + NEAR_TIE).sum(dim=1) == 0).sum())  # nothing above it beyond a near-tie
    return float(entropy.mean()), sure, maybe, len(targets)


def test_mean_entropy_and_top1_share_equal_an_independent_full_vocabulary_computation(smollm, tmp_path: Path) -> None:
    src = write_gsm8k_style(tmp_path / "gsm8k.jsonl")
    items = read_score_input(src, mapping={"problem": "question", "response": "answer"})
    assert len(items.trajectories) == len(RECORDS) and not items.rejected
    chats = [[m.model_dump() for m in t.messages] for t in items.trajectories]
    results = smollm.score(chats, progress=False)
    assert smollm.dtype == torch.float32
    for chat, r in zip(chats, results, strict=True):
        entropy, sure, maybe, n = _reference(smollm, chat)
        stats = r.stats
        assert stats.n_tokens == n
        assert abs(stats.mean_entropy - entropy) <= 1e-4
        assert sure <= stats.n_top1 <= maybe and maybe - sure <= 1  # near-ties (none so far) are the only slack
        assert abs(stats.top1_share - stats.n_top1 / n) <= 1e-12 and 0 < stats.top1_share < 1
        score = r.to_score("t", smollm.student_id)  # stored with each score
        assert (score.mean_entropy, score.top1_share) == (stats.mean_entropy, stats.top1_share)


def test_the_entropy_pass_leaves_ranks_and_surprisals_bit_for_bit() -> None:
    """Writing logsumexp out to share its exponentials with the entropy changes no RSR input, in any chunk size."""
    gen = torch.Generator().manual_seed(0)
    for rows, scale in ((1, 1.0), (7, 5.0), (128, 30.0)):
        logits = torch.randn(rows, 4099, generator=gen) * scale
        targets = torch.randint(0, 4099, (rows,), generator=gen)
        ranks, surprisals, entropies = token_ranks_surprisals_entropies(logits, targets)
        rsr_alone = token_ranks_surprisals(logits, targets)
        assert torch.equal(ranks, rsr_alone[0]) and torch.equal(surprisals, rsr_alone[1])
        want = torch.distributions.Categorical(logits=logits.double()).entropy()
        assert torch.allclose(entropies.double(), want, atol=1e-5, rtol=0)
