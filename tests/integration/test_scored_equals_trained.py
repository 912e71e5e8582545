"""Scored = trained, checked with the real trainer: TRL's SFTTrainer on the published dataset, as the card says.

The embedded student (SmolLM2, CPU) trains two steps on a dataset written by the publisher's own writer
(rsr.publish.files.write_files, read back with `datasets.load_from_disk`), and the positions that carry a loss
(labels != -100 in the batches the trainer builds) are compared with the positions the scorer scores:

- a verbatim template (Qwen2.5-Instruct): `messages` with `assistant_only_loss=True`, the template with
  `{% generation %}` markers around each assistant body (the training copy of test_chat_templates.py): exactly
  the scored positions;
- the same template on an agent chat with its tool schemas, whose tool-call arguments it is given as a mapping (it
  would encode JSON text again): arguments published as a `Json` value and the schemas as the `tools` column, the
  trainer renders the call and the schemas as scored;
- a rewriting template (QwQ-32B): the `prompt`/`completion` columns with the loss on the completion: the scored
  positions, then the end-of-turn marker that ends the completion (the trainer learns to stop; the scorer leaves
  the marker out) and nothing else.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

from rsr.publish.files import chat_columns, write_files
from rsr.records import join_reasoning
from rsr.score.student import Student
from tests.integration.test_chat_templates import AGENT, QWEN25, QWQ, TRAINING, _real

pytest.importorskip("trl")
pytestmark = pytest.mark.slow

CHATS = [
    [
        {"role": "user", "content": "What is 12 times 13?"},
        {"role": "assistant", "content": join_reasoning("12 * 13 = 120 + 36 = 156.", "The answer is 156.")},
    ],
    [
        {"role": "user", "content": "What is 7 squared?"},
        {"role": "assistant", "content": join_reasoning("7 * 7 = 49.", "It is 49.")},
        {"role": "user", "content": "And 8 squared?"},
        {"role": "assistant", "content": join_reasoning("8 * 8 = 64.", "64.")},
    ],
]


def _published(student: Student, tmp_path, chats: list[list[dict]] = CHATS, tools: list[dict] | None = None) -> object:
    """The rows as the publisher builds them (rsr.publish.files.chat_columns, with tasks/publish.py's split), written
    and read back."""
    import datasets

    if student.render_mode == "generation":  # tasks/publish.py training_split
        split = student.training_example
    elif student.info()["native_form"]:  # tasks/publish.py native_split
        split = lambda messages, tools: {"messages": student.renderer.native(messages)}  # noqa: E731
    else:
        split = None
    rows = []
    for i, chat in enumerate(chats):
        row = chat_columns(chat, tools, split)
        if tools is None:
            del row["tools"]  # as build_rows does when no row has tools
        row |= {k: f"{k}-{i}" for k in ("trajectory_id", "teacher", "problem_id", "problem", "gold_answer")}
        row |= {"verdict": "correct", "rsr": 1.0, "mean_rank": 1.0, "mean_surprisal": 1.0, "score_id": f"s-{i}"}
        rows.append(row)
    write_files(tmp_path / "ds", rows, "card")
    return datasets.load_from_disk(str(tmp_path / "ds"))


def _trained_positions(student: Student, dataset, template: str, config: dict, tmp_path) -> list[list[int]]:
    """Train two steps; return, per batch the trainer built, its input ids and the positions with a loss."""
    from trl import SFTConfig, SFTTrainer

    tokenizer = copy.deepcopy(student.tokenizer)
    tokenizer.chat_template = template
    columns = ["messages"] if "messages" in config.pop("columns") else ["prompt", "completion"]
    columns += ["tools"] if "tools" in dataset.column_names else []  # TRL gives them to the template
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=1,
        learning_rate=1e-5,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        seed=0,
        **config,
    )
    model = copy.deepcopy(student.model).train()
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset.select_columns(columns), processing_class=tokenizer
    )
    seen = []
    for batch in trainer.get_train_dataloader():
        ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
        seen.append((ids, [p for p, label in enumerate(labels) if label != -100]))
    trainer.train()  # the same batches, two optimiser steps: the published dataset trains as it is
    return seen


def _student(smollm: Student, name: str) -> Student:
    return dataclasses.replace(smollm, chat_template=_real(name))


def test_a_verbatim_template_trains_exactly_the_scored_positions(smollm, tmp_path):
    student = _student(smollm, QWEN25)
    assert student.render_mode == "template"
    dataset = _published(student, tmp_path)
    template = TRAINING[QWEN25](student.chat_template)
    config = {"columns": ["messages"], "assistant_only_loss": True}
    seen = _trained_positions(student, dataset, template, config, tmp_path)
    scored = {tuple(p.ids): p.scored for p in (student.prepare(chat) for chat in CHATS)}
    assert len(seen) == len(CHATS)
    for ids, trained in seen:
        assert tuple(ids) in scored, "the trainer tokenised a text other than the scored one"
        assert trained == scored[tuple(ids)]


def test_a_rewriting_template_trains_the_scored_positions_and_the_end_marker(smollm, tmp_path):
    student = _student(smollm, QWQ)
    assert student.render_mode == "generation"
    dataset = _published(student, tmp_path)
    config = {"columns": ["prompt", "completion"], "completion_only_loss": True}
    seen = _trained_positions(student, dataset, student.chat_template, config, tmp_path)
    prepared = [student.prepare(chat) for chat in CHATS]
    assert len(seen) == len(CHATS)
    for ids, trained in seen:
        [p] = [p for p in prepared if ids[: len(p.ids)] == p.ids]  # the scored text, maybe + an appended EOS
        n = len(p.scored)
        assert trained[:n] == p.scored  # every scored token is trained, and nothing of the prompt
        tail = student.tokenizer.decode([ids[i] for i in trained[n:]])
        assert trained[n:] == list(range(p.scored[-1] + 1, len(ids)))
        assert tail.startswith(student.eot.strip()) and set(tail) <= set(student.eot + student.tokenizer.eos_token)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "multiply",
            "description": "Multiply two integers.",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
        },
    }
]


def test_a_tool_call_row_with_its_schemas_trains_exactly_the_scored_positions(smollm, tmp_path):
    student = _student(smollm, QWEN25)
    assert student.renderer.arguments_as_mapping  # Qwen2.5's `| tojson` would encode JSON text again
    dataset = _published(student, tmp_path, [AGENT], TOOLS)
    assert "tools" in dataset.column_names  # the schemas the template was given, which TRL passes it
    template = TRAINING[QWEN25](student.chat_template)
    config = {"columns": ["messages"], "assistant_only_loss": True}
    [(ids, trained)] = _trained_positions(student, dataset, template, config, tmp_path)
    p = student.prepare(AGENT, tools=TOOLS)
    assert ids == p.ids and trained == p.scored
    assert '"arguments": {"a": 12, "b": 13}' in student.tokenizer.decode([ids[i] for i in trained])
    assert "Multiply two integers." in student.tokenizer.decode(ids)  # the schemas are in the trained prompt
