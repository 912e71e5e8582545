"""A template that drops tool calls (SmolLM3, the embedded SmolLM2) scores a tool-calling turn's content only: the
score row stores how many calls went unscored (migration 006), and coverage shows it (teacher_selection,
`rsr status`). On real DuckDB files, and a real score from the embedded student."""

from __future__ import annotations

from pathlib import Path

import duckdb
from typer.testing import CliRunner

from rsr.cli import app
from rsr.metric import METRIC_VERSION
from rsr.records import Score
from rsr.report.page import teacher_board
from rsr.store import connect as store_mod
from rsr.store.queries import Reader
from rsr.store.writer import Store
from tests.integration.test_chat_templates import AGENT
from tests.support.hand_made_store import STUDENT_ID, build_store

DROPPING = "tiny-student@drops1"


def _ids(db: Path, teacher: str) -> list[str]:
    with Reader.open(db) as r:
        _, rows = r.query("SELECT trajectory_id FROM trajectories WHERE teacher = ? ORDER BY trajectory_id", [teacher])
    return [t for (t,) in rows]


def test_the_embedded_student_scores_a_dropped_call_and_its_row_says_so(smollm):
    assert smollm.renderer.drops_tool_calls
    chat = [dict(m) for m in AGENT]
    chat[1]["content"] = "Let me multiply."  # its template needs a string beside the calls
    [result] = smollm.score([chat], progress=False)
    score = result.to_score("t-agent", smollm.student_id)
    assert result.error is None and score.dropped_tool_calls == 1
    assert score.n_tool_tokens == 0 and score.n_answer_tokens > 0


# Columns the writer now names otherwise than a v5 file did.
_V5_NAMES = {
    ("verdicts", "at"): "verified_at",
    ("quarantine", "at"): "quarantined_at",
    ("ingest_counts", "at"): "logged_at",
}


def _as_version_5(today: Path, old: Path) -> Path:
    """The rows of a state written today, in a file made by the first five migrations: what rsr-curate left at v5."""
    with duckdb.connect(str(old)) as con:
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)")
        for version, sql in enumerate(store_mod.MIGRATIONS[:5], start=1):
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        con.execute(f"ATTACH '{today}' AS today (READ_ONLY)")
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall()
        for (table,) in tables:
            if table == "schema_version":
                continue
            where = f"database_name = current_database() AND table_name = '{table}'"
            found = con.execute(f"SELECT column_name FROM duckdb_columns() WHERE {where} ORDER BY column_index")
            cols = [c for (c,) in found.fetchall()]
            picked = ", ".join(f'"{_V5_NAMES.get((table, c), c)}"' for c in cols)
            con.execute(f"INSERT INTO {table} SELECT {picked} FROM today.{table}")
    return old


def test_a_version_5_state_migrates_in_place(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    db = _as_version_5(build_store(tmp_path / "today"), tmp_path / "home" / "rsr.duckdb")
    with duckdb.connect(str(db), read_only=True) as con:
        assert "dropped_tool_calls" not in con.execute("SELECT * FROM scores LIMIT 0").df().columns
    with Store.open(db) as s:
        assert s.schema_version == store_mod.SCHEMA_VERSION >= 7
        _, [(n, unknown)] = s.query("SELECT count(*), count(*) FILTER (dropped_tool_calls IS NULL) FROM scores")
        assert n == unknown == 5  # its rows kept, the count unknown for rows scored before v6
        _, [(label, options)] = s.query("SELECT label, chat_template_kwargs FROM registrations")
        assert (label, options) == ("tiny-student", None)  # a registration of v5 gets its label
    with Reader.open(db) as r:
        board = teacher_board(r, STUDENT_ID)
    assert board["n_dropped_tool_calls"].tolist() == [0, 0] and board["dataset_rsr"].notna().all()


def test_dropped_tool_calls_are_stored_and_shown_in_coverage(tmp_path: Path) -> None:
    db = build_store(tmp_path / "home")
    alpha = _ids(db, "alpha-teacher")[:2]
    made = {"student_id": DROPPING, "metric_version": METRIC_VERSION, "r_max": 100, "dtype": "float32"}
    stats = {"n_tokens": 10, "sum_rank": 10.0, "sum_surprisal": 10.0, "rsr": 1.0, "mean_rank": 1.0}
    with Store.open(db) as s:
        s.register_student(DROPPING, "tiny-student", "drops1", {"dtype": "float32"})
        run = s.start_run("rescore-student", {})
        scores = [Score(trajectory_id=t, **made, **stats, mean_surprisal=1.0, dropped_tool_calls=k + 1)
                  for k, t in enumerate(alpha)]  # fmt: skip
        assert s.add_scores(scores, run) == 2
        s.finish_run(run, "completed")
    with Reader.open(db) as r:
        _, stored = r.query("SELECT dropped_tool_calls FROM latest_scores WHERE student_id = ? ORDER BY 1", [DROPPING])
        assert stored == [(1,), (2,)]
        _, [(view,)] = r.query("SELECT dropped_tool_calls FROM teacher_selection WHERE student_id = ?", [DROPPING])
        assert view == 3
        assert r.stored_score(alpha[1], DROPPING, "float32", None).dropped_tool_calls == 2
        board = teacher_board(r, DROPPING).set_index("teacher")
    assert board.loc["alpha-teacher", "n_dropped_tool_calls"] == 3
    out = CliRunner().invoke(app, ["status", "--state", str(db.parent)])
    assert out.exit_code == 0, out.output
    assert "dropped_tool_calls" in out.output  # a column on the board of the student whose template drops them
