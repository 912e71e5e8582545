"""What a deployment run may read: files under RSR_DATA_ROOTS (symlinks followed), hub ids RSR_HUB_ALLOW names,
and event payloads of plain values only. The end-to-end check on a real server is tests/e2e/test_event_triggers.py."""

from __future__ import annotations

import json
import os

import pytest

from rsr.config import BenchmarkSpec
from rsr.settings import DataScope, OutsideData
from rsr.spec import StudentSpec
from rsr_flows._entry import (
    BadPayload,
    BenchmarkAdded,
    StudentAdded,
    TeacherAdded,
    benchmark_input,
    parse_payload,
    student_input,
    teacher_input,
)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.jsonl").write_text("{}\n")
    (data / "escape").symlink_to("/etc/passwd")
    (data / "up").symlink_to(tmp_path)
    monkeypatch.setenv("RSR_DATA_ROOTS", f"{data}{os.pathsep}{tmp_path / 'other'}")
    monkeypatch.setenv("RSR_HUB_ALLOW", "team-a, open-r1/OpenR1-Math-220k")
    return data


def test_a_deployment_run_reads_only_under_the_roots(roots, tmp_path):
    scope = DataScope.from_env(deployed=True)
    assert scope.path(roots / "t.jsonl") == (roots / "t.jsonl").resolve()
    for outside in ["/etc/passwd", roots / "escape", roots / "up" / "x.jsonl", roots / ".." / "t.jsonl"]:
        with pytest.raises(OutsideData, match="outside the data roots"):
            scope.path(outside)
    with pytest.raises(OutsideData, match="problems file '/proc/self/environ' is outside"):
        teacher_input(scope, str(roots / "t.jsonl"), None, "/proc/self/environ")


def test_hub_ids_only_as_allowed(roots):
    scope = DataScope.from_env(deployed=True)
    assert scope.hub_id("team-a/anything") == "team-a/anything"
    assert scope.hub_id("open-r1/OpenR1-Math-220k") == "open-r1/OpenR1-Math-220k"
    for refused in ["open-r1/other", "evil/data", "team-a/../x", "team-a-evil/x", "https://x/y"]:
        with pytest.raises(OutsideData, match="not in the allowed hub ids"):
            scope.hub_id(refused)
    # The ingest reader's own rule: hf + not a path = a hub id; any other input is a path.
    assert teacher_input(scope, "team-a/set", "hf", None) == ("team-a/set", None)
    with pytest.raises(OutsideData, match="outside the data roots"):
        teacher_input(scope, "team-a/set", "messages", None)
    with pytest.raises(OutsideData):
        student_input(scope, StudentSpec(ref="evil/model"))
    assert student_input(scope, StudentSpec(ref="smollm2-135m", chat_template="llama3")).ref == "smollm2-135m"
    with pytest.raises(OutsideData, match="chat template"):
        student_input(scope, StudentSpec(chat_template="/etc/hostname"))


def test_unset_roots_confine_a_deployment_to_nothing_and_leave_the_shell_free(monkeypatch, tmp_path):
    monkeypatch.delenv("RSR_DATA_ROOTS", raising=False)
    monkeypatch.delenv("RSR_HUB_ALLOW", raising=False)
    with pytest.raises(OutsideData, match="RSR_DATA_ROOTS is not set"):
        DataScope.from_env(deployed=True).path(tmp_path)
    with pytest.raises(OutsideData, match="RSR_HUB_ALLOW is not set"):
        DataScope.from_env(deployed=True).hub_id("org/x")
    shell = DataScope.from_env(deployed=False)
    assert shell.source("/etc/passwd", hub=False) == "/etc/passwd" and shell.source("org/x", hub=True) == "org/x"
    monkeypatch.setenv("RSR_DATA_ROOTS", str(tmp_path))  # set, it confines the shell too
    with pytest.raises(OutsideData):
        DataScope.from_env(deployed=False).source("/etc/passwd", hub=False)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"name": {"__prefect_kind": "workspace_variable", "variable_name": "t"}, "file": "f"}, "payload.name is a"),
        ({"name": "t", "file": "f", "mapping": {"problem": {"__prefect_kind": "jinja"}}}, "payload.mapping.problem"),
        ({"name": "t", "file": "f", "mapping": {"problem": ["q"]}}, "mapping.problem: Input should be a valid str"),
        ({"name": "t", "file": "f", "score": "yes"}, "score: Input should be a valid boolean"),
        ({"name": "t", "file": "f", "format": "pickle"}, "format: Input should be"),
        ({"name": "t", "file": "f", "state": "/tmp/other"}, "state: Extra inputs are not permitted"),
        ({"file": "f"}, "name: Field required"),
        ([1, 2], "Input should be a valid dictionary"),
    ],
)
def test_a_payload_is_plain_values_only(payload, reason):
    with pytest.raises(BadPayload, match="rsr.teacher.added") as err:
        parse_payload(TeacherAdded, json.dumps(payload), "rsr.teacher.added")
    assert reason in str(err.value)


def test_a_plain_payload_is_read_as_sent():
    sent = {"name": "Ünï 名前 $x$", "file": "/d/t.jsonl", "mapping": {"problem": "q"}, "score": False}
    got = parse_payload(TeacherAdded, json.dumps(sent), "rsr.teacher.added")
    assert (got.name, got.mapping, got.score, got.publish) == (sent["name"], {"problem": "q"}, False, False)
    with pytest.raises(BadPayload, match="not JSON text"):
        parse_payload(StudentAdded, "{ref: x}", "rsr.student.added")


def test_a_benchmark_is_read_only_under_the_roots_or_from_an_allowed_hub_id(roots, monkeypatch):
    scope = DataScope.from_env(deployed=True)
    inside = benchmark_input(scope, BenchmarkSpec(name="b", source=str(roots / "t.jsonl")))
    assert inside.source == str((roots / "t.jsonl").resolve())
    with pytest.raises(OutsideData, match="benchmark 'b' '/etc/passwd' is outside the data roots"):
        benchmark_input(scope, BenchmarkSpec(name="b", source="/etc/passwd"))
    with pytest.raises(OutsideData, match="benchmark 'aime24' 'HuggingFaceH4/aime_2024' is not in the allowed hub ids"):
        benchmark_input(scope, BenchmarkSpec(name="aime24"))  # a preset is its hub id
    monkeypatch.setenv("RSR_HUB_ALLOW", "HuggingFaceH4")
    assert benchmark_input(DataScope.from_env(deployed=True), BenchmarkSpec(name="aime24")).source is None
    sent = {"name": "b", "source": "org/set", "problem": "q", "ngram": 13}
    assert parse_payload(BenchmarkAdded, json.dumps(sent), "rsr.benchmark.added").model_dump(exclude_none=True) == sent
    with pytest.raises(BadPayload, match="payload.source is a Prefect template object"):
        parse_payload(BenchmarkAdded, json.dumps({"name": "b", "source": {"__prefect_kind": "jinja"}}), "e")
