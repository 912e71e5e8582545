"""Every record accounted for: records = stored + repeats + quarantined per source, across chunks; different
prompts stay different trajectories; a broken CSV region is quarantined without swallowing the rows after it;
chunks are sized by bytes and one huge record is quarantined with its size."""

from __future__ import annotations

import json

from rsr.curate.ingest import _common, _io, iter_ingest


def _chat(user: str, reply: str, system: str | None = None, earlier: list[dict] | None = None) -> dict:
    turns = ([{"role": "system", "content": system}] if system else []) + (earlier or [])
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_exact_repeats_are_counted_across_chunks(tmp_path):
    rows = [_chat(f"q{i % 7}", "same") for i in range(30)]  # 7 distinct, 23 repeats, spread over 10 chunks
    _write(tmp_path / "r.jsonl", rows)
    chunks = list(iter_ingest(tmp_path / "r.jsonl", teacher="t", chunk_size=3))
    assert len(chunks) >= 3
    assert sum(len(c.trajectories) for c in chunks) == 7 and sum(c.duplicates_skipped for c in chunks) == 23
    assert sum(c.records for c in chunks) == 30


def test_different_system_prompts_or_earlier_turns_stay_different_trajectories(tmp_path):
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [_chat("q", "a"), _chat("q", "a", system="Be brief."), _chat("q", "a", system="Be long."),
            _chat("q", "a", earlier=earlier), _chat("q", "a")]  # fmt: skip
    _write(tmp_path / "p.jsonl", rows)
    (chunk,) = iter_ingest(tmp_path / "p.jsonl", teacher="t")
    assert len({t.trajectory_id for t in chunk.trajectories}) == 4 and chunk.duplicates_skipped == 1


def test_an_unterminated_csv_quote_is_quarantined_and_the_rows_after_it_are_read(tmp_path):
    lines = ["problem,response", 'q0,"unterminated'] + [f"q{i},r{i}" for i in range(1, 21)]
    lines.insert(5, '"a problem\nover two lines",fine')
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (chunk,) = iter_ingest(tmp_path / "t.csv", teacher="t")
    assert len(chunk.trajectories) == 21 and chunk.records == 22
    (reject,) = chunk.rejected
    assert reject.source_line == 2 and "broken CSV record starting at line 2" in reject.reason
    assert "a problem\nover two lines" in {t.problem for t in chunk.trajectories}


def test_a_csv_quote_left_open_to_the_end_swallows_nothing(tmp_path):
    lines = ["problem,response", "q0,r0", 'q1,"open'] + [f"q{i},r{i}" for i in range(2, 10)]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (chunk,) = iter_ingest(tmp_path / "t.csv", teacher="t")
    assert len(chunk.trajectories) == 9 and [r.source_line for r in chunk.rejected] == [3]


def test_chunks_are_sized_by_bytes_and_a_huge_record_is_quarantined_by_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "CHUNK_BYTES", 10_000)
    monkeypatch.setattr(_common, "MAX_TEXT_BYTES", 50_000)
    rows = [_chat(f"q{i}", "x" * 3000) for i in range(10)] + [_chat("huge", "y" * 60_000), _chat("last", "z")]
    rows.insert(5, _chat("long", "w" * 30_000))  # more than a chunk's budget: it goes alone
    _write(tmp_path / "b.jsonl", rows)
    chunks = list(iter_ingest(tmp_path / "b.jsonl", teacher="t"))
    assert all(c.text_bytes <= 10_000 or len(c.trajectories) == 1 for c in chunks) and len(chunks) >= 4
    assert [t.problem for c in chunks for t in c.trajectories if c.text_bytes > 10_000] == ["long"]
    rejected = [r for c in chunks for r in c.rejected]
    assert [r.source_line for r in rejected] == [12] and "60" in rejected[0].reason and "limit" in rejected[0].reason
    assert sum(c.records for c in chunks) == 13


def test_a_line_over_the_record_limit_is_skipped_unread_with_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(_io, "MAX_RECORD_BYTES", 5_000)
    _write(tmp_path / "l.jsonl", [_chat("q", "x" * 20_000), _chat("q2", "ok")])
    (chunk,) = iter_ingest(tmp_path / "l.jsonl", teacher="t")
    assert [t.problem for t in chunk.trajectories] == ["q2"]
    assert "record of 20" in chunk.rejected[0].reason and "bytes" in chunk.rejected[0].reason
