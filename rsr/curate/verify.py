"""Final-answer extraction + math-verify, bounded in time so that no expression can hang a run.

    verdict = verify(trajectory)                     # Verdict(verdict="correct", extracted_answer="-15", ...)
    verdicts = verify_many(trajectories, workers=2)  # same order as the input

math-verify's own timeouts use SIGALRM, which only works in the main thread (Prefect runs tasks in worker
threads), so it is called with its timeouts off inside a pebble process pool; a check that runs past `timeout_s`
gets its worker killed and replaced, and the verdict "error" ("timed out after Xs"). Plain numbers and textual
matches are decided in the caller without math-verify.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pebble import ProcessExpired, ProcessPool

if TYPE_CHECKING:  # imported lazily: a worker process imports this module only for math-verify
    from rsr.records import Verdict

# --- Extraction (pure, cheap, runs in the caller's process) ---

_MAX_ANSWER_CHARS = 1000  # an "answer" longer than this is prose, not a final answer
_SPAN_SEARCH_CHARS = 2 * _MAX_ANSWER_CHARS + 100  # how far into an answer line a $...$ / \\(...\\) span is sought

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed +([^\s$]+)")  # \boxed 5 (no braces)
_LINE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (  # the rest of the same line is the answer
    ("the_answer_is", re.compile(r"(?i)\bthe[ \t]+(?:final[ \t]+)?answer[ \t]+is[ \t]*:?[ \t]*([^\n]+)")),
    ("final_answer", re.compile(r"(?i)\bfinal[ \t]+answer[ \t]*[:：][ \t]*([^\n]+)")),
    ("answer", re.compile(r'(?i)\banswer"?[ \t]*[:：][ \t]*([^\n]+)')),  # also a broken JSON key: answer": "7"
    ("a", re.compile(r"(?m)^[ \t>*]*A[ \t]*[:：][ \t]*([^\n]+)")),
    ("hashes", re.compile(r"####[ \t]*([^\n]+)")),
)
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_BRACE = re.compile(r"\\[{}]|[{}]")

DEFAULT_TIMEOUT_S = 5.0  # per answer: math-verify's sympy can hang on adversarial input


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} / \\fbox{...} (balanced braces), else of a bare `\\boxed 5`."""
    opens = [m.end() for m in _BOX_OPEN.finditer(text)]
    if opens:
        # one pass over the braces only (C-speed regex scan): where each group closes, so that many unclosed
        # \\boxed{ cannot make this quadratic
        closing: dict[int, int] = {}
        stack: list[int] = []
        for m in _BRACE.finditer(text):
            if m[0] == "{":
                stack.append(m.end())
            elif m[0] == "}" and stack:
                closing[stack.pop()] = m.start()
        for start in reversed(opens):
            end = closing.get(start)
            if end is not None and text[start:end].strip():
                return text[start:end].strip()
    bare = _BOX_BARE.findall(text)
    return bare[-1] if bare else None


def _clean(answer: str) -> str | None:
    """Strip the wrapping an answer line carries: markdown, $...$, \\boxed{}, trailing punctuation."""
    s = answer.replace("**", "").strip().lstrip(":：").strip()
    if "\\boxed" in s or "\\fbox" in s:
        s = last_boxed(s) or s
    # a usable span starts near the front: bounding where the lazy scans run keeps hostile text (thousands of
    # unclosed "\\(") linear instead of quadratic; a longer span could not give an answer of allowed length anyway
    m = _MATH_SPAN.search(s, 0, _SPAN_SEARCH_CHARS)
    if m and (m.start() < 3 or not re.search(r"[A-Za-z0-9]", s[: m.start()])):
        s = next(g for g in m.groups() if g is not None)  # "$5$ dollars." -> "5"; text before it -> keep all
    s = s.strip().rstrip(".,;。").strip()
    if len(s) > 1 and s[0] == s[-1] and s[0] in "\"'`$":
        s = s[1:-1].strip()  # "23", `23`, $23$
    return s if s and len(s) <= _MAX_ANSWER_CHARS else None


