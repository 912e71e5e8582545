"""Configs are read safely and input data is never executed or evaluated.

- config paths: relative ones are taken from the config file's folder (whatever the working directory); a
  missing teacher input is an error naming the config and the teacher, before any work; no shell expansion
  ($VAR, `cmd`, $(cmd), globs stay literal characters of a file name) and no eval; YAML is read with safe_load,
  so a Python-object tag is refused, not run. (`~` at the start of a path is the home folder, as in
  Path.expanduser: a path convention, not an expansion that runs anything.)
- data: message contents are data to the chat template, never template code: `{{ 7*7 }}`, `{% ... %}` and
  `raise_exception(...)` in a message render literally; a template itself runs in transformers' sandboxed Jinja
  (attribute tricks end as a per-record error); answers that look like Python are never evaluated by the verifier.
- the library's own code has no eval/exec/unsafe YAML/shell=True/os.system.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from rsr.config import PipelineConfig

REPO = Path(__file__).resolve().parents[2]


def _config(folder: Path, teachers: list[dict], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"teachers": teachers, **extra}))
    return path


def _teacher_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    return path


def test_relative_paths_are_taken_from_the_config_folder(tmp_path, monkeypatch):
    _teacher_file(tmp_path / "cfg" / "data" / "t.jsonl")
    (tmp_path / "cfg" / "problems.jsonl").write_text('{"problem": "q", "answer": "1"}\n')
    config = _config(tmp_path / "cfg", [{"name": "t", "path": "data/t.jsonl"}], problems="problems.jsonl")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = PipelineConfig.load(Path("..") / "cfg" / "pipeline.yaml")
    assert loaded.teachers[0].path == str(tmp_path / "cfg" / "data" / "t.jsonl")
    assert loaded.problems == str(tmp_path / "cfg" / "problems.jsonl")
    assert PipelineConfig.load(config) == loaded


def test_missing_teacher_input_names_the_config_and_the_teacher(tmp_path):
    config = _config(tmp_path / "cfg", [{"name": "gpt-x", "path": "runs/missing.jsonl"}])
    with pytest.raises(FileNotFoundError) as err:
        PipelineConfig.load(config)
    message = str(err.value)
    assert str(config) in message and "teacher 'gpt-x'" in message
    assert str(tmp_path / "cfg" / "runs" / "missing.jsonl") in message and "config's folder" in message
    _teacher_file(tmp_path / "cfg" / "t.jsonl")
    config = _config(tmp_path / "cfg", [{"name": "t", "path": "t.jsonl"}], problems="gold/none.jsonl")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{config}: problems file")):
        PipelineConfig.load(config)


def test_rsr_run_reports_a_missing_teacher_in_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rsr.cli import app

    config = _config(tmp_path / "cfg", [{"name": "gpt-x", "path": "missing.jsonl"}])
    monkeypatch.setenv("RSR_HOME", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert f"error: {config}: teacher 'gpt-x': input {tmp_path / 'cfg' / 'missing.jsonl'} does not exist" in (
        result.output + (result.stderr if result.stderr_bytes is not None else "")
    )


@pytest.mark.parametrize("name", ["$HOME/t.jsonl", "${HOME}.jsonl", "`touch PWNED`.jsonl", "$(touch PWNED).jsonl",
                                  "*.jsonl", "t.jsonl; touch PWNED", "%HOME%.jsonl"])  # fmt: skip
def test_no_shell_expansion_in_config_paths(tmp_path, monkeypatch, name):
    cfg = tmp_path / "cfg"
    _teacher_file(cfg / "t.jsonl")  # a glob or a variable would find this one: the literal name must not
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(cfg))
    config = _config(cfg, [{"name": "t", "path": name}])
    with pytest.raises(FileNotFoundError, match=re.escape(str(cfg / name))):
        PipelineConfig.load(config)
    _teacher_file(cfg / name)  # a file really called that is read, literally
    assert PipelineConfig.load(config).teachers[0].path == str(cfg / name)
    assert list(tmp_path.rglob("PWNED")) == []  # nothing ran a command


@pytest.mark.parametrize(
    "payload",
    ["!!python/object/apply:os.system ['touch {marker}']", "!!python/name:os.system",
     "!!python/object/new:subprocess.Popen [['touch', '{marker}']]"],
)  # fmt: skip
def test_yaml_tags_are_refused_not_run(tmp_path, payload):
    marker = tmp_path / "PWNED"
    _teacher_file(tmp_path / "t.jsonl")
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"teachers:\n- name: t\n  path: t.jsonl\noutput: {payload.format(marker=marker)}\n")
    with pytest.raises(ValueError):
        PipelineConfig.load(config)
    assert not marker.exists()


def test_the_code_has_no_eval_exec_unsafe_yaml_or_shell():
    risky = re.compile(
        r"(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|shell\s*=\s*True|os\.system\(|"
        r"os\.popen\(|pickle\.loads?\(|jinja2\.Template\(|Environment\("
    )
    hits = []
    for folder in ("rsr", "tasks", "flows", "deployments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                code = line.split("#", 1)[0]
                if risky.search(code):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hits == []


# ---- input data is data, not template code -------------------------------------------------------------------------

PAYLOADS = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}x{% endfor %}",
    "{{ raise_exception('boom') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{# a comment #}{%- if true -%}yes{%- endif -%}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_template_syntax_in_messages_stays_literal(smollm, payload):
    messages = [
        {"role": "system", "content": f"sys {payload}"},
        {"role": "user", "content": f"user {payload}"},
        {"role": "assistant", "content": f"reply {payload}"},
    ]
    text, spans = smollm.render(messages)
    for m in messages:
        assert m["content"] in text  # each content verbatim
    assert "49" not in text and "xxx" not in text and "<class" not in text
    (start, end), = spans  # fmt: skip
    assert text[start:end] == f"reply {payload}"  # the scored span is exactly the response, unexpanded
    (result,) = smollm.score([messages], progress=False)
    assert result.error is None and result.stats.n_tokens > 0


def test_a_template_runs_sandboxed(smollm):
    """A (config-supplied) template reaching for Python internals is stopped by the sandbox: a per-record error."""
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    student = dataclasses.replace(smollm, chat_template=evil)
    (result,) = student.score([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]],
                              progress=False)  # fmt: skip
    assert result.stats is None and "chat template refused" in result.error


@pytest.mark.slow
def test_answers_that_look_like_code_are_never_evaluated(tmp_path):
    from rsr.curate.verify import VerifierPool, verify_many
    from rsr.records import Message, Trajectory

    marker = tmp_path / "PWNED"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"open('{marker}', 'w')",
        f"\\text{{__import__('os').system('touch {marker}')}}",
        f"exec(\"open('{marker}','w')\")",
        "(lambda: __import__('os'))()",
    ]
    trajectories = [
        Trajectory.build(
            teacher="t",
            problem=f"problem {i}",
            messages=[Message(role="user", content="q"), Message(role="assistant", content=f"\\boxed{{{p}}}")],
            gold_answer="49",
            source_file="x.jsonl",
            source_line=i,
        )
        for i, p in enumerate(payloads)
    ]
    with VerifierPool(workers=1) as pool:
        verdicts = verify_many(trajectories, timeout_s=5.0, pool=pool)
    assert not marker.exists()
    assert all(v.verdict != "correct" for v in verdicts), [(v.extracted_answer, v.verdict) for v in verdicts]
