"""Benchmark decontamination: which prompts hold a benchmark's problem. Pure: no DuckDB, no torch.

    matcher = Matcher([BenchmarkProblem("math500", 0, "Find the sum of ...", n=8), ...])
    matcher.match([["a prompt's user turn", "another turn"], ...])   # per prompt, its Hits (often none)

Texts are compared as words of normalised text (words()): NFKC, case folded, LaTeX spacing and formatting commands
(`\\,`, `\\quad`, `\\left`, `\\text`, ...) dropped, punctuation a separator, `\\dfrac`/`\\tfrac` read as `\\frac`,
thousands separators dropped from numbers. Three methods, strongest first (one Hit per prompt and benchmark row):

exact          a segment of the prompt (a user turn, the problem field) is the benchmark problem, word for word;
               the only method for problems shorter than n words
ngram          the prompt holds at least NGRAM_SHARE of the problem's distinct word n-grams (anywhere: a problem
               embedded in a longer prompt is found)
ngram_numbers  the same with every number masked (digits and number words), at least NUMBERS_SHARE of the masked
               n-grams, for problems with at least NUMBERS_MIN_NGRAMS of them: the problem with its numbers changed

A single shared n-gram is no proof (a benchmark's own phrasing, "what is the value of", is everywhere), hence
shares of the problem's n-grams; n-grams that more than MAX_OWNERS problems share are left out of the index and
of the shares. The shares were measured on GSM8K and MATH (benchmarks/measure_decontamination.py, docs/
decontamination.md). Hashing is vectorised: a batch of prompts is one array of word ids, its n-gram hashes one
rolling pass, the look-up one searchsorted over the sorted index.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NGRAM = 8
MATCHER_VERSION = "dc1"  # part of what a trajectory was checked with: a new rule re-checks every trajectory
NGRAM_SHARE = 0.5
NUMBERS_SHARE = 0.8
NUMBERS_MIN_NGRAMS = 6
MAX_OWNERS = 32
EVIDENCE_CHARS = 600
METHODS = ("exact", "ngram", "ngram_numbers")

# LaTeX that changes spacing or style, not content: blanked (to spaces of the same length, so offsets hold).
_BLANK = re.compile(
    r"\\(?:[,;:!> ]|(?:q?quad|left|right|[bB]igg?[lrm]?|displaystyle|textstyle|scriptstyle|text|textrm|textbf|"
    r"textit|mathrm|mathbf|mathit|mathsf|boldsymbol|mbox|operatorname|mathbb|mathcal)(?![a-z]))|~|\$"
)
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
# A number (thousands separators allowed), one CJK character, or a run of other letters.
_WORD = re.compile(rf"\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|[{_CJK}]|[^\W\d_{_CJK}]+")
ALIASES = {"dfrac": "frac", "tfrac": "frac", "le": "leq", "ge": "geq", "ne": "neq"}
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "billion".split()
)
_UNKNOWN, _NUMBER, _UNKNOWN_NUMBER = 0, 1, 2  # word ids below the vocabulary's
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling hash (mod 2^64)


def _prepared(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _BLANK.sub(lambda m: " " * len(m.group()), text.lower())


def words(text: str) -> list[str]:
    """The words of a text as the matcher compares them."""
    return [ALIASES.get(w, w).replace(",", "") for w in _WORD.findall(_prepared(text))]


@dataclass(frozen=True)
class BenchmarkProblem:
    benchmark: str
    row: int  # the row as its source numbers it
    text: str
    n: int = DEFAULT_NGRAM


@dataclass(frozen=True)
class Hit:
    benchmark: str
    row: int
    method: str  # one of METHODS
    share: float  # of the problem's (masked) n-grams found; 1.0 for exact
    evidence: str  # the prompt's text that matched


def _windows(ids: np.ndarray, bad: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling hashes of every n-word window, and which windows hold no bad word."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    hashes = np.zeros(count, np.uint64)
    for k in range(n):
        hashes = hashes * _P + ids[k : k + count]
    seen_bad = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    return hashes, (seen_bad[n:] - seen_bad[:count]) == 0


class _Index:
    """Sorted distinct n-gram hashes -> the problems holding each (CSR), and each problem's count of them."""

    def __init__(self, grams: list[np.ndarray], n_problems: int) -> None:
        owner = np.repeat(np.arange(len(grams), dtype=np.int64), [len(g) for g in grams])
        flat = np.concatenate(grams) if grams else np.zeros(0, np.uint64)
        order = np.lexsort((owner, flat))
        flat, owner = flat[order], owner[order]
        keys, starts, counts = np.unique(flat, return_index=True, return_counts=True)
        common = counts > MAX_OWNERS  # a stop-gram: shared by too many problems to tell any of them
        keep = np.repeat(~common, counts)
        self.keys, self.counts = keys[~common], counts[~common]
        self.owner = owner[keep]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.total = np.bincount(self.owner, minlength=n_problems)

    def shares(self, hashes: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item, problem, share) for every problem some window of an item matches."""
        if not len(self.keys) or not len(hashes):
            return (np.zeros(0, np.int64),) * 2 + (np.zeros(0),)
        pos = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        found = self.keys[pos] == hashes
        pairs = np.unique(item[found] * len(self.keys) + pos[found])  # each distinct n-gram of an item once
        items, keys = pairs // len(self.keys), pairs % len(self.keys)
        lens = self.counts[keys]
        first = np.repeat(self.starts[keys] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        owners = self.owner[first + np.arange(lens.sum())]
        combined, counts = np.unique(np.repeat(items, lens) * len(self.total) + owners, return_counts=True)
        problems = combined % len(self.total)
        return combined // len(self.total), problems, counts / np.maximum(self.total[problems], 1)


class Matcher:
    """Every benchmark problem given, indexed once; then prompts matched against all of them, a batch at a time."""

    def __init__(self, problems: Sequence[BenchmarkProblem]) -> None:
        self.problems = list(problems)
        self.vocab: dict[str, int] = {w: i + 3 for i, w in enumerate(sorted(NUMBER_WORDS))}
        tokens = [words(p.text) for p in self.problems]
        for ws in tokens:
            for w in ws:
                self.vocab.setdefault(w, len(self.vocab) + 3)
        self.is_number = np.zeros(len(self.vocab) + 3, bool)
        self.is_number[[_NUMBER, _UNKNOWN_NUMBER]] = True
        for w, i in self.vocab.items():
            self.is_number[i] = w[0].isdigit() or w in NUMBER_WORDS
        self.whole: dict[bytes, list[int]] = {}  # a problem's word ids -> the problems written so
        empty = np.zeros(0, np.uint64)
        grams = {n: ([empty] * len(self.problems), [empty] * len(self.problems)) for n in {p.n for p in problems}}
        for p, (problem, ws) in enumerate(zip(self.problems, tokens, strict=True)):
            ids = self._ids(ws)
            self.whole.setdefault(ids.tobytes(), []).append(p)
            for out, (stream, bad) in zip(grams[problem.n], self._streams(ids), strict=True):
                hashes, ok = _windows(stream, bad, problem.n)
                out[p] = np.unique(hashes[ok])
        n_problems = len(self.problems)
        self.indexes = {n: (_Index(e, n_problems), _Index(m, n_problems)) for n, (e, m) in grams.items()}
        # a problem's masked n-grams only count with enough of them: a short problem with its numbers masked is a
        # template many problems fill
        self.numbers_ok = sum((m.total for _, m in self.indexes.values()), np.zeros(n_problems, np.int64))
        self.numbers_ok = self.numbers_ok >= NUMBERS_MIN_NGRAMS

    def _ids(self, ws: list[str]) -> np.ndarray:
        get = self.vocab.get
        return np.fromiter((get(w, _UNKNOWN_NUMBER if w[0].isdigit() else _UNKNOWN) for w in ws), np.uint64, len(ws))

    def _streams(self, ids: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(ids, bad) as written (numbers are words) and with every number masked."""
        numeric = self.is_number[ids]
        masked = np.where(numeric, np.uint64(_NUMBER), ids)
        return (ids, (ids == _UNKNOWN) | (ids == _UNKNOWN_NUMBER)), (masked, masked == _UNKNOWN)

    def match(self, prompts: Sequence[Sequence[str]]) -> list[list[Hit]]:
        """Each prompt (its segments: user turns, problem field) with the benchmark problems it holds."""
        found: list[dict[int, Hit]] = [{} for _ in prompts]
        parts, owner, segments = [], [], []
        for i, prompt in enumerate(prompts):
            for text in prompt:
                ids = self._ids(words(text))
                segments.append((i, text))
                for p in self.whole.get(ids.tobytes(), ()) if len(ids) else ():
                    found[i][p] = Hit(self.problems[p].benchmark, self.problems[p].row, "exact", 1.0, _cut(text))
                parts += [ids, np.zeros(1, np.uint64)]  # a separator: no n-gram spans two segments
                owner.append(np.full(len(ids) + 1, i, np.int64))
        if parts:
            self._ngram_hits(np.concatenate(parts), np.concatenate(owner), prompts, found)
        return [sorted(f.values(), key=lambda h: (h.benchmark, h.row)) for f in found]

    def _ngram_hits(self, ids: np.ndarray, owner: np.ndarray, prompts, found: list[dict[int, Hit]]) -> None:
        streams = self._streams(ids)
        for n, indexes in self.indexes.items():
            for method, index, (stream, bad), least in zip(
                METHODS[1:], indexes, streams, (NGRAM_SHARE, NUMBERS_SHARE), strict=True
            ):
                hashes, ok = _windows(stream, bad, n)
                items, problems, shares = index.shares(hashes[ok], owner[: len(ok)][ok])
                strong = shares >= least
                if method == "ngram_numbers":
                    strong &= self.numbers_ok[problems]
                for i, p, share in zip(items[strong], problems[strong], shares[strong], strict=True):
                    if int(p) not in found[i]:
                        evidence = self.evidence(prompts[i], int(p), method == "ngram_numbers")
                        problem = self.problems[p]
                        found[i][int(p)] = Hit(problem.benchmark, problem.row, method, round(float(share), 4), evidence)

    def evidence(self, prompt: Sequence[str], p: int, masked: bool) -> str:
        """The longest run of the prompt's text whose n-grams are the problem's (masked when `masked`)."""
        n = self.problems[p].n
        stream, bad = self._streams(self._ids(words(self.problems[p].text)))[masked]
        theirs = np.unique(_windows(stream, bad, n)[0])
        best = (0, "", 0, 0)  # run length, text, first window, last window
        for text in prompt:
            hashes, ok = _windows(*self._streams(self._ids(words(text)))[masked], n)
            run = 0
            for k, hit in enumerate(ok & np.isin(hashes, theirs)):
                run = run + 1 if hit else 0
                if run > best[0]:
                    best = (run, text, k - run + 1, k)
        run, text, first, last = best
        if not run:
            return ""
        prepared = _prepared(text)
        if len(prepared) != len(text):  # NFKC changed the length: offsets do not hold, show the words
            return _cut(" ".join(words(text)[first : last + n]))
        spans = [m.span() for m in _WORD.finditer(prepared)]
        return _cut(text[spans[first][0] : spans[last + n - 1][1]])


