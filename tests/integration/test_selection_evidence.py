"""The evidence beside a selection (issue 29), on a real DuckDB store and a real MLflow store: a token-matched random
baseline published beside it, RSR's tie to length, whether the board's order is settled, selection by any stored
metric."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import DatasetCard
from mlflow import MlflowClient
from scipy.stats import spearmanr
from typer.testing import CliRunner

from rsr.cli import app
from rsr.config import StudentSpec
from rsr.report.page import teacher_board
from rsr.select import TOKEN_TOLERANCE, Baseline, SelectionPolicy
from rsr.settings import StateDir
from rsr.store.queries import Reader
from rsr_tasks.publish import publish, random_baseline, select_trajectories
from rsr_tasks.score import find_student
from tests.support.evidence_store import STUDENT_ID, STUDENT_REF, TEACHERS, build_evidence_store
from tests.support.hand_made_store import STUDENT_ID as HAND_STUDENT
from tests.support.hand_made_store import build_store as build_hand_made_store

POLICY = SelectionPolicy(name="per_problem_min_rsr")


@pytest.fixture
def state(tmp_path: Path, mlflow_template: Path, monkeypatch) -> StateDir:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the state folder's own MLflow store
    build_evidence_store(tmp_path / "home", mlflow_template)
    return StateDir(tmp_path / "home")


def _selection(state: StateDir, policy: SelectionPolicy = POLICY):
    found = find_student.fn(state.duckdb, StudentSpec(ref=STUDENT_REF, dtype="float32"))
    return select_trajectories.fn(state, found, policy)


def _tokens(reader: Reader, dataset_id: str) -> int:
    _, [(n,)] = reader.query(
        "SELECT sum(s.n_tokens) FROM publication_items i JOIN scores s USING (score_id) WHERE i.dataset_id = ?",
        [dataset_id],
    )
    return int(n)


def test_the_random_baseline_holds_the_selections_tokens_and_each_names_the_other(state: StateDir) -> None:
    selection = _selection(state)
    random = random_baseline.fn(selection, Baseline(seed=7))
    assert random_baseline.fn(selection, Baseline(seed=7)).chosen == random.chosen  # the same seed, the same pick
    assert random_baseline.fn(selection, Baseline(seed=8)).chosen != random.chosen
    assert {c.trajectory_id for c in random.chosen} != {c.trajectory_id for c in selection.chosen}

    pub = publish.fn(state, "r-test", selection, "math-sft", None, None, random)
    base = pub.baseline
    assert base is not None and base.path.parent.name == "math-sft-random"
    with Reader.open(state.duckdb) as reader:
        ours, theirs = _tokens(reader, pub.dataset_id), _tokens(reader, base.dataset_id)
        params, base_params = (reader.get_publication(p.dataset_id)["params"] for p in (pub, base))
        latest = reader.latest_publication(STUDENT_ID)["dataset_id"]
    assert abs(theirs - ours) <= TOKEN_TOLERANCE * ours and ours == params["response_tokens"]
    assert (params["baseline"]["seed"], params["baseline"]["role"]) == (7, "selection")
    assert (base_params["baseline"]["seed"], base_params["baseline"]["role"]) == (7, "baseline")
    assert params["baseline"]["other_dataset_id"] == base.dataset_id
    assert base_params["baseline"]["other_dataset_id"] == pub.dataset_id
    assert latest == pub.dataset_id  # the board's "selected" counts the selection, never its baseline

    card, base_card = (DatasetCard.load(p.path / "README.md").text for p in (pub, base))
    assert "math-sft-random" in card and base.dataset_id in card and f"{theirs} there, {ours} here" in card
    assert "A random baseline, not a selection" in base_card and "`math-sft`" in base_card
    assert pub.dataset_id in base_card and pub.mlflow_run_id in base_card and "Seed 7" in base_card

    client = MlflowClient(tracking_uri=state.mlflow_uri)
    run, base_run = client.get_run(pub.mlflow_run_id), client.get_run(base.mlflow_run_id)
    assert run.data.tags["rsr.baseline_run_id"] == base.mlflow_run_id
    assert base_run.data.tags["rsr.matches_run_id"] == pub.mlflow_run_id
    assert base_run.data.params["baseline.seed"] == "7" and base_run.data.params["baseline.role"] == "baseline"
    assert base_run.data.metrics["response_tokens"] == theirs

    again = publish.fn(state, "r-test2", _selection(state), "math-sft", None, None, random)
    assert again == pub  # the same seed on the same store: the same two publications, nothing new


def test_rsr_length_spearman_is_scipys_on_the_stored_scores(state: StateDir) -> None:
    with Reader.open(state.duckdb) as reader:
        _, view = reader.query("SELECT teacher, rsr_length_spearman FROM teacher_selection")
        used = reader.used_scores(STUDENT_ID, reader.current_setting(STUDENT_ID))
    assert {t for t, _ in view} == set(TEACHERS)
    for teacher, rho in view:
        rows = used[used["teacher"] == teacher]
        assert rows["rsr"].duplicated().any() and rows["n_tokens"].duplicated().any()  # ties: average ranks
        assert rho == pytest.approx(spearmanr(rows["rsr"], rows["n_tokens"]).statistic, abs=1e-12)
    assert dict(view)["verbose"] > 0.3 > abs(dict(view)["terse"])


def test_the_board_says_which_orders_are_settled_and_prints_the_same_intervals_each_time(state: StateDir) -> None:
    with Reader.open(state.duckdb) as reader:
        board = teacher_board(reader, STUDENT_ID)
        assert board.equals(teacher_board(reader, STUDENT_ID))  # every bootstrap seeded, rows read in one order
    first, second, last = board.to_dict("records")
    assert first["teacher"] == "terse" and first["settled"] and first["ahead_share"] >= 0.95
    assert second["teacher"] in ("steady", "verbose") and 0 < second["ahead_share"] < 0.95 and not second["settled"]
    assert last["ahead_share"] != last["ahead_share"]  # NaN: no teacher after the last

    out = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["status", "--state", str(state.root)])
    assert out.exit_code == 0, out.output
    shown = out.output
    assert "above next" in shown and "RSR~length" in shown and "settled" in shown and "not settled" in shown
    again = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["status", "--state", str(state.root)])
    assert again.output == shown  # the same store prints the same board


def test_a_policy_ranks_by_the_metric_it_names_and_says_so(state: StateDir) -> None:
    by_length = _selection(state, SelectionPolicy(name="per_problem_min_rsr", metric="length"))
    by_rsr = _selection(state)
    assert sum(c.n_tokens for c in by_length.chosen) < sum(c.n_tokens for c in by_rsr.chosen)
    per_problem = {}
    for c in by_length.candidates:
        if c.verdict == "correct":
            per_problem.setdefault(c.problem_id, []).append(c.n_tokens)
    assert sorted(c.n_tokens for c in by_length.chosen) == sorted(min(v) for v in per_problem.values())

    pub = publish.fn(state, "r-test", by_length, "shortest", None, None)
    assert "ranked by: `length`" in DatasetCard.load(pub.path / "README.md").text
    run = MlflowClient(tracking_uri=state.mlflow_uri).get_run(pub.mlflow_run_id)
    assert run.data.params["policy.metric"] == "length"
    with Reader.open(state.duckdb) as reader:
        assert reader.get_publication(pub.dataset_id)["params"]["policy"]["metric"] == "length"


def test_a_state_from_before_the_companion_metrics_migrates_and_keeps_its_rows(tmp_path: Path, monkeypatch) -> None:
    from rsr.store import connect as store_mod
    from rsr.store.writer import Store

    v9 = next(i for i, sql in enumerate(store_mod.MIGRATIONS) if "ADD COLUMN mean_entropy" in sql)
    with monkeypatch.context() as m:  # the state folder as rsr-curate left it before migration 009
        m.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:v9])
        m.setattr(store_mod, "SCHEMA_VERSION", v9)
        db = build_hand_made_store(tmp_path / "home")
    with Store.open(db) as s:
        assert s.schema_version == store_mod.SCHEMA_VERSION > v9
        _, [(n, unknown)] = s.query("SELECT count(*), count(*) FILTER (mean_entropy IS NULL) FROM latest_scores")
        assert n == unknown > 0  # kept, and NULL until re-scored on request (`rsr add-student --fill-metrics`)
        assert len(s.missing_metrics(HAND_STUDENT, "rsr-v1", 100, dtype="float32")) == n
        _, rows = s.query("SELECT teacher, dataset_rsr, rsr_length_spearman FROM teacher_selection ORDER BY rank")
    assert [t for t, _, _ in rows] == ["alpha-teacher", "beta-teacher"] and all(r is not None for _, r, _ in rows)


def test_the_report_shows_settled_orders_and_rsr_against_length(state: StateDir, tmp_path: Path) -> None:
    from rsr.report.page import build_report

    res = build_report(state, STUDENT_REF, tmp_path / "report", log_to_mlflow=False)
    html = res.html.read_text()
    assert (tmp_path / "report" / "rsr_vs_length.png").stat().st_size > 10_000
    assert "above the next in" in html and "100% settled" in html and "not settled" in html
    assert "<b>RSR goes with length</b> for verbose" in html and "--baseline random" in html


def test_rsr_publish_with_a_random_baseline_from_the_command_line(state: StateDir) -> None:
    args = ["publish", "--student", STUDENT_REF, "--dtype", "float32", "--name", "cli-sft", "--metric", "length"]
    out = CliRunner().invoke(app, [*args, "--baseline", "random", "--baseline-seed", "3", "--state", str(state.root)])
    assert out.exit_code == 0, out.output
    assert "and its random baseline (seed 3, the same response tokens within 2%)" in out.output
    with Reader.open(state.duckdb) as reader:
        _, rows = reader.query(
            "SELECT name, params->>'$.baseline.seed', params->>'$.policy.metric' FROM publications ORDER BY name"
        )
    assert rows == [("cli-sft", "3", "length"), ("cli-sft-random", "3", "length")]
