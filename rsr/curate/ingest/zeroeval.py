"""`zeroeval` adapter: ZeroEval result files (a JSON list; `problem`, `answer` gold, `output` = [raw teacher text]).

Teachers were asked for a ```json block with "reasoning" and "answer". Most write LaTeX inside it without
escaping backslashes (`\\frac` arrives as a form feed + "rac" under strict JSON, `\\(` is a JSON error), mixed
with proper `\\n` escapes. `parse_teacher_json` reads that leniently; whatever cannot be read keeps the raw text
as the response, so no trajectory is lost to a formatting slip.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from rsr.curate.ingest._common import RecordError, answer_str, check_text, opt_id, pick_teacher, req_str, type_name
from rsr.records import Message, Trajectory

# LaTeX commands that start with a letter JSON would read as an escape (\n, \t, \r). A backslash before one of
# these words is LaTeX; before any other word it is the JSON escape (e.g. "\nThe" is a newline + "The").
_LATEX_N = {
    "ne", "neq", "nu", "nabla", "not", "ni", "neg", "nmid", "nleq", "ngeq", "nless", "ngtr", "notin", "newline",
    "noindent", "nexists", "nsubseteq", "nsupseteq", "nparallel", "ncong", "nsim", "nearrow", "nwarrow", "natural",
    "nolimits", "nonumber", "normalsize", "nrightarrow", "nleftarrow", "nleftrightarrow", "nprec", "nsucc",
    "nvdash", "nRightarrow", "nLeftarrow", "nleqslant", "ngeqslant",
}  # fmt: skip
_LATEX_T = {
    "text", "textbf", "textit", "textrm", "textsf", "texttt", "textnormal", "textstyle", "textdegree",
    "times", "theta", "tau", "tan", "tanh", "to", "top", "tfrac", "tbinom", "triangle", "triangleleft",
    "triangleright", "trianglelefteq", "trianglerighteq", "tilde", "therefore", "tt", "tiny", "textup", "textsc",
}  # fmt: skip
_LATEX_R = {
    "right", "rangle", "rceil", "rfloor", "rho", "rm", "rbrace", "rbrack", "rvert", "rVert", "rightarrow",
    "rightleftharpoons", "rightharpoonup", "rgroup", "restriction", "root", "rtimes", "rightrightarrows", "rmoustache",
}  # fmt: skip
_LATEX_WORDS = {"n": _LATEX_N, "t": _LATEX_T, "r": _LATEX_R}

_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[\\\"/]|[ntr][A-Za-z]*|.)", re.DOTALL)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|\Z)", re.DOTALL)
_ANSWER_QUOTED = re.compile(r'"?answer"\s*:\s*"((?:[^"\\]|\\.)*)"', re.DOTALL)  # also a lost opening quote
_ANSWER_BARE = re.compile(r'"?answer"\s*:\s*(-?[\w.+/^-]+)')
# the reasoning runs from its key to the next "answer" key; the closing quote and comma after it are optional:
# some teachers forget them before "answer" (see _reasoning_fragment)
_REASONING_KEY = re.compile(r'"reasoning"\s*:\s*"')
_ANSWER_KEY = re.compile(r'"answer"\s*:')


def _fix_escape(m: re.Match[str]) -> str:
    body = m.group(1)
    head = body[0]
    if (head == "u" and len(body) == 5) or head in '\\"/':
        return m.group(0)  # a real JSON escape
    if head in "ntr" and body not in _LATEX_WORDS[head]:
        return m.group(0)  # \n, \t, \r before a plain word: the JSON escape the model meant
    return "\\" + m.group(0)  # LaTeX (\frac, \(, \boxed, \neq, ...): keep the backslash literally


def lenient_json_loads(text: str) -> Any:
    """json.loads for model-written JSON: raw LaTeX backslashes kept literally, raw newlines allowed."""
    return json.loads(_ESCAPE.sub(_fix_escape, text), strict=False)


def _decode_fragment(fragment: str) -> str:
    """A JSON string body cut out by a regex, decoded the same lenient way (raw text if even that fails)."""
    try:
        return lenient_json_loads('"' + fragment + '"')
    except (ValueError, RecursionError):
        return fragment


def _reasoning_fragment(text: str) -> str | None:
    """The raw reasoning string: from the first `"reasoning": "` to the next `"answer":`, less the `"` / `",`
    (and spaces) before it; None without both keys. The same as the regex
    `"reasoning"\\s*:\\s*"(.*?)(?:"\\s*,?)?\\s*"answer"\\s*:` but in linear time: that regex's lazy scan is
    quadratic on hostile text (a key repeated with no "answer" after it, or long runs of spaces: minutes for
    a few hundred kB, with no time limit at ingest)."""
    key = _REASONING_KEY.search(text)
    end = _ANSWER_KEY.search(text, key.end()) if key else None
    if end is None:
        return None
    fragment = text[key.end() : end.start()].rstrip()
    if fragment.endswith(","):
        before = fragment[:-1].rstrip()
        return before[:-1] if before.endswith('"') else fragment
    return fragment[:-1] if fragment.endswith('"') else fragment


@dataclass(frozen=True)
class TeacherOutput:
    reasoning: str | None  # None when no well-formed reasoning/answer object was found
    answer: str | None  # the declared answer, when one could be read
    how: str  # "json", "regex" or "raw": which reading succeeded


def parse_teacher_json(text: str) -> TeacherOutput:
    """Read a teacher's {"reasoning", "answer"} answer: strict-ish JSON first, then regexes, then nothing."""
    fence = _FENCE.search(text)
    body = fence.group(1) if fence and "{" in fence.group(1) else text  # the fenced block, else the whole text
    start, end = body.find("{"), body.rfind("}")
    if start >= 0 and end > start:
        try:
            obj = lenient_json_loads(body[start : end + 1])
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            try:
                answer = answer_str(obj.get("answer"))
            except RecordError:
                answer = None  # e.g. a list or an object as the answer: not a usable declared answer
            reasoning = obj.get("reasoning")
            if answer is not None:
                return TeacherOutput(reasoning.strip() if isinstance(reasoning, str) else None, answer, "json")
    answer = None
    if m := _ANSWER_QUOTED.search(text):
        answer = _decode_fragment(m.group(1)).strip() or None
    elif m := _ANSWER_BARE.search(text):
        answer = m.group(1).strip() or None
    if answer is not None and (reasoning := _reasoning_fragment(text)) is not None:
        return TeacherOutput(_decode_fragment(reasoning).strip(), answer, "regex")
    return TeacherOutput(None, answer, "regex" if answer else "raw")