def extract_answer(text: str, declared: str | None = None) -> tuple[str, str] | None:
    """(answer, rule) from, in order: the declared answer field, the last \\boxed{}/\\fbox{}, "The answer is ...",
    "Final answer: ...", "Answer: ...", "A: ...", "#### ...". None when nothing looks like a final answer."""
    if declared is not None and (answer := _clean(declared)):
        return answer, "declared"
    if (boxed := last_boxed(text)) is not None and (answer := _clean(boxed)):
        return answer, "boxed"
    for rule, pattern in _LINE_RULES:
        found = pattern.findall(text)  # the last match is the answer
        if found and (answer := _clean(found[-1])):
            return answer, rule
    return None


# --- Equivalence: a cheap textual check here, math-verify in worker processes ---

_TRIVIAL = re.compile(r"\\left|\\right|\\[,!;: ]|\\displaystyle|\$")
_LOOSE_SPACE = re.compile(r"\s+(?=\W)|(?<=\W)\s+")  # space beside an operator/brace; "1 2" stays apart
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_INTEGER = re.compile(r"-?[0-9]{1,100}")
_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(-?[0-9]{1,100})\}\{(-?[0-9]{1,100})\}|(-?[0-9]{1,100})/(-?[0-9]{1,100})")
_RADICAL = re.compile(r"(-?[0-9]{0,50})\\sqrt\{([0-9]{1,50})\}")
_PI = re.compile(r"(-?[0-9]{0,50})\\pi")


def _coefficient(digits: str) -> int:
    return -1 if digits == "-" else int(digits) if digits else 1


def _form(s: str) -> tuple[str, Any] | None:
    """A canonical answer in a form compared exactly here: (kind, value). Rationals, decimals, k\\sqrt{m} (by its
    signed square), k\\pi, and tuples of these; None for anything else (math-verify's job)."""
    if _INTEGER.fullmatch(s):
        return "q", Fraction(int(s))
    if m := _FRACTION.fullmatch(s):  # \\frac{a}{b} or a/b; a zero denominator is not a number
        sign, num, den = (m[1], m[2], m[3]) if m[2] is not None else ("", m[4], m[5])
        if int(den) != 0:
            return "q", Fraction(int(num), int(den)) * (-1 if sign else 1)
    if _PLAIN_NUMBER.fullmatch(s):
        return "decimal", Fraction(Decimal(s))
    if m := _RADICAL.fullmatch(s):
        k = _coefficient(m[1])
        return "sqrt", (1 if k >= 0 else -1) * k * k * int(m[2])
    if m := _PI.fullmatch(s):
        return "pi", _coefficient(m[1])
    if len(s) > 2 and s[0] == "(" and s[-1] == ")" and "(" not in s[1:-1] and ")" not in s[1:-1]:
        parts = [_form(part) for part in s[1:-1].split(",")]
        return ("tuple", parts) if all(part is not None for part in parts) else None
    return None


def _same(p: tuple[str, Any], g: tuple[str, Any]) -> bool | None:
    kinds = {p[0], g[0]}
    if kinds <= {"q", "decimal"}:  # exact, except that unequal decimals vs fractions (0.333 vs 1/3) are unsure
        return True if p[1] == g[1] else (False if kinds == {"q"} else None)
    if p[0] != g[0]:
        return None
    if p[0] != "tuple":
        return p[1] == g[1]
    if len(p[1]) != len(g[1]):
        return False
    verdicts = [_same(a, b) for a, b in zip(p[1], g[1], strict=True)]
    return False if False in verdicts else (None if None in verdicts else True)


def _cheap_verdict(pred: str, gold: str) -> bool | None:
    """Equal or not, decided without sympy when it can be (integers, fractions, decimals, k\\sqrt{m}, k\\pi and
    tuples of them: most MATH golds); None when only math-verify can tell."""
    if _PLAIN_NUMBER.fullmatch(pred) and _PLAIN_NUMBER.fullmatch(gold):
        return Decimal(pred) == Decimal(gold)
    p, g = _canonical(pred), _canonical(gold)
    if p == g:
        return True
    p_form, g_form = _form(p), _form(g)
    return _same(p_form, g_form) if p_form is not None and g_form is not None else None


def _canonical(answer: str) -> str:
    s = _TRIVIAL.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _LOOSE_SPACE.sub("", s.strip()).rstrip(".")


