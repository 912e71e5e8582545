"""Scoring edge cases with the real embedded student: each record gets a score or a clear error, never a crash.

Decisions (see docs/reliability.md):
- longer than the context: the first context-length tokens are scored and the row says `truncated`;
- empty / whitespace-only response: a per-record error ("empty assistant response");
- a response that only spells special tokens ("<|im_end|>"): scored like any text. The tokenizer reads the
  spelling as the special token, exactly as an SFT trainer tokenising the rendered chat would, so the score is
  what the student would be trained on (finite, n_tokens = the special tokens);
- a chat template that refuses a conversation (Jinja `raise_exception`, e.g. "no system role"): a per-record error
  quoting the template's message; the batch's other records are scored;
- a tokenizer without a pad token: scores equal those of the same model with one, bit for bit (the scorer never
  pads: one sequence per forward).
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

USER = {"role": "user", "content": "What is 12 times 13?"}
ANSWER = {"role": "assistant", "content": "12 times 13 is 156, because 12 times 10 is 120 and 12 times 3 is 36."}
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _ok(result) -> None:
    assert result.error is None, result.error
    s = result.stats
    assert s.n_tokens > 0 and math.isfinite(s.rsr) and math.isfinite(s.mean_surprisal) and s.mean_rank >= 1


def test_longer_than_the_context_is_scored_up_to_it_and_flagged(smollm, monkeypatch):
    long = {"role": "assistant", "content": " ".join(f"step {i}: add {i} to the total." for i in range(25))}
    full = smollm.score([[USER, long]], progress=False)[0]
    _ok(full)
    assert not full.stats.truncated
    monkeypatch.setattr(smollm.model.config, "max_position_embeddings", 80)  # a student with an 80-token context
    assert smollm.context_length == 80
    cut, short, prompt_only = smollm.score(
        [[USER, long], [USER, ANSWER], [{"role": "user", "content": "word " * 200}, ANSWER]], progress=False
    )
    _ok(cut)
    assert cut.stats.truncated and cut.stats.n_tokens < full.stats.n_tokens
    _ok(short)
    assert not short.stats.truncated
    assert prompt_only.stats is None and "prompt alone fills the first 80 tokens" in prompt_only.error
    explicit = smollm.score([[USER, long]], max_tokens=64, progress=False)[0]  # --max-tokens
    _ok(explicit)
    assert explicit.stats.truncated and explicit.stats.n_tokens < cut.stats.n_tokens


def test_empty_response_is_a_record_error_not_a_crash(smollm):
    results = smollm.score(
        [
            [USER, {"role": "assistant", "content": ""}],
            [USER, ANSWER],
            [USER, {"role": "assistant", "content": " \n\t "}],
            [USER],
        ],
        progress=False,
    )
    assert "empty assistant response" in results[0].error and results[0].stats is None
    _ok(results[1])
    assert "empty assistant response" in results[2].error
    assert "no assistant turn" in results[3].error


@pytest.mark.parametrize(
    ("response", "n_special"),
    [("<|im_end|>", 1), ("<|im_start|><|im_end|>", 2), ("<|endoftext|>", 1), ("<|im_end|>\n<|im_start|>user", 2)],
)
def test_response_of_only_special_tokens_is_scored_as_tokens(smollm, response, n_special):
    (result,) = smollm.score([[USER, {"role": "assistant", "content": response}]], progress=False)
    _ok(result)
    special = set(smollm.tokenizer.all_special_ids)
    ids = smollm.tokenizer(response, add_special_tokens=False)["input_ids"]
    assert sum(i in special for i in ids) == n_special
    assert result.stats.n_tokens == len(ids)


def test_template_without_system_role_gives_a_per_record_error(smollm):
    student = dataclasses.replace(smollm, chat_template=NO_SYSTEM_TEMPLATE)
    with_system = [{"role": "system", "content": "Be brief."}, USER, ANSWER]
    refused, fine = student.score([with_system, [USER, ANSWER]], progress=False)
    assert refused.stats is None
    assert "chat template refused" in refused.error and "System role not supported" in refused.error
    assert "system" in refused.error  # names the roles it was given
    _ok(fine)
    reference = smollm.score([[USER, ANSWER]], progress=False)[0]
    assert fine.stats.n_tokens == reference.stats.n_tokens  # same rendering as chatml without a system turn


def test_the_same_through_the_scoring_task(smollm, monkeypatch):
    """score_shard (what a worker runs) returns an error Score row for the refused record, not an exception."""
    from rsr.spec import StudentSpec
    from rsr.stages import score as stage
    from rsr_tasks import score as score_task

    student = dataclasses.replace(smollm, chat_template=NO_SYSTEM_TEMPLATE)
    monkeypatch.setattr(stage, "load_student", lambda spec: student)
    items = [("t-sys", [{"role": "system", "content": "x"}, USER, ANSWER]), ("t-ok", [USER, ANSWER])]
    rows = score_task.score_shard.fn(StudentSpec(), student.student_id, items)
    assert [r.trajectory_id for r in rows] == ["t-sys", "t-ok"]
    assert "System role not supported" in rows[0].error and rows[1].error is None and rows[1].n_tokens > 0


def test_tokenizer_without_pad_token_scores_the_same(smollm, tmp_path):
    from rsr.score.student import Student
    from rsr.settings import StateDir

    source = StateDir.from_env().models / "smollm2-135m"  # the converted embedded student (the fixture made it)
    folder = tmp_path / "no-pad"
    folder.mkdir()
    for f in source.iterdir():
        if f.name != "tokenizer_config.json" and not f.name.startswith("."):
            (folder / f.name).symlink_to(f)  # weights shared, not copied
    config = json.loads((source / "tokenizer_config.json").read_text())
    assert config.pop("pad_token", None) is not None
    (folder / "tokenizer_config.json").write_text(json.dumps(config))

    student = Student.load(str(folder), dtype="float32", device="cpu")
    assert student.tokenizer.pad_token_id is None
    # different lengths in one batch, so padding happens
    convs = [
        [USER, ANSWER],
        [USER, {"role": "assistant", "content": "156."}],
        [USER, {"role": "assistant", "content": "x" * 300}],
    ]
    got = student.score(convs, progress=False)
    want = smollm.score(convs, progress=False)
    for g, w in zip(got, want, strict=True):
        _ok(g)
        assert g.stats == w.stats
