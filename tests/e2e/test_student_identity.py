"""One student, one identity, in every command: the embedded student registered twice (its own template, and a
template given by a relative path with options) on a real DuckDB file, then named by spec, by id and by the bare
ref in publish, report and explain; the template is kept by content, so another folder (and the file gone) changes
nothing; add-student --publish says when nothing new was scored."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rsr.cli import app
from rsr.store.queries import Reader

# chatml with an option: {% if shout %} upper-cases the user turn, so the option changes what is rendered.
TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{% if m['role'] == 'user' and shout %}{{ m['content'] | upper }}{% else %}{{ m['content'] }}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SHOUT = '{"shout": true}'
PROBLEMS = [("What is 2 + 3?", "5"), ("What is 4 * 6?", "24")]


@contextmanager
def cwd(folder: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _teacher(path: Path, offset: int = 0) -> Path:
    rows = [
        {
            "problem": q.replace("?", f" (case {offset + i})?"),
            "response": f"So the answer is \\boxed{{{a}}}.",
            "answer": a,
        }
        for i, (q, a) in enumerate(PROBLEMS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ok(runner: CliRunner, *args: str):
    out = runner.invoke(app, list(args))
    assert out.exit_code == 0, out.output
    return out


@pytest.fixture(scope="module")
def two_registrations(tmp_path_factory) -> Iterator[dict]:
    """A state with one teacher and smollm2-135m registered twice: own template; a relative template + options."""
    root = tmp_path_factory.mktemp("identity")
    home, here, elsewhere = root / "state", root / "here", root / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    (here / "shout.jinja").write_text(TEMPLATE)
    before = os.environ.get("RSR_HOME")
    os.environ["RSR_HOME"] = str(home)
    runner = CliRunner()
    try:
        _ok(runner, "add-teacher", "tutor", str(_teacher(root / "tutor.jsonl")), "--no-score")
        _ok(runner, "add-student", "smollm2-135m", "--dtype", "float32")
        with cwd(here):  # the template by a path relative to this folder
            _ok(runner, "add-student", "smollm2-135m", "--dtype", "float32", "--chat-template", "shout.jinja",
                "--chat-template-kwargs", SHOUT)  # fmt: skip
        with Reader.open(home / "rsr.duckdb") as reader:
            regs = {r.chat_template_kwargs is not None: r for r in reader.registrations()}
        yield {"root": root, "home": home, "here": here, "elsewhere": elsewhere, "plain": regs[False],
               "shout": regs[True], "runner": runner}  # fmt: skip
    finally:
        os.environ.pop("RSR_HOME") if before is None else os.environ.__setitem__("RSR_HOME", before)


def test_the_bare_ref_means_the_same_in_publish_report_and_explain(two_registrations, tmp_path):
    """Two registrations of one model: the bare ref names neither, and each command refuses with the same list."""
    c = two_registrations
    runner, plain, shout = c["runner"], c["plain"], c["shout"]
    with Reader.open(c["home"] / "rsr.duckdb") as reader:
        [trajectory] = reader.query("SELECT trajectory_id FROM trajectories LIMIT 1")[1][0]
    for args in (
        ["publish", "--student", "smollm2-135m", "--dtype", "float32"],
        ["report", "--student", "smollm2-135m", "--out", str(tmp_path / "r"), "--no-mlflow"],
        ["explain", trajectory, "--student", "smollm2-135m", "--out", str(tmp_path / "e.html")],
    ):
        out = runner.invoke(app, args)
        assert out.exit_code == 2, (args, out.output)
        assert "names 2 registrations" in out.output, out.output
        assert f"--student {plain.student_id}" in out.output and f"--student {shout.student_id}" in out.output
    assert plain.label == "smollm2-135m" and shout.label == 'smollm2-135m [shout.jinja] {"shout": true}'


def test_a_registration_with_options_is_published_by_spec_and_by_id(two_registrations):
    c = two_registrations
    runner, shout = c["runner"], c["shout"]
    by_id = _ok(runner, "publish", "--student", shout.student_id, "--dtype", "float32", "--name", "by-id")
    assert f"of {shout.student_id} to" in by_id.output
    with cwd(c["here"]):  # the same template by content, and the options
        by_spec = _ok(runner, "publish", "--student", "smollm2-135m", "--dtype", "float32", "--chat-template",
                      "shout.jinja", "--chat-template-kwargs", SHOUT, "--name", "by-spec")  # fmt: skip
    assert f"of {shout.student_id} to" in by_spec.output
    plain = _ok(runner, "publish", "--student", "smollm2-135m", "--chat-template-kwargs", "{}", "--dtype", "float32",
                "--name", "no-options")  # fmt: skip
    assert f"of {c['plain'].student_id} to" in plain.output  # '{}': the registration without options


def test_explain_by_id_renders_with_the_registered_template(two_registrations, tmp_path):
    c = two_registrations
    with Reader.open(c["home"] / "rsr.duckdb") as reader:
        [trajectory] = reader.query("SELECT trajectory_id FROM trajectories ORDER BY 1 LIMIT 1")[1][0]
    with cwd(c["elsewhere"]):  # no template file here: it comes from the store, by content
        _ok(c["runner"], "explain", trajectory, "--student", c["shout"].student_id, "--out", str(tmp_path / "p.html"))
    page = (tmp_path / "p.html").read_text()
    assert ">WHAT</span>" in page  # the user turn as the registered template renders it with its option
    assert "The totals match the stored score exactly" in page


def test_a_relative_template_path_works_from_another_folder(two_registrations, tmp_path):
    """The template was given as `shout.jinja` in another folder; a new teacher from here, with the file gone, is
    scored for both registrations."""
    c = two_registrations
    (c["here"] / "shout.jinja").rename(c["root"] / "moved.jinja")
    try:
        with cwd(c["elsewhere"]):
            out = _ok(c["runner"], "add-teacher", "second", str(_teacher(tmp_path / "second.jsonl", 10)))
    finally:
        (c["root"] / "moved.jinja").rename(c["here"] / "shout.jinja")
    assert (
        f"scored 2 for {c['plain'].student_id}" in out.output and f"scored 2 for {c['shout'].student_id}" in out.output
    )


def test_add_student_publish_with_nothing_new_says_so(two_registrations):
    c = two_registrations
    out = _ok(c["runner"], "add-student", c["shout"].student_id, "--publish")
    assert "scored 0 trajectories" in out.output
    assert f"nothing new was scored for {c['shout'].student_id}: no dataset published" in out.output


def test_the_docs_queries_run_as_printed_on_several_registrations(two_registrations):
    """Every query of docs/sql.md's cookbook runs against this state and names each registration apart."""
    from rsr.store.sql import run_query
    from tests.support.docs_sql import cookbook_queries

    queries = cookbook_queries()
    assert len(queries) >= 5
    for query in queries:
        res = run_query(two_registrations["home"] / "rsr.duckdb", query)
        assert res.columns, query
    res = run_query(two_registrations["home"] / "rsr.duckdb", "SELECT DISTINCT student_label FROM teacher_selection")
    assert len(res.rows) == 2
