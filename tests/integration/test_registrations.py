"""Registrations told apart by their template options, on a real DuckDB file.

One model registered twice, with Qwen3-style thinking on and off (`chat_template_kwargs`), is two students: each
has its own digest and scores, and find-student (publish, select) must take the one the spec names, never the
newest of the two.
"""

from __future__ import annotations

from html import unescape
from pathlib import Path

import pytest

from rsr.config import StudentSpec
from rsr.report.page import build_report
from rsr.settings import StateDir
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
        store.register_student("tiny-student@off999", STUDENT_REF, "off999", info)
    return db


def test_registrations_match_the_template_options(db: Path) -> None:
    with Reader.open(db) as reader:
        assert [r.student_id for r in reader.registrations(STUDENT_REF)] == ["tiny-student@off999", STUDENT_ID]
        assert [r.student_id for r in reader.registrations(STUDENT_REF, None, THINKING_OFF)] == ["tiny-student@off999"]
        for no_options in (None, {}):  # the older registration, although the newer one shares its ref and template
            assert [r.student_id for r in reader.registrations(STUDENT_REF, None, no_options)] == [STUDENT_ID]
        with pytest.raises(ValueError) as err:
            reader.registrations(STUDENT_REF, None, {"enable_thinking": True})
    message = str(err.value)
    assert 'with chat_template_kwargs {"enable_thinking": true}' in message
    assert f'{STUDENT_REF} (chat_template_kwargs {{"enable_thinking": false}})' in message  # to choose from


def test_find_student_takes_the_registration_with_the_specs_options(db: Path) -> None:
    spec = StudentSpec(ref=STUDENT_REF, dtype="float32")  # no options: not the newer thinking-off registration
    found = find_student.fn(db, spec)
    assert found.student.student_id == STUDENT_ID and found.key.dtype == "float32"
    off = StudentSpec(ref=STUDENT_REF, dtype="float32", chat_template_kwargs=THINKING_OFF)
    with pytest.raises(ValueError, match="has no float32 scores"):  # found, and it has no scores of its own
        find_student.fn(db, off)


def test_the_report_names_the_other_registrations_with_their_options(db: Path, tmp_path: Path) -> None:
    with Store.open(db) as store:  # a third, newest registration: the report's student
        store.register_student("tiny-student@on999", STUDENT_REF, "on999", {"chat_template_kwargs": THINKING_ON})
    res = build_report(StateDir(db.parent), STUDENT_REF, tmp_path / "out")
    assert res.student_id == "tiny-student@on999"
    html = unescape(res.html.read_text())
    assert 'tiny-student@off999 (chat_template_kwargs {"enable_thinking": false})' in html  # which one is which
    assert f"{STUDENT_ID}</li>" in html or f"{STUDENT_ID}," in html  # no options: the id alone
