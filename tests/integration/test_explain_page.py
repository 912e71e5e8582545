"""`rsr explain`'s page: the token view of one trajectory under the real embedded student (no mocks).

The page must say exactly what the scorer computed (its numbers sum, bit for bit, to the stored score), tell context
from scored text as the student's template renders it, flag messages the template rewrote, show untrusted teacher
text as text, and open in a real browser.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re
import shutil
import string
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from markupsafe import escape
from typer.testing import CliRunner

from rsr.cli import app
from rsr.records import join_reasoning
from rsr.report.explain import explain_page, explain_record, explain_trajectory, write_explain_page

CHAT = [
    {"role": "system", "content": "You are a careful math tutor."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5.\nSo the answer is 5."},
    {"role": "user", "content": "And 4 * 6?"},
    {"role": "assistant", "content": "4 * 6 = 24. Zebra quantum marmalade, the answer is 24."},
]
VOID = {"meta", "br", "img", "input", "hr", "link", "wbr"}


class PageParser(HTMLParser):
    """The page's tokens (data-pos spans in #conversation, with their text and data attributes), its message
    blocks, the tags it opens, and whether every tag it opens is closed in order (a well-formed page)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.tokens: list[dict] = []
        self.tags: list[str] = []
        self.mismatched: list[str] = []
        self.totals: dict = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id") == "totals":
            self.totals = a
        if tag in VOID:
            return
        self.stack.append((tag, a))
        if "data-pos" in a and self._inside("conversation"):
            self.tokens.append({**a, "text": ""})

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            self.mismatched.append(tag)
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        classes = {c for _, a in self.stack for c in (a.get("class") or "").split()}
        # Labels and markers are the page's own words, not the rendered text.
        if self.tokens and self._inside("conversation") and not classes & {"part", "special"}:
            if "data-pos" in self.stack[-1][1] or "ctl" in classes:
                self.tokens[-1]["text"] += data

    def _inside(self, element_id: str) -> bool:
        return any(a.get("id") == element_id for _, a in self.stack)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert not parser.mismatched and not parser.stack, (parser.mismatched, parser.stack)
    return parser


def message_block(page: str, index: int) -> str:
    """The HTML of one message of "the messages as given"."""
    start = page.index(f'id="message-{index}"')
    end = page.find('<div class="msg', start)
    return page[start : end if end >= 0 else len(page)]


def test_page_totals_and_per_token_numbers_are_the_scorer_s_bit_for_bit(smollm):
    page, stats = explain_page(smollm, CHAT, title="tutor")
    scored = smollm.score([CHAT], progress=False)[0].stats
    assert stats == scored  # dataclass ==: every field equal, floats exactly
    p = parse(page)
    assert int(p.totals["data-n-tokens"]) == scored.n_tokens
    assert float(p.totals["data-sum-rank"]) == scored.sum_rank
    assert float(p.totals["data-sum-surprisal"]) == scored.sum_surprisal
    # The page's own per-token numbers, summed as TrajectoryStats.from_tokens sums them: the same bits.
    toks = [t for t in p.tokens if "data-rank" in t]
    assert len(toks) == scored.n_tokens
    ranks = np.array([int(t["data-rank"]) for t in toks], dtype=np.float64)
    surprisals = np.array([float(t["data-surprisal"]) for t in toks], dtype=np.float32)
    assert float(np.minimum(ranks, smollm.r_max).sum()) == scored.sum_rank
    assert float(ranks.sum()) == scored.sum_rank_unclipped
    assert float(surprisals.astype(np.float64).sum()) == scored.sum_surprisal
    assert f"{scored.sum_surprisal!r}" in page and f"{scored.rsr!r}" in page
    # Each token's entropy beside its rank and surprisal (issue 29), summing to the score's entropy, and on hover.
    entropies = np.array([float(t["data-entropy"]) for t in toks], dtype=np.float32)
    assert float(entropies.astype(np.float64).sum()) == scored.sum_entropy and (entropies >= 0).all()
    assert all(", entropy " in t["title"] for t in toks) and f"{scored.mean_entropy!r}" in page


