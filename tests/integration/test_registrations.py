"""Registrations told apart by their template options, on a real DuckDB file.

One model registered twice, with and without Qwen3-style thinking off (`chat_template_kwargs`), is two students:
each has its own digest and scores; a student is named by its id or by what tells it apart (rsr.spec), and a name
that fits both is refused, never answered with the newest.
"""

from __future__ import annotations

from html import unescape
from pathlib import Path

import pytest

from rsr.report.page import build_report
from rsr.settings import StateDir
from rsr.spec import AmbiguousStudent, StudentSpec, UnknownStudent
from rsr.store.queries import Reader
from rsr.store.writer import Store
from rsr_tasks.score import find_student
from tests.support.hand_made_store import STUDENT_ID, STUDENT_REF, build_store

THINKING_OFF = {"enable_thinking": False}
THINKING_ON = {"enable_thinking": True}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The hand-made store (STUDENT_ID: no options, float32 scores) and, newer, the same model with thinking off."""
    db = build_store(tmp_path / "home")
    with Store.open(db) as store:
        info = {"dtype": "float32", "chat_template": None, "chat_template_kwargs": THINKING_OFF}
        spec = StudentSpec(ref=STUDENT_REF, chat_template_kwargs=THINKING_OFF)
        store.register_student("tiny-student@off999", STUDENT_REF, "off999", info, spec)
    return db


def test_a_registration_is_named_by_id_or_by_what_tells_it_apart(db: Path) -> None:
    with Reader.open(db) as reader:
        assert [r.student_id for r in reader.registrations()] == ["tiny-student@off999", STUDENT_ID]  # newest first
        off = reader.find_student(StudentSpec(ref=STUDENT_REF, chat_template_kwargs=THINKING_OFF))
        assert off.student_id == "tiny-student@off999" and off.label == f'{STUDENT_REF} {{"enable_thinking": false}}'
        assert reader.find_student(StudentSpec(ref=STUDENT_REF, chat_template_kwargs={})).student_id == STUDENT_ID
        assert reader.find_student(StudentSpec(ref="tiny-student@off999")).student_id == "tiny-student@off999"
        with pytest.raises(AmbiguousStudent) as ambiguous:  # the bare ref names both: refused, never the newest
            reader.find_student(StudentSpec(ref=STUDENT_REF))
        with pytest.raises(UnknownStudent) as unknown:
            reader.find_student(StudentSpec(ref=STUDENT_REF, chat_template_kwargs={"enable_thinking": True}))
    assert f"--student {STUDENT_ID}" in str(ambiguous.value) and "--student tiny-student@off999" in str(ambiguous.value)
    assert "--chat-template-kwargs '{\"enable_thinking\": true}'" in str(unknown.value)


def test_find_student_takes_the_registration_the_spec_names(db: Path) -> None:
    spec = StudentSpec(ref=STUDENT_REF, dtype="float32", chat_template_kwargs={})  # '{}': the one without options
    found = find_student.fn(db, spec)
    assert found.student.student_id == STUDENT_ID and found.key.dtype == "float32"
    off = StudentSpec(ref=STUDENT_REF, dtype="float32", chat_template_kwargs=THINKING_OFF)
    with pytest.raises(ValueError, match="has no float32 scores"):  # found, and it has no scores of its own
        find_student.fn(db, off)


def test_the_report_names_the_other_registrations_with_how_to_name_them(db: Path, tmp_path: Path) -> None:
    with Store.open(db) as store:  # a third, newest registration: the report's student
        store.register_student("tiny-student@on999", STUDENT_REF, "on999", {},
                               StudentSpec(ref=STUDENT_REF, chat_template_kwargs=THINKING_ON))  # fmt: skip
    res = build_report(StateDir(db.parent), StudentSpec(ref="tiny-student@on999"), tmp_path / "out")
    assert res.student_id == "tiny-student@on999"
    html = unescape(res.html.read_text())
    assert f'{STUDENT_REF} {{"enable_thinking": false}}: --student tiny-student@off999' in html  # which is which
    assert f"{STUDENT_REF}: --student {STUDENT_ID}" in html