def render_response(reasoning: str, answer: str) -> str:
    """The assistant turn we train on: the reasoning, then the answer in the form most students know."""
    shown = answer.strip()
    if shown.startswith("$") and shown.endswith("$") and len(shown) > 1:
        shown = shown.strip("$").strip()
    tail = f"The answer is $\\boxed{{{shown}}}$."
    return f"{reasoning}\n\n{tail}" if reasoning else tail


def record_to_trajectory(rec: dict, line: int, *, source_file: str, teacher: str | None) -> Trajectory:
    """Teacher = the `teacher` argument (the caller passes the file stem, as upstream names files by model), else
    the record's `generator`."""
    problem = req_str(rec.get("problem"), "`problem`")
    output = rec.get("output")
    if output is None:
        raise RecordError("missing `output`")
    if isinstance(output, list):
        if not output:
            raise RecordError("`output` is an empty list")
        output = output[0]
    if not isinstance(output, str):
        raise RecordError(f"`output` must be a list holding the teacher's text, got {type_name(output)} inside")
    raw = check_text(output, "`output`")
    if not raw.strip():
        raise RecordError("`output` is empty: the teacher wrote nothing")
    parsed = parse_teacher_json(raw)
    if parsed.reasoning is not None and parsed.answer is not None:
        response = render_response(parsed.reasoning, parsed.answer)
    else:
        response = raw.strip()  # malformed JSON: keep the teacher's own text rather than drop the trajectory
    return Trajectory.build(
        teacher=pick_teacher(teacher or rec.get("generator"), "`generator`", None),
        problem=problem,
        messages=[Message(role="user", content=problem), Message(role="assistant", content=response)],
        source_id=opt_id(rec.get("id"), "`id`"),
        gold_answer=answer_str(rec.get("answer")),
        declared_answer=parsed.answer,
        source_file=source_file,
        source_line=line,
    )