def test_multi_turn_chat_tells_context_from_the_two_scored_assistant_bodies(smollm):
    page, _ = explain_page(smollm, CHAT, title="tutor")
    p = parse(page)
    prepared, _ = smollm.explain(CHAT)
    # Every character of the rendered text is on the page, in order, exactly once.
    assert "".join(t["text"] for t in p.tokens) == prepared.rendered.text
    runs: list[str] = []  # scored text, one entry per run of consecutive scored tokens
    last = -2
    for t in (t for t in p.tokens if "data-rank" in t):
        pos = int(t["data-pos"])
        if pos == last + 1:
            runs[-1] += t["text"]
        else:
            runs.append(t["text"])
        last = pos
    assert runs == [CHAT[2]["content"], CHAT[4]["content"]]
    context = "".join(t["text"] for t in p.tokens if "data-rank" not in t)
    for m in CHAT[:2] + CHAT[3:4]:
        assert m["content"] in context
    assert all(t["class"] == "ctx" for t in p.tokens if "data-rank" not in t)
    assert page.count('class="part part-answer"') == 2 + 1  # where each body begins (+ the legend's)
    for i, m in enumerate(CHAT):
        block = message_block(page, i)
        assert "REWRITTEN OR DROPPED" not in block and "rendered verbatim" in block
        assert ("scored;" in block) == (m["role"] == "assistant")


def test_a_template_that_rewrites_assistant_text_is_flagged_at_a_glance(smollm, shared_data):
    template = (shared_data / "chat-templates" / "QwQ-32B.jinja").read_text()
    qwq = dataclasses.replace(smollm, chat_template=template)
    assert qwq.render_mode == "generation"
    chat = [
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": join_reasoning("Two plus three is five.", "The answer is 5.")},
        {"role": "user", "content": "And 4 * 6?"},
        {"role": "assistant", "content": join_reasoning("Four sixes are 24.", "The answer is 24.")},
    ]
    page, stats = explain_page(qwq, chat, title="qwq")
    assert stats == qwq.score([chat], progress=False)[0].stats
    assert "render mode <b>generation</b>" in page and str(escape(qwq.render_note)) in page  # the note in words
    assert "only the final assistant turn is scored" in page
    assert "REWRITTEN OR DROPPED BY THE TEMPLATE" in message_block(page, 1)
    assert '<div class="msg altered" id="message-1"' in page  # the red frame
    for i in (0, 2, 3):
        assert "REWRITTEN OR DROPPED" not in message_block(page, i), i
    assert "context;" in message_block(page, 1) and "scored;" in message_block(page, 3)
    p = parse(page)
    assert {t["data-kind"] for t in p.tokens if "data-rank" in t} == {"reasoning", "answer"}


def test_untrusted_teacher_text_is_shown_as_text_and_never_runs(smollm, tmp_path):
    evil = "<script>alert(1)</script> then <img src=x onerror=alert(1)> and {{ 7*7 }} {% if 1 %}x{% endif %} bell\x07!"
    chat = [{"role": "user", "content": "Say {{ 6*7 }}"}, {"role": "assistant", "content": evil}]
    path = write_explain_page(tmp_path / "evil.html", smollm, chat, title="<b>{{ 7*7 }}</b>", meta={"teacher": evil})
    page = path.read_text(encoding="utf-8")
    p = parse(page)
    assert "script" not in p.tags and "img" not in p.tags  # nothing from the data became an element
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message_block(page, 1)
    assert "&lt;img src=x onerror=alert(1)&gt;" in message_block(page, 1)
    assert "{{ 7*7 }}" in message_block(page, 1) and "{% if 1 %}x{% endif %}" in message_block(page, 1)
    assert "49" not in message_block(page, 1) and "42" not in message_block(page, 0)
    assert "\x07" not in page and "\\u0007" in message_block(page, 1)
    shown = "".join(t["text"] for t in p.tokens if "data-rank" in t)
    assert shown == evil.replace("\x07", "\\u0007")  # the token view: the same text, the bell made visible


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_browser() is None, reason="no chromium on PATH (CI installs Debian's `chromium` package)")
def test_the_page_opens_in_headless_chromium_with_coloured_tokens_and_grey_context(smollm, tmp_path):
    from PIL import Image

    rng = random.Random(0)  # letters at random: a response the student finds surprising token after token
    long_answer = " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(80))
    chat = [{"role": "user", "content": "Explain addition " * 10}, {"role": "assistant", "content": long_answer}]
    path = write_explain_page(tmp_path / "page.html", smollm, chat, title="browser")
    shot = tmp_path / "out.png"
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           "--no-first-run", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network
           f"--screenshot={shot}", "--window-size=1200,1600", path.as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.is_file(), f"chromium wrote no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    reddish = int(((r > 140) & (g < 80) & (b < 100)).sum())
    grey = int(((rgb.max(-1) - rgb.min(-1) < 6) & (r >= 120) & (r <= 150)).sum())
    # The legend's three darkest swatches hold < 1,500 reddish pixels: the rest are high-surprisal tokens.
    assert reddish > 8000, reddish  # measured: ~28,000
    assert grey > 300, grey  # the context text (#888)


