"""Final-answer extraction + math-verify, bounded in time so that no expression can hang a run.

    verdict = verify(trajectory)                     # Verdict(verdict="correct", extracted_answer="-15", ...)
    verdicts = verify_many(trajectories, workers=2)  # same order as the input

math-verify's own timeouts use SIGALRM, which only works in the main thread (Prefect runs tasks in worker
threads), so it is called with its timeouts off inside a small pool of worker processes; a check that runs past
`timeout_s` gets its worker killed and replaced, and the verdict "error" ("timed out after Xs").
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily at run time: the worker runs this file alone, without the rsr package
    from rsr.records import Trajectory, Verdict

# ---------------------------------------------------------------------------------------------------------------
# Extraction (pure, cheap, runs in the caller's process)
# ---------------------------------------------------------------------------------------------------------------

RULES = ("declared", "boxed", "the_answer_is", "final_answer", "answer", "a", "hashes")
_WORKER_NAME = "__rsr_verify_worker__"  # the module name a worker process runs this file under
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


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} / \\fbox{...} (balanced braces), else of a bare `\\boxed 5`."""
    opens = [m.end() for m in _BOX_OPEN.finditer(text)]
    if opens:
        # one pass over the braces only (C-speed regex scan): where each group closes, so that many unclosed
        # \\boxed{ cannot make this quadratic
        closing: dict[int, int] = {}
        stack: list[int] = []
        for m in _BRACE.finditer(text):
            brace = m.group()
            if brace == "{":
                stack.append(m.end())
            elif brace == "}" and stack:
                closing[stack.pop()] = m.start()
        for start in reversed(opens):
            end = closing.get(start)
            if end is not None and text[start:end].strip():
                return text[start:end].strip()
    bare = _last_match(_BOX_BARE, text)
    return bare.group(1) if bare else None


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
    if not s or len(s) > _MAX_ANSWER_CHARS:
        return None
    return s


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - only the last match is wanted
        continue
    return last


def extract_answer(text: str, declared: str | None = None) -> tuple[str, str] | None:
    """(answer, rule) from, in order: the declared answer field, the last \\boxed{}/\\fbox{}, "The answer is ...",
    "Final answer: ...", "Answer: ...", "A: ...", "#### ...". None when nothing looks like a final answer."""
    if declared is not None and (answer := _clean(declared)):
        return answer, "declared"
    if (boxed := last_boxed(text)) is not None and (answer := _clean(boxed)):
        return answer, "boxed"
    for rule, pattern in _LINE_RULES:
        found = _last_match(pattern, text)
        if found is not None and (answer := _clean(found.group(1))):
            return answer, rule
    return None


# ---------------------------------------------------------------------------------------------------------------
# Equivalence: a cheap textual check here, math-verify in worker processes
# ---------------------------------------------------------------------------------------------------------------

_TRIVIAL = re.compile(r"\\left|\\right|\\[,!;: ]|\\displaystyle|\$")
_LOOSE_SPACE = re.compile(r"\s+(?=\W)|(?<=\W)\s+")  # space beside an operator/brace; "1 2" stays apart
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _numbers_equal(pred: str, gold: str) -> bool | None:
    """Exact decimal comparison when both sides are plain numbers (most MATH golds): no sympy needed."""
    if _PLAIN_NUMBER.fullmatch(pred) and _PLAIN_NUMBER.fullmatch(gold):
        return Decimal(pred) == Decimal(gold)
    return None


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
    if s.startswith("$") or s.startswith("\\(") or s.startswith("\\["):
        return s
    return f"${s}$"


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Golds repeat across teachers (8 per problem here): parse each once per worker. Sympy results are immutable."""
    from math_verify import parse

    return parse(_as_math(gold), parsing_timeout=None)


def check_equivalent(pred: str, gold: str) -> tuple[str, str | None]:
    """(verdict, note) for one extracted answer against one gold, with math-verify. Runs inside a worker."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return "error", f"gold answer {gold[:80]!r} could not be parsed"
    pred_parsed = parse(_as_math(pred), parsing_timeout=None) or parse(pred, parsing_timeout=None)
    if not pred_parsed:
        return "incorrect", "answer could not be parsed"
    ok = mv_verify(gold_parsed, pred_parsed, timeout_seconds=None)
    return ("correct" if ok else "incorrect"), None


