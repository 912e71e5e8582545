"""`rsr report` on a real store populated by hand (tests/test_sql.build_store) and a real MLflow sqlite store."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from mlflow import MlflowClient
from PIL import Image, ImageStat
from test_sql import STUDENT_ID, STUDENT_REF, build_store  # tests/ is on sys.path (pytest's rootdir insertion)
from typer.testing import CliRunner

from rsr.cli import app
from rsr.config import StateDir
from rsr.lock import writer_lock
from rsr.report import PNG_NAMES, build_report, resolve_student
from rsr.store import Store

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
    for name in (*PNG_NAMES, *TEACHERS, STUDENT_ID, "tiny-sft", run_id):
        assert name in html
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

    bad = CliRunner().invoke(app, ["report", "--student", "nobody", "--out", str(tmp_path), "--state", str(state.root)])
    assert bad.exit_code == 2 and "no student 'nobody'" in bad.output and STUDENT_REF in bad.output


def test_student_without_publication_and_newest_registration(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = build_store(home)
    with Store.open(db) as store:  # a later registration of the same ref (e.g. new weights): it wins
        store.register_student("tiny-student@fff999", STUDENT_REF, "fff999", {})
    with duckdb.connect(str(db), read_only=True) as con:
        assert resolve_student(con, STUDENT_REF) == ("tiny-student@fff999", STUDENT_REF, [STUDENT_ID])
        assert resolve_student(con, STUDENT_ID)[0] == STUDENT_ID  # an exact id is taken as given

    state = StateDir(home)
    with writer_lock(home, "flow pipeline"):  # a flow is writing: the report reads a snapshot
        res = build_report(state, STUDENT_REF, tmp_path / "out")
    assert res.student_id == "tiny-student@fff999" and res.mlflow_run_id is None
    assert any("snapshot" in w for w in res.warnings) and any("nothing logged to MLflow" in w for w in res.warnings)
    for png in res.pngs:  # "no scores yet" panels are still real pictures
        _check_png(png)
    html = res.html.read_text()
    assert "no publication for this student yet" in html and STUDENT_ID in html  # other registration listed