def test_explain_trajectory_on_a_real_store_matches_the_stored_score_exactly(smollm, tmp_path, state_dir):
    src = tmp_path / "tutor.jsonl"
    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for i, (q, a) in enumerate([("What is 2 + 3?", "2 + 3 = 5, so \\boxed{5}."),
                                        ("What is 4 * 6?", "Four sixes: \\boxed{24}.")])]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    added = runner.invoke(app, ["add-teacher", "tutor", str(src), "--format", "messages", "--no-score"])
    assert added.exit_code == 0, added.output
    scored = runner.invoke(app, ["add-student", "smollm2-135m", "--dtype", "float32"])
    assert scored.exit_code == 0, scored.output
    db = state_dir / "rsr.duckdb"
    from rsr.store.queries import Reader

    with Reader.open(db) as store:
        _, ids = store.query("SELECT trajectory_id FROM latest_scores WHERE student_id = ?", [smollm.student_id])
    assert len(ids) == 2
    out = explain_trajectory(db, ids[0][0], smollm, tmp_path / "pages")
    page = out.read_text(encoding="utf-8")
    assert out.name == f"explain-{ids[0][0]}.html"
    assert "The totals match the stored score exactly" in page and "DIFFER" not in page
    assert "tutor" in page and ids[0][0] in page
    with pytest.raises(ValueError, match="t-nope"):
        explain_trajectory(db, "t-nope", smollm, tmp_path / "x.html")

    # The same from the command line, and from the report, which links each teacher's lowest and highest RSR.
    cli = runner.invoke(app, ["explain", ids[1][0], "--dtype", "float32", "--out", str(tmp_path / "cli.html")])
    assert cli.exit_code == 0, cli.output
    assert "match the stored score exactly" in (tmp_path / "cli.html").read_text(encoding="utf-8")
    report = runner.invoke(
        app, ["report", "--student", "smollm2-135m", "--out", str(tmp_path / "report"), "--explain", "--no-mlflow"]
    )
    assert report.exit_code == 0, report.output
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    for label in ("lowest", "highest"):
        linked = tmp_path / "report" / "explain" / f"tutor-{label}-rsr.html"
        assert f'href="explain/tutor-{label}-rsr.html"' in html and f"wrote {linked}" in report.output
        assert "match the stored score exactly" in linked.read_text(encoding="utf-8")
    assert (tmp_path / "report" / "surprisal_by_position.png").stat().st_size > 0


def test_a_stored_score_that_differs_is_said_loudly_with_both_values(smollm):
    stats = smollm.score([CHAT], progress=False)[0]
    stored = stats.to_score("t-x", smollm.student_id)
    stored.sum_surprisal = math.nextafter(stored.sum_surprisal, math.inf)  # one ulp off: == must see it
    page, _ = explain_page(smollm, CHAT, title="tutor", stored=stored)
    assert "THE TOTALS DIFFER FROM THE STORED SCORE" in page and "match the stored score exactly" not in page
    assert repr(stored.sum_surprisal) in page and repr(stats.stats.sum_surprisal) in page


def test_explain_record_finds_an_rsr_score_record_by_id_and_names_ids_when_absent(smollm, tmp_path):
    src = tmp_path / "runs.jsonl"
    chats = [[{"role": "user", "content": f"{i} + 1?"}, {"role": "assistant", "content": f"It is {i + 1}."}]
             for i in range(3)]  # fmt: skip
    rows = [{"id": f"r{i}", "messages": m} for i, m in enumerate(chats)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = explain_record(src, "r1", smollm, tmp_path / "r1.html")
    page = out.read_text(encoding="utf-8")
    assert out == tmp_path / "r1.html" and "It is 2." in page
    with pytest.raises(ValueError, match=re.escape("r0, r1, r2")):
        explain_record(src, "r9", smollm, tmp_path / "r9.html")


def test_a_truncated_trajectory_says_so_and_strikes_the_unscored_rest(smollm):
    page, stats = explain_page(smollm, CHAT, title="cut", max_tokens=40)
    assert stats.truncated and stats == smollm.score([CHAT], max_tokens=40, progress=False)[0].stats
    assert "truncated: <b>yes</b>" in page and 'class="cut"' in page