def _worker_main() -> None:
    """Worker loop: JSON lines {k, p, g} in, {k, v, n} out, until stdin closes."""
    import logging

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol channel
    limit_mb = int(os.environ.get("RSR_VERIFY_MEMORY_MB", "0") or 0)
    if limit_mb > 0 and sys.platform != "win32":
        import resource

        # a runaway expression (9^9^9^9) then fails with MemoryError instead of eating the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    parent = os.getppid()

    def watchdog() -> None:  # the pool's process died without closing our stdin (e.g. SIGKILL): stop working
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" warnings: we bound time here
    import math_verify  # noqa: F401  (imported before "ready", so start-up never counts against a check)

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    send({"k": "ready"})
    for line in sys.stdin:
        try:
            job = json.loads(line)
        except json.JSONDecodeError:
            continue  # only the pool writes here; a stray line is not a job
        try:
            verdict, note = check_equivalent(job["p"], job["g"])
        except MemoryError:
            verdict, note = "error", "ran out of memory"
        except RecursionError:
            verdict, note = "error", "expression nested too deeply"
        except Exception as e:  # any failure inside sympy/latex2sympy is this check's verdict, not the run's crash
            verdict, note = "error", f"{type(e).__name__}: {str(e)[:200]}"
        send({"k": job["k"], "v": verdict, "n": note})


