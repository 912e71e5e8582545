"""The dataset card states the form the published rows hold for this student, read off a real publication.

Two students publish the same agent trajectory (reasoning + a tool call): Qwen2.5-Instruct's template reads
reasoning inline in `<think>` tags and is given tool-call arguments as mappings; Seed-OSS's reads a
`reasoning_content` field. Each publication goes through the publisher (DuckDB, MLflow, the files) with the split
tasks/publish.py uses (Renderer.native); the card must name the form its rows hold, and the template applied to
the rows as read back renders exactly the text the scorer scored.
"""

from __future__ import annotations

import json

import datasets
import pytest
from huggingface_hub import DatasetCard

from rsr.metric import METRIC_VERSION
from rsr.publish.files import publish_selection, source_files
from rsr.publish.manifest import Request
from rsr.records import Message, Score, Trajectory, Verdict
from rsr.store.writer import Store
from tests.integration.test_template_conformance import CASES, R3, _records, _student
from tests.support.publish_case import POLICY, local_tracking

RECORDS = _records(CASES["tool call + result"])
SCHEMAS = [{"type": "function", "function": {"name": "multiply", "parameters": {"type": "object", "properties": {}}}}]


def _publish(env, student, name: str):
    """The agent trajectory for a new teacher, verified and scored for "stu", published in `student`'s form."""
    store: Store = env["store"]
    traj = Trajectory.build(
        teacher="agent",
        problem="What is 12 times 13?",
        messages=[Message.model_validate(m) for m in RECORDS],
        source_file=str(env["sources"][0]),
        source_line=9,
        tools=SCHEMAS,
    )
    store.add_trajectories([traj], env["run"])
    store.set_verdicts([Verdict(trajectory_id=traj.trajectory_id, verdict="correct")], env["run"])
    made = {"student_id": "stu", "metric_version": METRIC_VERSION, "r_max": 100, "dtype": "float32"}
    stats = {"n_tokens": 10, "sum_rank": 10.0, "sum_surprisal": 10.0, "rsr": 1.0, "mean_rank": 1.0}
    store.add_scores([Score(trajectory_id=traj.trajectory_id, **made, **stats, mean_surprisal=1.0)], env["run"])
    selected = [c for c in store.candidates("stu") if c.trajectory_id == traj.trajectory_id]
    req = Request(name, "stu", "tiny/student", POLICY, env["run"], render_mode=student.render_mode,
                  end_of_turn=student.info()["end_of_turn"],
                  split=lambda messages, tools: {"messages": student.renderer.native(messages)})  # fmt: skip
    out = env["home"] / "datasets"
    pub = publish_selection(
        store, selected, req, out_root=out, tracking=local_tracking(env), sources=source_files(store, selected)
    )
    row = datasets.load_from_disk(str(pub.path))[0]
    assert json.loads(row["tools"]) == SCHEMAS  # the schemas the template was given, as TRL reads them
    return DatasetCard.load(pub.path / "README.md").text, row["messages"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("Qwen2.5-7B-Instruct", "reasoning inline at the start of `content`, in `<think>...</think>` tags"),
        ("ByteDance-Seed-OSS", "reasoning in each assistant message's `reasoning_content` field"),
    ],
)
def test_the_card_names_the_form_the_rows_hold(env, smollm, name, says):
    student = _student(smollm, name)
    assert student.render_mode == "template"
    card, messages = _publish(env, student, name.lower())
    assert says in " ".join(card.split())
    assert "tool-call `arguments` as mappings (a `datasets` `Json` value" in " ".join(card.split())
    assert "`<think>` tags)" not in card  # the old fixed claim
    assert "`tools` (the function schemas the student's template was given" in " ".join(card.split())
    # what was scored, what the trainer adds (the end-of-turn marker, EOS), and what to do when TRL refuses it
    flat = " ".join(card.split())
    assert "Scored: every assistant turn of each row" in flat
    assert f"each assistant turn's end-of-turn marker (`{' '.join(student.eot.split())}`) and the EOS token" in flat
    assert "is not training-compatible" in flat and "wrap each assistant turn's body in `{% generation %}" in flat
    final = messages[-1]
    if "reasoning_content" in says:
        assert final["reasoning_content"] == R3 and "<think>" not in final["content"]
    else:
        assert final["content"].startswith(f"<think>\n{R3}\n</think>")
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {"a": 12, "b": 13}
    rows = [{k: v for k, v in m.items() if v is not None} for m in messages]
    rendered = student.tokenizer.apply_chat_template(
        rows, tools=SCHEMAS, chat_template=student.chat_template, tokenize=False
    )
    assert rendered == student.render(RECORDS, SCHEMAS)[0]  # the rows as read back render the scored text
