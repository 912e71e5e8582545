"""Dedup's pages (rsr.stages.curate._pages): each problem whole, read by the row ranges that hold its rows."""

from __future__ import annotations

from rsr.stages import curate
from rsr.stages.curate import _pages, _ranges


def test_ranges_cover_every_row_and_split_at_the_widest_gaps() -> None:
    rows = [3, 4, 5, 9, 10, 100, 101, 102, 5000]
    assert _ranges(rows, most=32) == [range(3, 6), range(9, 11), range(100, 103), range(5000, 5001)]
    assert _ranges(rows, most=2) == [range(3, 103), range(5000, 5001)]  # nearby runs read as one
    assert _ranges([7], most=2) == [range(7, 8)]
    assert all(any(r in span for span in _ranges(rows, most=k)) for k in (1, 2, 3) for r in rows)


def test_pages_keep_a_problem_whole_in_row_order_within_the_byte_budget(monkeypatch) -> None:
    monkeypatch.setattr(curate, "CHUNK_BYTES", 100)
    # problem b's rows sit first; a's rows are split between two teachers' regions
    rows = [("b", 0, 60), ("a", 1, 30), ("c", 2, 50), ("a", 10, 30), ("b", 11, 10)]
    pages = _pages(rows)
    assert [page for page, _ in pages] == [["b"], ["a"], ["c"]]  # b: 70, a: 60, c: 50 of a 100 budget
    assert pages[0][1] == [range(0, 1), range(11, 12)]
    assert pages[1][1] == [range(1, 2), range(10, 11)]
    assert sorted(p for page, _ in pages for p in page) == ["a", "b", "c"]