_UNICODE_MATH = {"π": "\\pi ", "×": "\\times ", "·": "\\cdot ", "−": "-", "≤": "\\le ", "≥": "\\ge ", "∞": "\\infty "}
_UNICODE_SQRT = re.compile(r"√\s*(\d+(?:\.\d+)?|[A-Za-z]|\([^()]*\)|\{[^{}]*\})")


def _latexify(answer: str) -> str:
    """Unicode math the LaTeX parser does not know (4√2 would read as 4, dropping the root)."""
    s = _UNICODE_SQRT.sub(lambda m: "\\sqrt{" + m.group(1).strip("(){}") + "}", answer)
    for char, latex in _UNICODE_MATH.items():
        s = s.replace(char, latex)
    return s


def _as_math(answer: str) -> str:
    """math-verify extracts from text; a bare LaTeX answer must be wrapped in $...$ to be read as one."""
    s = _latexify(answer.strip())
    return s if s.startswith(("$", "\\(", "\\[")) else f"${s}$"


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Golds repeat across teachers (8 per problem here): parse each once per worker. Sympy results are immutable."""
    from math_verify import parse

    return parse(_as_math(gold), parsing_timeout=None)


def _check(pred: str, gold: str) -> tuple[str, str | None]:
    """(verdict, note) for one extracted answer against one gold, with math-verify. Runs inside a worker; any
    failure becomes this check's verdict, not the run's crash."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    try:
        gold_parsed = _parse_gold(gold)
        if not gold_parsed:
            return "error", f"gold answer {gold[:80]!r} could not be parsed"
        pred_parsed = parse(_as_math(pred), parsing_timeout=None) or parse(pred, parsing_timeout=None)
        if not pred_parsed:
            return "incorrect", "answer could not be parsed"
        ok = mv_verify(gold_parsed, pred_parsed, timeout_seconds=None)
        return ("correct" if ok else "incorrect"), None
    except MemoryError:
        return "error", "ran out of memory"
    except RecursionError:
        return "error", "expression nested too deeply"
    except Exception as e:  # whatever sympy/latex2sympy raise on one expression
        return "error", f"{type(e).__name__}: {str(e)[:200]}"


def _init_worker(memory_limit_mb: int, parent: int) -> None:
    """Runs once in each worker process, before its first check."""
    import logging

    if memory_limit_mb > 0 and sys.platform != "win32":
        import resource

        # a runaway expression (9^9^9^9) then fails with MemoryError instead of eating the machine
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_mb << 20, memory_limit_mb << 20))

    def watchdog() -> None:  # the caller died (e.g. SIGKILL) while this worker is stuck in a check: stop
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: the pool bounds time
    import math_verify  # noqa: F401  (loaded here, so start-up never counts against a check's time)


class VerifierPool(ProcessPool):
    """A pebble ProcessPool of math-verify workers, whose processes start at the first check. A check past
    `timeout_s` gets its worker killed and replaced, and the verdict "error". Leaving `with` stops the workers."""

    def __init__(self, workers: int = 2, memory_limit_mb: int | None = 4096) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        # spawn, not fork: callers run threads (Prefect tasks) and may hold torch; a fresh interpreter
        # is safe from any thread, and its address space is small enough for the memory limit
        super().__init__(
            max_workers=workers,
            initializer=_init_worker,
            initargs=(memory_limit_mb or 0, os.getpid()),
            context=multiprocessing.get_context("spawn"),
        )

    def check_many(
        self, jobs: Sequence[tuple[str, str]], timeout_s: float = DEFAULT_TIMEOUT_S, progress: Any = None
    ) -> list[tuple[str, str | None]]:
        """(verdict, note) for each (pred, gold), in order. Safe from any thread."""
        futures = [self.schedule(_check, args=job, timeout=timeout_s) for job in jobs]
        out: list[tuple[str, str | None]] = []
        for future in futures:
            try:
                out.append(future.result())
            except TimeoutError:
                out.append(("error", f"timed out after {timeout_s:g}s"))
            except ProcessExpired:  # killed by the OS (out of memory) or crashed in C code
                out.append(("error", "verifier worker died during the check"))
            if progress is not None:
                progress.update(1)
        return out


