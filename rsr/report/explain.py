"""`rsr explain`: one trajectory, token by token, as the student scored it: a self-contained HTML page.

    html, stats = explain_page(student, messages, title="my trajectory")           # the page and its totals
    explain_trajectory(state.duckdb, "t-...", student, Path("explain.html"))      # a stored trajectory
    explain_record(Path("runs.jsonl"), "q17", student, Path("explain.html"))      # a record of an `rsr score` file

The page shows the conversation as the student's chat template renders it, each token exactly as its characters
sit in the rendered text: context greyed, scored tokens coloured by surprisal on a fixed scale, rank and surprisal
on hover (`title`, no JavaScript). The numbers come from `Student.explain`, the same exact scorer as
`Student.score`, so the page's totals are the stored score's, bit for bit; a stored score given beside it is
compared with `==`. Each scored token carries `data-rank` (unclipped) and `data-surprisal` (repr of its float32
value) so a test, or a user, can sum the page's own numbers.

Everything from a teacher is untrusted: the template is rendered with autoescape and no teacher text is ever
marked safe; control characters are shown as visible escapes, never passed through.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Template

from rsr.metric import METRIC_VERSION, TrajectoryStats
from rsr.records import Message, Score, Trajectory
from rsr.score.io import read_score_input, record_id
from rsr.score.student import Prepared, ScoredTrajectory, Student
from rsr.store.queries import Reader

__all__ = ["SURPRISAL_SCALE", "explain_page", "explain_record", "explain_trajectory", "write_explain_page"]

HTML_TEMPLATE = Path(__file__).with_name("explain.html")
SURPRISAL_SCALE = 8.0  # nats at which a token's colour saturates: a fixed scale, so pages compare at a glance
_WHITE, _RED = (255, 255, 255), (165, 0, 38)  # the scale's ends: 0 nats -> white, >= SURPRISAL_SCALE -> deep red
_PART_LABELS = {"reasoning": "reasoning", "answer": "answer", "tool": "tool call"}
# Characters that would be interpreted (terminal escapes, bidi overrides, line separators) or invisible: shown as
# `\uXXXX`. Newline and tab stay as they are: the rendered text's layout is part of what the page shows.
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_KEPT = {"\n", "\t"}


# ---- text pieces ------------------------------------------------------------------------------------------------


def visible_pieces(text: str) -> list[tuple[bool, str]]:
    """Text as (is_escape, piece) pieces: control and invisible characters become `\\uXXXX` escapes that the
    template styles apart, everything else stays verbatim (autoescaped by the template, never marked safe)."""
    pieces: list[tuple[bool, str]] = []
    plain: list[str] = []
    for ch in text:
        if ch not in _KEPT and unicodedata.category(ch) in _HIDDEN:
            if plain:
                pieces.append((False, "".join(plain)))
                plain = []
            pieces.append((True, f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"))
        else:
            plain.append(ch)
    if plain:
        pieces.append((False, "".join(plain)))
    return pieces


def surprisal_colour(surprisal: float) -> tuple[str, bool]:
    """The background for a surprisal on the fixed scale, and whether text on it should be white (dark red)."""
    t = min(max(surprisal, 0.0) / SURPRISAL_SCALE, 1.0)  # float32 sums may leave -1e-7 for a sure token
    r, g, b = (round(w + (d - w) * t) for w, d in zip(_WHITE, _RED, strict=True))
    return f"rgb({r},{g},{b})", t > 0.6


# ---- the token view ---------------------------------------------------------------------------------------------


@dataclass
class TokenView:
    """One token of the rendered text as the page shows it."""

    pos: int
    token_id: int
    pieces: list[tuple[bool, str]]  # its characters (visible_pieces); empty for a BOS or a shared byte token
    scored: bool = False
    rank: int | None = None  # unclipped
    surprisal: str | None = None  # repr of the float32 value as a Python float: exact, and float() reads it back
    entropy: str | None = None  # the student's entropy at the position that predicts it (repr, as surprisal)
    kind: str | None = None
    clipped: bool = False  # rank > r_max: the sum counts r_max
    colour: str = ""
    light_text: bool = False
    part: str | None = None  # a label shown before the token: where a reasoning / answer / tool-call part begins
    special: str | None = None  # "bos": a token with no characters in the text; "shared": its characters are
    # shown in the previous token (byte-fallback tokens of one character share its offsets)
    hover: str = ""
    gap: list[tuple[bool, str]] = field(default_factory=list)  # text before it that no token covers (context)


def _context_token(p: Prepared, pos: int, cursor: int) -> tuple[TokenView, int]:
    s, e = p.offsets[pos]
    text = p.rendered.text[max(s, cursor) : e]
    special = "bos" if e <= s else "shared" if not text else None
    hover = f"context, token {pos}, id {p.ids[pos]}" + (" (no characters: prepended BOS)" if special == "bos" else "")
    view = TokenView(pos, p.ids[pos], visible_pieces(text), special=special, hover=hover)
    # Characters between tokens (a tokenizer whose offsets skip some): shown as context, so the text stays whole.
    view.gap = visible_pieces(p.rendered.text[cursor:s]) if s > cursor else []
    return view, max(cursor, e)


def _score_token(view: TokenView, numbers: tuple[int, float, str, float | None], r_max: int) -> None:
    rank, surprisal, kind, entropy = numbers
    view.scored, view.rank, view.kind, view.clipped = True, rank, kind, rank > r_max
    view.surprisal, view.entropy = repr(surprisal), None if entropy is None else repr(entropy)
    view.colour, view.light_text = surprisal_colour(surprisal)
    clipped = f" (above r_max: counted as {r_max})" if view.clipped else ""
    unsure = "" if entropy is None else f", entropy {entropy:.4f} nats"
    view.hover = (
        f"rank {rank}{clipped}, surprisal {surprisal:.4f} nats{unsure}, {_PART_LABELS[kind]}; token {view.pos}, "
        f"id {view.token_id}"
    )


def token_views(p: Prepared, result: ScoredTrajectory, r_max: int) -> list[TokenView]:
    """Every token of the (maybe truncated) sequence, in order, scored ones with their numbers and part labels."""
    tokens = result.tokens
    assert tokens is not None, "Student.explain keeps the per-token numbers"
    entropies = tokens.entropies.tolist() if tokens.entropies is not None else [None] * len(tokens.positions)
    numbers = dict(
        zip(
            tokens.positions,
            zip(tokens.ranks.tolist(), tokens.surprisals.tolist(), tokens.kinds, entropies, strict=True),
            strict=True,
        )
    )
    views, cursor, previous = [], 0, (None, -2)  # previous: (kind, position) of the last scored token
    for pos in range(len(p.ids)):
        view, cursor = _context_token(p, pos, cursor)
        if pos in numbers:
            _score_token(view, numbers[pos], r_max)
            kind = numbers[pos][2]
            # A new part: the kind changes, or scored tokens resume after context (the next assistant turn).
            if previous != (kind, pos - 1):
                view.part = _PART_LABELS[kind]
            previous = (kind, pos)
        views.append(view)
    return views


def _tail(p: Prepared) -> list[tuple[bool, str]]:
    """Rendered text after the last token kept (cut by max_tokens when truncated): shown, never scored."""
    end = max((e for _, e in p.offsets), default=0)
    return visible_pieces(p.rendered.text[end:])


# ---- the messages as given --------------------------------------------------------------------------------------


@dataclass
class MessageView:
    """One input message, and what the student's template made of it."""

    index: int
    role: str
    name: str | None
    pieces: list[tuple[bool, str]]  # its content as given
    tool_calls: list[tuple[str, list[tuple[bool, str]]]]  # (function name, arguments text) as given
    status: str  # "verbatim" | "trimmed" (found without its outer whitespace) | "altered" (rewritten or dropped)
    scored: bool  # its body is scored (every assistant turn in "template" mode, only the last in "generation")


