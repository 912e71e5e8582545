"""`rsr report` on a real store populated by hand (tests/support/hand_made_store.py) and a real MLflow sqlite store;
the teacher-selection board (view + bootstrap intervals) against rsr.metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image, ImageStat
from typer.testing import CliRunner

from rsr.cli import app
from rsr.metric import dataset_rsr_of_means
from rsr.report.page import PNG_NAMES, bootstrap_ci, build_report, teacher_board
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.connect import writer_lock
from rsr.store.queries import Reader
from rsr.store.writer import Store
from tests.support.hand_made_store import STUDENT_ID, STUDENT_REF, build_store

TEACHERS = ("alpha-teacher", "beta-teacher")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[StateDir, str]:
    """A state folder whose publication points at a real (finished) MLflow run, as rsr.publish leaves it."""
    state = StateDir(tmp_path_factory.mktemp("report") / "home")
    state.root.mkdir(parents=True)
    client = MlflowClient(tracking_uri=state.mlflow_uri)
    exp = client.create_experiment("rsr-curate", artifact_location=state.mlflow_artifacts.resolve().as_uri())
    run_id = client.create_run(exp, run_name="publish-tiny-sft").info.run_id
    client.set_terminated(run_id, "FINISHED")
    build_store(state.root, mlflow_run_id=run_id)
    return state, run_id


def _check_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width >= 400 and img.height >= 300
        gray = img.convert("L")
        assert ImageStat.Stat(gray).var[0] > 0  # not blank
        assert len(gray.getcolors(maxcolors=1 << 16) or []) > 10  # more than a frame: marks, text, axes


def test_report_writes_plots_html_and_logs_to_mlflow(published, tmp_path: Path) -> None:
    state, run_id = published
    out = tmp_path / "report"
    res = build_report(state, STUDENT_REF, out)

    assert [p.name for p in res.pngs] == list(PNG_NAMES) and res.student_id == STUDENT_ID
    for png in res.pngs:
        _check_png(png)
    html = res.html.read_text()
    assert res.html == out / "report.html" and html.startswith("<!doctype html>")
    for name in (*PNG_NAMES, *TEACHERS, STUDENT_ID, "tiny-sft", run_id, "95% interval", "mean response tokens"):
        assert name in html
    assert "lowest dataset RSR first) picks <b>alpha-teacher</b>" in html
    assert html.count("data:image/png;base64,") == len(PNG_NAMES)  # self-contained: the page works alone

    assert res.mlflow_run_id == run_id and res.warnings == []
    logged = {a.path for a in MlflowClient(tracking_uri=state.mlflow_uri).list_artifacts(run_id, "report")}
    assert logged == {f"report/{n}" for n in (*PNG_NAMES, "report.html")}


def test_report_cli(published, tmp_path: Path) -> None:
    state, _ = published
    (tmp_path / "keep.txt").write_text("the user's own file")
    out = CliRunner().invoke(
        app, ["report", "--student", STUDENT_ID, "--out", str(tmp_path), "--state", str(state.root), "--no-mlflow"]
    )
    assert out.exit_code == 0, out.output
    assert all(f"wrote {tmp_path / n}" in out.output for n in (*PNG_NAMES, "report.html"))
    assert "MLflow" not in out.output and (tmp_path / "keep.txt").exists()

    status = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["status", "--state", str(state.root)])  # same board
    assert status.exit_code == 0, status.output
    assert "95% interval" in status.output and "alpha-teacher" in status.output and "1.500" in status.output
    assert "scores in float32" in status.output
    # alpha's third trajectory only failed: a failed column, 2/3 scored, and its RSR flagged as resting on a subset
    assert "failed" in status.output and "2/3" in status.output and "* dataset RSR on a subset" in status.output
    assert "truncated (left out of selection unless --include-truncated)" in status.output
    # a CI log or a pipe (80 columns by default) still gets every name, interval and command whole, on one line
    narrow = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["status", "--state", str(state.root)])
    assert "…" not in narrow.output and "95% interval" in narrow.output
    assert f"mlflow ui --backend-store-uri {state.mlflow_uri}\n" in narrow.output

    bad = CliRunner().invoke(app, ["report", "--student", "nobody", "--out", str(tmp_path), "--state", str(state.root)])
    assert bad.exit_code == 2 and "no registered student matches --student nobody" in bad.output
    assert f"{STUDENT_REF}: --student {STUDENT_ID}" in bad.output  # what there is, and how to name it


def test_student_without_publication_and_newest_registration(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = build_store(home)
    with Store.open(db) as store:  # a later registration of the same ref (e.g. new weights): it wins
        store.register_student("tiny-student@fff999", STUDENT_REF, "fff999", {})
    with Reader.open(db) as store:
        assert [r.student_id for r in store.registrations()] == ["tiny-student@fff999", STUDENT_ID]
        # One model, template and option set: its newest weights; an exact id is taken as given.
        assert store.find_student(StudentSpec(ref=STUDENT_REF)).student_id == "tiny-student@fff999"
        assert store.find_student(StudentSpec(ref=STUDENT_ID)).student_id == STUDENT_ID

    state = StateDir(home)
    with writer_lock(home, "flow pipeline"):  # a flow is writing: the report reads a snapshot
        res = build_report(state, STUDENT_REF, tmp_path / "out")
    assert res.student_id == "tiny-student@fff999" and res.mlflow_run_id is None
    assert any("snapshot" in w for w in res.warnings) and any("nothing logged to MLflow" in w for w in res.warnings)
    for png in res.pngs:  # "no scores yet" panels are still real pictures
        _check_png(png)
    html = res.html.read_text()
    assert "no publication for this student yet" in html and STUDENT_ID in html  # other registration listed


def test_teacher_board_ranks_by_dataset_rsr_with_bootstrap_intervals(published) -> None:
    state, _ = published
    with Reader.open(state.duckdb) as store:
        board = teacher_board(store, STUDENT_ID)
        _, used = store.query(
            "SELECT teacher, mean_rank, mean_surprisal FROM latest_scores WHERE student_id = ? AND NOT truncated",
            [STUDENT_ID],
        )
    assert board["teacher"].tolist() == list(TEACHERS) and board["rank"].tolist() == [1, 2]  # lowest RSR first
    for _, row in board.iterrows():  # the view's dataset RSR is rsr.metric's, on the same rows
        mine = [(r, s) for t, r, s in used if t == row["teacher"]]
        assert row["dataset_rsr"] == pytest.approx(dataset_rsr_of_means(*zip(*mine, strict=True)))
        assert row["ci_low"] <= row["dataset_rsr"] <= row["ci_high"]
        assert row["n"] == len(mine) and row["mean_response_tokens"] == 10
    alpha, beta = board.to_dict("records")
    assert (alpha["ci_low"], alpha["ci_high"]) >= (1.0, 1.0) and alpha["ci_high"] <= 2.0  # within its rows' RSRs
    assert alpha["accuracy"] == 1.0 and beta["accuracy"] == 0.5 and alpha["selected"] == 2 and beta["selected"] == 0


def test_bootstrap_interval_is_seeded_and_narrows_with_more_trajectories() -> None:
    rng = np.random.default_rng(7)
    ranks, surprisals = rng.gamma(2.0, 2.0, 4000), rng.gamma(3.0, 1.0, 4000)
    point = dataset_rsr_of_means(ranks, surprisals)
    small = bootstrap_ci(ranks[:100], surprisals[:100])
    large = bootstrap_ci(ranks, surprisals)
    assert large == bootstrap_ci(ranks, surprisals)  # same seed, same interval
    assert bootstrap_ci(ranks, surprisals, seed=1) != large
    assert large[0] < point < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 3  # ~ 1/sqrt(n): 40x the data, ~6x narrower
    assert bootstrap_ci(ranks[:1], surprisals[:1]) == pytest.approx((point_one := ranks[0] / surprisals[0], point_one))
    assert all(np.isnan(bootstrap_ci(ranks[:0], surprisals[:0])))