_POOLS: dict[int, VerifierPool] = {}
_POOLS_LOCK = threading.Lock()


def _shared_pool(workers: int) -> VerifierPool:
    """One pool per size per process, so verify() on one trajectory starts no process after the first call.
    pebble stops its workers at interpreter exit."""
    with _POOLS_LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = VerifierPool(workers)
        return _POOLS[workers]


# --- Public API ---


def verify(trajectory: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> Verdict:
    """Verdict for one trajectory (correct / incorrect / no_answer / no_gold / error)."""
    return verify_many([trajectory], timeout_s=timeout_s, workers=1)[0]


def verify_many(
    trajectories: Iterable[Any],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int = 2,
    *,
    pool: VerifierPool | None = None,
    progress: bool | None = None,
) -> list[Verdict]:
    """Verdicts in input order for trajectories (a Trajectory, or any row with its trajectory_id, response,
    declared_answer and gold_answer). Numbers, fractions and textual matches are decided here; math-verify checks
    each other (answer, gold) pair once (and remembers the last 100k pairs' outcomes across calls).
    Safe from any thread; pass your own `pool` to control worker lifetime (else a shared one is used)."""
    from rsr.records import Verdict

    items = list(trajectories)
    found = [extract_answer(t.response, t.declared_answer) for t in items]  # (answer, rule) or None
    golds = [(t.gold_answer or "").strip() or None for t in items]
    outcomes: list[tuple[str, str] | None] = [None] * len(items)  # (verdict, detail)
    jobs: dict[tuple[str, str], list[int]] = {}  # (pred, gold) -> indices, for math-verify
    for i, (answer, gold) in enumerate(zip(found, golds, strict=True)):
        if gold is None:
            outcomes[i] = ("no_gold", answer[1] if answer else "no gold answer")
        elif answer is None:
            outcomes[i] = ("no_answer", "no final answer found")
        elif (same := _cheap_verdict(answer[0], gold)) is not None:
            outcomes[i] = ("correct" if same else "incorrect", answer[1])
        else:
            jobs.setdefault((answer[0], gold), []).append(i)
    for key, (verdict, note) in _checked(list(jobs), pool, workers, timeout_s, progress).items():
        for i in jobs[key]:
            rule = found[i][1]
            outcomes[i] = (verdict, rule if note is None else (note if verdict == "error" else f"{rule}: {note}"))
    return [
        Verdict(
            trajectory_id=t.trajectory_id,
            verdict=verdict,
            extracted_answer=answer[0] if answer else None,
            gold_answer=gold,
            detail=detail,
        )
        for t, answer, gold, (verdict, detail) in zip(items, found, golds, outcomes, strict=True)
    ]


_DONE: OrderedDict[tuple[str, str], tuple[str, str | None]] = OrderedDict()  # math-verify outcomes, newest last
_DONE_MAX = 100_000  # pairs remembered: the same (answer, gold) recurs across teachers and chunks
_DONE_LOCK = threading.Lock()


def _checked(
    keys: list[tuple[str, str]], pool: VerifierPool | None, workers: int, timeout_s: float, progress: bool | None
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """math-verify outcomes for these pairs: remembered ones from earlier calls, the rest checked in the pool.
    Errors (timeouts) are not remembered: they depend on the machine's load, not on the pair."""
    with _DONE_LOCK:
        out = {k: _DONE[k] for k in keys if k in _DONE}
    todo = [k for k in keys if k not in out]
    if todo:
        from tqdm import tqdm

        show = progress if progress is not None else (len(todo) >= 500 and sys.stderr.isatty())
        with tqdm(total=len(todo), desc="verify", unit="check", disable=not show) as bar:
            results = (pool or _shared_pool(workers)).check_many(todo, timeout_s=timeout_s, progress=bar)
        out.update(zip(todo, results, strict=True))
        with _DONE_LOCK:
            for key, result in zip(todo, results, strict=True):
                if result[0] != "error":
                    _DONE[key] = result
            while len(_DONE) > _DONE_MAX:
                _DONE.popitem(last=False)
    return out


__all__ = ["VerifierPool", "extract_answer", "last_boxed", "verify", "verify_many"]
