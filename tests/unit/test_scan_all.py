"""The whole-file check before a read-write open (rsr.store.connect.ensure_sound) on long texts."""

from __future__ import annotations

from pathlib import Path

import duckdb

from rsr.store import connect


def test_a_value_longer_than_the_scan_cache_is_read_uncapped_not_called_corrupt(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "long.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t (id INTEGER, body VARCHAR)")
        con.execute("INSERT INTO t SELECT i, repeat('word ', 400000) FROM range(40) r(i)")  # 40 x 2 MB
    monkeypatch.setattr(connect, "SCAN_MEMORY", "4MB")
    scans, scan = [], connect._scan
    monkeypatch.setattr(
        connect, "_scan", lambda path, memory, wait_s: (scans.append(memory), scan(path, memory, wait_s))
    )
    connect._sound.discard(db.resolve())
    connect.ensure_sound(db)  # raises DatabaseCorrupt or OutOfMemoryException if the cap were final
    assert scans == ["4MB", None]  # out of memory under the cap, then read whole without it
    assert db.resolve() in connect._sound
