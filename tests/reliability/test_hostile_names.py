"""A name is only a name: teacher names of any Unicode, with slashes, `..`, TeX, HTML or 300 characters, are
stored as given and mapped or escaped where they meet a stricter world: MLflow keys (a real MLflow store), file
names, matplotlib text (no mathtext) and the dataset card's Markdown."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import DatasetCard
from mlflow import MlflowClient

from rsr.metric import METRIC_VERSION
from rsr.publish.card import code, text
from rsr.publish.files import publish_selection, source_files
from rsr.publish.lineage import Tracking, mlflow_key
from rsr.publish.manifest import Request
from rsr.records import Message, Score, Trajectory, Verdict
from rsr.report.page import PNG_NAMES, build_report, file_slug
from rsr.select import SelectionPolicy, select, selection_counts
from rsr.settings import StateDir
from rsr.store.queries import Reader
from rsr.store.writer import Store

HOSTILE = [
    "team-a//model",
    "trailing/",
    "x/../y",
    "t" * 300,
    r"gpt $\undefinedmacro$",
    "<script>alert(1)</script>",
    "名前 | *bold* `tick`",
    "a b",
]
EVERY = SelectionPolicy(name="rsr_threshold", threshold=100.0)


def _hostile_state(home: Path, mlflow_template: Path) -> None:
    """One problem per hostile teacher, verified and scored for student "stu"."""
    home.mkdir(parents=True)
    (home / "mlflow.db").write_bytes(mlflow_template.read_bytes())
    with Store.open(home / "rsr.duckdb") as store:
        run = store.start_run("curate-teacher", {})
        trajs = []
        for i, teacher in enumerate(HOSTILE):
            msgs = [Message(role="user", content=f"P{i}"), Message(role="assistant", content=f"answer {i}")]
            trajs.append(Trajectory.build(teacher=teacher, problem=f"P{i}", messages=msgs, gold_answer=str(i),
                                          source_file=f"/data/{i}.jsonl", source_line=1))  # fmt: skip
        store.add_trajectories(trajs, run)
        store.set_verdicts([Verdict(trajectory_id=t.trajectory_id, verdict="correct") for t in trajs], run)
        store.register_student("stu", "tiny/student", "dg", {})
        scores = [Score(trajectory_id=t.trajectory_id, student_id="stu", metric_version=METRIC_VERSION, r_max=100,
                        dtype="float32", n_tokens=10, sum_rank=10.0 * (i + 1), sum_surprisal=10.0, rsr=i + 1.0,
                        mean_rank=i + 1.0, mean_surprisal=1.0) for i, t in enumerate(trajs)]  # fmt: skip
        store.add_scores(scores, run)


def test_hostile_names_publish_to_mlflow_and_a_safe_card(tmp_path, mlflow_template):
    home = tmp_path / "home"
    _hostile_state(home, mlflow_template)
    tracking = Tracking(f"sqlite:///{home / 'mlflow.db'}", home / "mlartifacts")
    with Store.open(home / "rsr.duckdb") as store:
        run = store.start_run("publish-dataset", {})
        cands = store.candidates("stu")
        chosen = select(cands, EVERY)
        req = Request("hostile-sft", "stu", "tiny/student", EVERY, run, None)
        counts = selection_counts(cands, chosen, EVERY)
        sources = source_files(store, chosen)
        pub = publish_selection(
            store, chosen, req, out_root=home / "datasets", tracking=tracking, sources=sources, counts=counts
        )
        _, stored = store.query("SELECT DISTINCT teacher FROM trajectories")
    assert sorted(t for (t,) in stored) == sorted(HOSTILE)  # stored as given
    mlflow_run = MlflowClient(tracking_uri=tracking.uri).get_run(pub.mlflow_run_id)
    assert mlflow_run.info.status == "FINISHED" and pub.n_rows == len(HOSTILE)
    for teacher in HOSTILE:
        assert mlflow_run.data.metrics[mlflow_key("n_rows", teacher)] == 1
    assert len({mlflow_key("n_rows", t) for t in HOSTILE}) == len(HOSTILE)

    readme = (pub.path / "README.md").read_text()
    assert "<script>" not in readme and "&lt;script&gt;" in readme
    assert DatasetCard(readme).data.to_dict()["pretty_name"] == "hostile-sft"
    table = readme.split("## Per teacher")[1].split("Dataset RSR =")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| teacher")]
    assert len(rows) == len(HOSTILE)
    for row, teacher in zip(rows, sorted(HOSTILE), strict=True):  # one row each: no `|` of a name split a cell
        assert row.startswith(f"| {text(teacher)} |") and len(re.split(r"(?<!\\)\|", row)) == 9


def test_hostile_names_draw_as_typed_in_the_report(tmp_path, mlflow_template):
    home = tmp_path / "home"
    _hostile_state(home, mlflow_template)
    out = tmp_path / "report"
    result = build_report(StateDir(home), "tiny/student", out, log_to_mlflow=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([*PNG_NAMES, "report.html"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.tmp-")] == []  # the staging is gone
    page = result.html.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert all(p.stat().st_size > 10_000 for p in result.pngs)
    with Reader.open(home / "rsr.duckdb") as reader:
        assert {r.ref for r in reader.students()} == {"tiny/student"}


def test_names_meet_files_and_markdown_without_breaking_them():
    slugs = {file_slug(t) for t in HOSTILE}
    assert len(slugs) == len(HOSTILE) and all(re.fullmatch(r"[A-Za-z0-9._-]{1,80}", s) for s in slugs)
    assert file_slug("alpha-teacher") == "alpha-teacher"  # an already safe name stays as it is
    assert code("a`b|c") == "``a`b\\|c``" and code("`x") == "`` `x ``"
    assert text("<b>|x|</b>") == "&lt;b&gt;\\|x\\|&lt;/b&gt;"
    assert all(len(mlflow_key("rsr_mean", t)) <= 250 for t in HOSTILE)
    assert mlflow_key("n_rows", "alpha-teacher") == "n_rows.alpha-teacher"


def test_a_hostile_name_through_add_teacher_and_status(tmp_path):
    """`rsr add-teacher` stores the name exactly as typed, and `rsr status` shows it."""
    import json
    import subprocess
    import sys

    from tests.support import servers

    name = "team-a//model/../" + r"<script>$\undefinedmacro$ 名前/" + "x" * 250
    teacher = tmp_path / "t.jsonl"
    turns = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    teacher.write_text(json.dumps({"messages": turns}) + "\n")
    env = servers.base_env(tmp_path / "prefect") | {"RSR_HOME": str(tmp_path / "home")}

    def rsr(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "rsr.cli", *args]
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    done = rsr("add-teacher", name, str(teacher), "--no-score")
    assert done.returncode == 0, done.stderr
    with Reader.open(tmp_path / "home" / "rsr.duckdb") as reader:
        assert reader.query("SELECT DISTINCT teacher FROM trajectories")[1] == [(name,)]
    shown = rsr("status")
    assert shown.returncode == 0 and not shown.stderr, shown.stderr  # no student yet: no board, and no crash