def _cut(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= EVIDENCE_CHARS:
        return text
    half = EVIDENCE_CHARS // 2
    return f"{text[:half]} … {text[-half:]}"


def prompt_segments(problem: str | None, user_turns: Iterable[str | None]) -> list[str]:
    """What is checked of a trajectory: its user turns, and its problem field when no user turn is that text."""
    turns = [t for t in user_turns if t and t.strip()]
    if problem and problem.strip() and problem not in turns:
        turns.insert(0, problem)
    return turns


def benchmark_label(name: str, digest: str, n: int) -> str:
    """What a trajectory is checked against, per benchmark: its name, content, n and the matcher's rule."""
    return f"{name}@{digest[:16]}/n{n}/{MATCHER_VERSION}"


def check_set_name(labels: Iterable[str]) -> str:
    """The name of a set of benchmark labels (what contamination_checks rows hold)."""
    return "cs-" + hashlib.sha256("\n".join(sorted(labels)).encode()).hexdigest()[:16]


class DistinctPrompts:
    """A matcher that checks each distinct prompt once: trajectories share problems (a teacher per problem, several
    generations per row). A clean prompt is remembered by a 64-bit digest of its segments (~60 bytes each, so a
    million distinct prompts stay within ~100 MB); a contaminated one with its hits."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.clean: set[int] = set()
        self.found: dict[int, list[Hit]] = {}
        self.matched = 0  # distinct prompts matched so far

    def match(self, prompts: Sequence[Sequence[str]]) -> list[list[Hit]]:
        keys = [_digest64(p) for p in prompts]
        todo: dict[int, Sequence[str]] = {}
        for key, prompt in zip(keys, prompts, strict=True):
            if key not in self.clean and key not in self.found:
                todo.setdefault(key, prompt)
        for key, hits in zip(todo, self.matcher.match(list(todo.values())), strict=True):
            if hits:
                self.found[key] = hits
            else:
                self.clean.add(key)
        self.matched += len(todo)
        return [self.found.get(key, []) for key in keys]


def _digest64(segments: Sequence[str]) -> int:
    h = hashlib.blake2b(digest_size=8)
    for s in segments:
        h.update(s.encode("utf-8", "surrogatepass") + b"\x00")
    return int.from_bytes(h.digest(), "little")
