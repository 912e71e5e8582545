"""Published schemas (tests/support/schemas.py) go in with one mapping, plain or compressed: counts that add up,
reasoning kept, golds found, tools kept; how each was read is said."""

from __future__ import annotations

import json

import pytest

from rsr.curate.ingest import ingest_file, iter_ingest, make_plan
from tests.support.schemas import SCHEMAS, compress


def _ingest(path, case):
    chunks = list(iter_ingest(path, teacher="t", mapping=case.mapping or None))
    return chunks, ingest_file(path, teacher="t", mapping=case.mapping or None)


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst", ".bz2"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_published_schema_goes_in_with_one_mapping(tmp_path, name, suffix):
    case = SCHEMAS[name]
    path = case.write(tmp_path, suffix)
    chunks, result = _ingest(path, case)
    assert sum(c.records for c in chunks) == len(case.rows()) == result.records
    assert len(result.rejected) == case.quarantined, [r.reason for r in result.rejected]
    assert [t.gold_answer for t in result.trajectories] == list(case.golds)
    assert all(bool(t.tools) == case.tools for t in result.trajectories)
    assert any("<think>" in t.response for t in result.trajectories) == case.reasoning
    assert not any("<think>\noff" in t.response for t in result.trajectories)  # Nemotron's flag is not reasoning
    assert chunks[0].plan.startswith("format ") and all(f"<- {c}" in chunks[0].plan for c in case.mapping.values())


def test_tau_bench_traj_keeps_system_tool_calls_and_tool_turns(tmp_path):
    case = SCHEMAS["tau-bench"]
    first, second = ingest_file(case.write(tmp_path), teacher="t", mapping=case.mapping).trajectories
    assert [m.role for m in first.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert first.messages[2].tool_calls[0]["function"]["name"] == "get_weather"
    assert second.problem == "And in Rome?"


def test_placeholder_problem_is_quarantined_with_its_reason(tmp_path):
    case = SCHEMAS["open-code-reasoning"]
    result = ingest_file(case.write(tmp_path), teacher="t", mapping=case.mapping)
    (reject,) = result.rejected
    assert reject.source_line == 2 and "placeholder" in reject.reason


def test_gold_columns_are_found_without_a_mapping_and_the_plan_says_which(tmp_path):
    for column in ("answer", "expected_answer", "reference_answer", "ground_truth"):
        path = tmp_path / f"{column}.jsonl"
        path.write_text(json.dumps({"problem": "1+1?", "response": "2", column: "2"}) + "\n")
        (chunk,) = iter_ingest(path, teacher="t")
        assert chunk.trajectories[0].gold_answer == "2" and f"answer <- {column}" in chunk.plan
    path = tmp_path / "none.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "response": "2"}) + "\n")
    assert "no gold column" in next(iter_ingest(path, teacher="t")).plan


def test_given_a_mapping_an_unmapped_column_is_not_read(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"q": "1+1?", "r": "2", "reasoning": "off", "answer": "2", "id": "x"}) + "\n")
    (traj,) = ingest_file(path, teacher="t", mapping={"problem": "q", "response": "r"}).trajectories
    assert traj.response == "2" and traj.gold_answer is None and traj.source_id is None
    (traj,) = ingest_file(path, teacher="t", mapping="problem=q response=r answer=answer").trajectories
    assert traj.gold_answer == "2"


def test_dotted_paths_and_list_indices_reach_nested_values():
    head = [{"messages": [{"role": "user", "content": "q", "info": {"gold": "7"}}], "meta": {"a.b": 1}}]
    plan = make_plan("messages", head, {"answer": "messages.0.info.gold"})
    assert plan.format == "messages" and "answer <- messages.0.info.gold" in plan.describe()


def test_a_broken_compressed_stream_keeps_the_records_before_it(tmp_path):
    rows = "".join(json.dumps({"problem": f"p{i}", "response": "r"}) + "\n" for i in range(200))
    data = compress(rows.encode(), ".gz")
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = ingest_file(path, teacher="t")
    assert result.trajectories and "unreadable" in result.rejected[-1].reason