def _locate(text: str, content: str, cursor: int) -> tuple[str, int]:
    """How content sits in the rendered text after `cursor` (messages render in order): its status, new cursor."""
    if not content:
        return "verbatim", cursor  # nothing to find: a tool-calls-only turn, shown by its calls
    for status, needle in (("verbatim", content), ("trimmed", content.strip())):
        if needle and (at := text.find(needle, cursor)) >= 0:
            return status, at + len(needle)
    return "altered", cursor


def message_views(student: Student, messages: Sequence[Mapping | Message], text: str) -> list[MessageView]:
    # As the scorer reads them (student._message): a Message, a mapping, or an object with attributes.
    msgs = [m if isinstance(m, Message) else Message.model_validate(dict(m) if isinstance(m, Mapping) else vars(m))
            for m in messages]  # fmt: skip
    last = max((i for i, m in enumerate(msgs) if m.role == "assistant"), default=-1)
    views, cursor = [], 0
    for i, m in enumerate(msgs):
        # Located as the template was given it (reasoning in its field or its own tags: Renderer.for_template).
        status, cursor = _locate(text, student.renderer.for_template(m)["content"] or "", cursor)
        calls = [(c["function"]["name"], visible_pieces(c["function"]["arguments"])) for c in m.tool_calls or []]
        scored = m.role == "assistant" and (student.render_mode == "template" or i == last)
        views.append(MessageView(i, m.role, m.name, visible_pieces(m.content or ""), calls, status, scored))
    return views