class _Worker:
    """One worker process plus a thread that forwards its replies to the pool's queue (portable, no select())."""

    def __init__(self, serial: int, replies: queue.Queue, memory_limit_mb: int | None) -> None:
        self.serial, self.ready, self.job, self.started = serial, False, None, time.monotonic()
        env = dict(os.environ, RSR_VERIFY_MEMORY_MB=str(memory_limit_mb or 0))
        # A fresh interpreter running this file alone, not fork/forkserver: safe from any thread, never re-imports
        # the caller's __main__, and skips the rsr package (whose __init__ imports torch: seconds per start).
        # -I: no cwd or script dir on sys.path, so nothing beside this file can shadow a stdlib module.
        code = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name={_WORKER_NAME!r})"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
        )
        self.job: int | None = None
        threading.Thread(target=self._forward, args=(replies,), daemon=True).start()

    def _forward(self, replies: queue.Queue) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                replies.put((self.serial, json.loads(line)))
            except json.JSONDecodeError:
                continue  # not a protocol line; the worker's stdout is redirected, so this is only noise
        replies.put((self.serial, None))  # EOF: the process ended

    def send(self, key: int, pred: str, gold: str) -> None:
        assert self.proc.stdin is not None
        self.job, self.started = key, time.monotonic()
        self.proc.stdin.write(json.dumps({"k": key, "p": pred, "g": gold}) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class VerifierPool:
    """A few worker processes running math-verify checks, each bounded by a timeout (kill + replace)."""

    START_TIMEOUT_S = 120.0

    def __init__(self, workers: int = 2, memory_limit_mb: int | None = 4096) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.size, self.memory_limit_mb = workers, memory_limit_mb
        self._workers: list[_Worker] = []
        self._replies: queue.Queue = queue.Queue()
        self._serial = 0
        self._lock = threading.Lock()  # one batch at a time: callers from several threads take turns

    def _start(self) -> _Worker:
        self._serial += 1
        return _Worker(self._serial, self._replies, self.memory_limit_mb)

    def close(self) -> None:
        with self._lock:
            for w in self._workers:
                w.kill()
            self._workers = []

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_many(
        self, jobs: Sequence[tuple[str, str]], timeout_s: float = 5.0, progress: Any = None
    ) -> list[tuple[str, str | None]]:
        """(verdict, note) for each (pred, gold), in order."""
        with self._lock:
            return self._run(jobs, timeout_s, progress)

    def _run(self, jobs: Sequence[tuple[str, str]], timeout_s: float, progress: Any) -> list[tuple[str, str | None]]:
        results: list[tuple[str, str | None] | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        self._workers = [w for w in self._workers if w.proc.poll() is None]
        while len(self._workers) < min(self.size, max(1, len(jobs))):
            self._workers.append(self._start())
        while pending or any(w.job is not None for w in self._workers):
            for w in self._workers:
                if w.ready and w.job is None and pending:
                    w.send(key := pending.popleft(), *jobs[key])
            now = time.monotonic()
            deadline = min(w.started + (timeout_s if w.ready else self.START_TIMEOUT_S) for w in self._workers)
            try:
                serial, message = self._replies.get(timeout=max(0.0, deadline - now))
            except queue.Empty:
                serial, message = None, None
            worker = next((w for w in self._workers if w.serial == serial), None)
            if worker is not None:  # else a reply from a worker already replaced: ignore it
                if message is None:  # the worker died (e.g. killed by the OS): its check is an error
                    self._replace(worker, results, "error", "verifier worker died during the check", progress)
                elif message["k"] == "ready":
                    worker.ready = True
                elif message["k"] == worker.job:
                    results[worker.job] = (message["v"], message["n"])
                    worker.job = None
                    if progress is not None:
                        progress.update(1)
            now = time.monotonic()
            for w in list(self._workers):
                if not w.ready and now - w.started > self.START_TIMEOUT_S:
                    raise RuntimeError(f"a verifier worker did not start within {self.START_TIMEOUT_S:.0f}s")
                if w.job is not None and now - w.started > timeout_s:
                    self._replace(w, results, "error", f"timed out after {timeout_s:g}s", progress)
        return [r if r is not None else ("error", "not checked") for r in results]

    def _replace(self, w: _Worker, results: list, verdict: str, note: str, progress: Any) -> None:
        if w.job is not None:
            results[w.job] = (verdict, note)
            if progress is not None:
                progress.update(1)
        w.kill()
        self._workers[self._workers.index(w)] = self._start()


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def _shared_pool(workers: int) -> VerifierPool:
    """One pool per process (grown on demand, never shrunk), so verify() on one trajectory starts no process."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = VerifierPool(workers)
        # growing in place (the next batch starts the extra workers) never pulls a pool from under another thread
        _POOL.size = max(_POOL.size, workers)
        return _POOL


@atexit.register
def _close_shared_pool() -> None:
    if _POOL is not None:
        _POOL.close()


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def verify(trajectory: Trajectory, timeout_s: float = 5.0) -> Verdict:
    """Verdict for one trajectory (correct / incorrect / no_answer / no_gold / error)."""
    return verify_many([trajectory], timeout_s=timeout_s, workers=1)[0]


def verify_many(
    trajectories: Iterable[Trajectory],
    timeout_s: float = 5.0,
    workers: int = 2,
    *,
    pool: VerifierPool | None = None,
    progress: bool | None = None,
) -> list[Verdict]:
    """Verdicts in input order. Identical (answer, gold) pairs are checked once; plain numbers and textual
    matches are decided here without math-verify.
    Safe from any thread; pass your own `pool` to control worker lifetime (else a shared one is used)."""
    from rsr.records import Verdict

    items = list(trajectories)
    verdicts: list[Verdict | None] = [None] * len(items)
    jobs: dict[tuple[str, str], list[tuple[int, str]]] = {}  # (pred, gold) -> [(index, rule)]
    for i, traj in enumerate(items):
        found = extract_answer(traj.response, traj.declared_answer)
        gold = (traj.gold_answer or "").strip() or None
        base = {"trajectory_id": traj.trajectory_id, "gold_answer": gold}
        if gold is None:
            detail = found[1] if found else "no gold answer"
            verdicts[i] = Verdict(
                **base, verdict="no_gold", extracted_answer=found[0] if found else None, detail=detail
            )
        elif found is None:
            verdicts[i] = Verdict(**base, verdict="no_answer", detail="no final answer found")
        elif (same := _numbers_equal(found[0], gold)) is not None or _canonical(found[0]) == _canonical(gold):
            verdict = "correct" if same is None or same else "incorrect"
            verdicts[i] = Verdict(**base, verdict=verdict, extracted_answer=found[0], detail=found[1])
        else:
            jobs.setdefault((found[0], gold), []).append((i, found[1]))
    if jobs:
        keys = list(jobs)
        bar = _progress_bar(len(keys), progress)
        try:
            outcomes = (pool or _shared_pool(workers)).check_many(keys, timeout_s=timeout_s, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        for (pred, gold), (verdict, note) in zip(keys, outcomes, strict=True):
            for i, rule in jobs[(pred, gold)]:
                detail = rule if note is None else (note if verdict == "error" else f"{rule}: {note}")
                verdicts[i] = Verdict(
                    trajectory_id=items[i].trajectory_id,
                    verdict=verdict,
                    extracted_answer=pred,
                    gold_answer=gold,
                    detail=detail,
                )
    return [v for v in verdicts if v is not None]


def _progress_bar(total: int, progress: bool | None) -> Any:
    show = progress if progress is not None else (total >= 500 and sys.stderr.isatty())
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="verify", unit="check")


__all__ = ["RULES", "VerifierPool", "check_equivalent", "extract_answer", "last_boxed", "verify", "verify_many"]

if __name__ == _WORKER_NAME:
    _worker_main()