# ---- the page ---------------------------------------------------------------------------------------------------


@dataclass
class StoredCheck:
    """The page's totals against a stored score, compared exactly (==): the page recomputes, it never rounds."""

    score: Score
    rows: list[tuple[str, Any, Any, bool]] = field(default_factory=list)  # (field, page, stored, equal)

    @property
    def matches(self) -> bool:
        return all(equal for *_, equal in self.rows)


def check_stored(stats: TrajectoryStats, stored: Score) -> StoredCheck:
    check = StoredCheck(stored)
    for name in ("n_tokens", "sum_rank", "sum_surprisal", "mean_entropy", "top1_share"):
        page, kept = getattr(stats, name), getattr(stored, name)
        if kept is not None or name not in ("mean_entropy", "top1_share"):  # None: scored before they were stored
            check.rows.append((name, repr(page), repr(kept), page == kept))
    return check


def _legend() -> list[tuple[str, str]]:
    """(label, colour) steps of the fixed surprisal scale."""
    steps = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, SURPRISAL_SCALE]
    return [(f"{s:g}" + ("+" if s == SURPRISAL_SCALE else ""), surprisal_colour(s)[0]) for s in steps]


def explain_page(
    student: Student,
    messages: Sequence[Mapping | Message],
    *,
    title: str,
    stored: Score | None = None,
    max_tokens: int | None = None,
    meta: dict | None = None,
    tools: list[dict] | None = None,
) -> tuple[str, TrajectoryStats]:
    """The page (HTML text, self-contained) and the trajectory's statistics, bit for bit those of
    `student.score([messages], max_tokens=max_tokens, tools=[tools])`. Raises RecordError for a conversation that
    cannot be scored."""
    prepared, result = student.explain(messages, max_tokens=max_tokens, tools=tools)
    stats = result.stats
    assert stats is not None and prepared.rendered is not None
    # autoescape: every value is escaped text; repr gives exact floats, read back by float()
    page = Template(HTML_TEMPLATE.read_text(encoding="utf-8"), autoescape=True, keep_trailing_newline=True).render(
        pyrepr=repr,
        pieces=visible_pieces,
        title=title,
        info=student.info(),
        meta={k: visible_pieces(str(v)) for k, v in (meta or {}).items()},
        stats=stats,
        result=result,
        limit=student.max_tokens_for(max_tokens)[0],
        check=check_stored(stats, stored) if stored is not None else None,
        tokens=token_views(prepared, result, student.r_max),
        tail=_tail(prepared),
        truncated=prepared.truncated,
        messages=message_views(student, messages, prepared.rendered.text),
        legend=_legend(),
        scale=SURPRISAL_SCALE,
        metric_version=METRIC_VERSION,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
    return page, stats


def write_explain_page(path: Path, student: Student, messages: Sequence[Mapping | Message], **kw: Any) -> Path:
    """explain_page written to `path` (folders made); keywords as explain_page's. Returns the path."""
    page, _ = explain_page(student, messages, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# ---- loaders for the CLI ----------------------------------------------------------------------------------------


def _out_file(out: Path, name: str) -> Path:
    """`out` itself when it names an .html file, else `out/explain-<name>.html` (a folder)."""
    out = Path(out)
    safe = "".join(c if c.isalnum() or c in "-_.#" else "_" for c in name)[:100]
    return out if out.suffix.lower() in (".html", ".htm") else out / f"explain-{safe}.html"


def _trajectory_meta(t: Trajectory) -> dict[str, Any]:
    meta = {"trajectory_id": t.trajectory_id, "teacher": t.teacher, "problem_id": t.problem_id}
    meta |= {"source": f"{t.source_file}:{t.source_line}", "source_id": t.source_id, "generation": t.generation}
    meta |= {"gold_answer": t.gold_answer}
    return {k: v for k, v in meta.items() if v is not None}


def explain_trajectory(
    db_path: Path, trajectory_id: str, student: Student, out: Path, *, max_tokens: int | None = None
) -> Path:
    """The page for a stored trajectory (read-only: works while a flow writes), checked against its stored score.
    `out`: an .html file, or a folder for `explain-<id>.html`. Raises ValueError for an unknown id."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path}: no such database (run `rsr add-teacher` first)")
    limit, _ = student.max_tokens_for(max_tokens)
    with Reader.open(db_path) as store:
        found = store.get_trajectories([trajectory_id])
        if not found:
            raise ValueError(f'no trajectory {trajectory_id!r} in {db_path} (ids: rsr sql "SELECT trajectory_id ...")')
        stored = store.stored_score(trajectory_id, student.student_id, student.info()["dtype"], limit)
    t = found[0]
    meta = _trajectory_meta(t)
    if stored is None:
        meta["stored score"] = f"none for {student.student_id} in {student.info()['dtype']}"
    path = _out_file(out, trajectory_id)
    return write_explain_page(
        path, student, t.messages, title=f"{t.teacher}: {trajectory_id}", stored=stored, max_tokens=max_tokens,
        meta=meta, tools=getattr(t, "tools", None),
    )  # fmt: skip


def explain_record(
    path: Path,
    record: str,
    student: Student,
    out: Path,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    *,
    max_tokens: int | None = None,
) -> Path:
    """The page for one record of an `rsr score` input file, by the id `rsr score` prints (its own id, else its
    line, `#N` for a row's N-th generation). Raises ValueError naming a few ids found when none matches."""
    items = read_score_input(Path(path), fmt, mapping)
    match = next((t for t in items.trajectories if record_id(t) == record), None)
    if match is None:
        ids = [record_id(t) for t in items.trajectories[:8]]
        more = ", ..." if len(items.trajectories) > 8 else ""
        raise ValueError(
            f"{path}: no record {record!r} among {len(items.trajectories)} trajectories "
            f"(ids found: {', '.join(ids) or 'none'}{more})"
        )
    meta = {"record": record, **_trajectory_meta(match)}
    meta.pop("teacher", None)  # read_score_input names every teacher "input": not the teacher's name
    return write_explain_page(
        _out_file(out, record), student, match.messages, title=f"{Path(path).name}: record {record}",
        max_tokens=max_tokens, meta=meta, tools=getattr(match, "tools", None),
    )  # fmt: skip
