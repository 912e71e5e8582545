"""Benchmark decontamination: which prompts hold a benchmark's problem. Pure: no DuckDB, no torch.

    matcher = Matcher([BenchmarkProblem("math500", 0, "Find the sum of ...", n=8), ...])
    matcher.match([["a prompt's user turn", "another turn"], ...])   # per prompt, its Hits (often none)

Texts are compared as words of normalised text (words()): NFKC, case folded, LaTeX spacing and formatting commands
(`\\,`, `\\quad`, `\\left`, `\\text`, `\\frac`: `\\frac{3}{4}` reads as 3/4 does) dropped, punctuation a
separator, thousands separators dropped from numbers. Three methods, strongest first (one Hit per prompt and
benchmark row):

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
from collections import defaultdict
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
BATCH = 2000  # texts tokenised and hashed at once: numpy's calls amortised, few small strings alive at a time
BATCH_CHARS = 4_000_000  # ... and their characters at most (each word becomes a string and 8-byte ids and hashes)
METHODS = ("exact", "ngram", "ngram_numbers")

# LaTeX that changes spacing or style (or, like \\frac, only spells a slash), not content: blanked (to spaces of
# the same length, so offsets hold).
_BLANK = re.compile(
    r"\\(?:[,;:!> ]|(?:q?quad|left|right|[bB]igg?[lrm]?|displaystyle|textstyle|scriptstyle|text|textrm|textbf|"
    r"textit|mathrm|mathbf|mathit|mathsf|boldsymbol|mbox|operatorname|mathbb|mathcal|[dt]?frac)(?![a-z]))|~|\$"
)
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
# A word: one CJK character, a run of digits (a "." or "," between two digits joins them: 1,000 is 1000, and 3.5
# one word) or a run of other letters.
_WORD = re.compile(rf"[{_CJK}]|\d+(?:[.,]\d+)*|[^\W\d_{_CJK}]+")
_SEPARATOR = "\x00"  # between the texts of a batch, tokenised at once: a word of its own
_WORD_OR_SEPARATOR = re.compile(f"{_WORD.pattern}|{_SEPARATOR}")
# The same words of ASCII text (most text): the same pattern with ASCII classes runs twice as fast.
_ASCII_WORD_OR_SEPARATOR = re.compile(f"[a-z]+|[0-9]+(?:[.,][0-9]+)*|{_SEPARATOR}")
ALIASES = {"le": "leq", "ge": "geq", "ne": "neq"}
# Masked like digits: cardinals, fractions and multiples ("one third" -> "two thirds" is a change of numbers).
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand "
    "thousands million millions billion billions dozen dozens half halves third thirds quarter quarters fourth "
    "fourths fifth fifths sixth sixths seventh sevenths eighth eighths ninth ninths tenth tenths twice thrice "
    "double triple".split()
)
_UNKNOWN, _NUMBER, _UNKNOWN_NUMBER, _SEP = 0, 1, 2, 3  # word ids below the vocabulary's
_FIRST_ID = 4
CACHED_WORDS = 2_000_000  # raw words remembered with their id (a few hundred MB at most; then looked up afresh)
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling hash (mod 2^64)
_FILTER_BITS = 23  # an index's filter: 8 MB


def _prepared(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _BLANK.sub(lambda m: " " * len(m.group()), text.lower())


def _word(raw: str) -> str:
    word = raw.replace(",", "").replace(".", "") if "," in raw or "." in raw else raw
    return ALIASES.get(word, word)


def words(text: str) -> list[str]:
    """The words of a text as the matcher compares them."""
    return [_word(w) for w in _WORD.findall(_prepared(text))]


def _tokens(texts: Sequence[str]) -> list[str]:
    """The raw words of texts tokenised at once, each text's followed by the separator: ASCII texts (most) with
    ASCII classes, the others (NFKC first) with Unicode ones, in their order."""
    ascii_ = [t.isascii() for t in texts]
    if all(ascii_):
        return _ascii_tokens(texts)
    fast = iter(_split(_ascii_tokens([t for t, a in zip(texts, ascii_, strict=True) if a])))
    slow = iter(
        _split(_WORD_OR_SEPARATOR.findall(_prepared(_joined([t for t, a in zip(texts, ascii_, strict=True) if not a]))))
    )
    return [w for a in ascii_ for w in next(fast if a else slow)]


def _joined(texts: Sequence[str]) -> str:
    return _SEPARATOR.join(t.replace(_SEPARATOR, " ") for t in texts) + _SEPARATOR if texts else ""


def _ascii_tokens(texts: Sequence[str]) -> list[str]:
    return _ASCII_WORD_OR_SEPARATOR.findall(_BLANK.sub(" ", _joined(texts).lower()))


def _split(tokens: list[str]) -> list[list[str]]:
    """Tokens of several texts, each text's ending with the separator, as one list per text."""
    out, start = [], 0
    for i, w in enumerate(tokens):
        if w == _SEPARATOR:
            out.append(tokens[start : i + 1])
            start = i + 1
    return out


class _WordIds(dict):
    """A word as the tokeniser finds it -> its id: the vocabulary's, else unknown (a number or not). Each raw word
    is resolved once (alias, thousands separators) and remembered, so a batch maps at C speed (map over
    __getitem__)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__({_SEPARATOR: _SEP})
        self.vocab = vocab

    def __missing__(self, raw: str) -> int:
        word = _word(raw)
        found = self.vocab.get(word, _UNKNOWN_NUMBER if word[0].isdigit() else _UNKNOWN)
        if len(self) < CACHED_WORDS:
            self[raw] = found
        return found


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

    def __init__(self, hashes: np.ndarray, owner: np.ndarray, n_problems: int) -> None:
        # One stable sort: owners stay ascending within an n-gram, so pairs repeat only side by side.
        order = np.argsort(hashes, kind="stable")
        flat, owner = hashes[order], owner[order].astype(np.int32)
        del order
        first = np.ones(len(flat), bool)  # each (n-gram, problem) pair once
        first[1:] = (flat[1:] != flat[:-1]) | (owner[1:] != owner[:-1])
        flat, owner = flat[first], owner[first]
        starts = np.flatnonzero(np.concatenate([[len(flat) > 0], flat[1:] != flat[:-1]]))
        keys, counts = flat[starts], np.diff(np.append(starts, len(flat)))
        del flat, starts
        common = counts > MAX_OWNERS  # a stop-gram: shared by too many problems to tell any of them
        keep = np.repeat(~common, counts)
        self.keys, self.counts = keys[~common], counts[~common].astype(np.int32)
        self.owner = owner[keep].astype(np.int32)
        self.starts = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self.total = np.bincount(self.owner, minlength=n_problems)
        # A filter by the hashes' top bits (the rolling hash mixes upwards): most windows of a clean text are not
        # in the index, and a look-up here is far cheaper than a binary search over millions of keys.
        self.seen = np.zeros(1 << _FILTER_BITS, bool)
        self.seen[(self.keys >> np.uint64(64 - _FILTER_BITS)).astype(np.intp)] = True

    def shares(self, hashes: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item, problem, share) for every problem some window of an item matches."""
        maybe = self.seen[(hashes >> np.uint64(64 - _FILTER_BITS)).astype(np.intp)]
        order = np.argsort(hashes[maybe])  # sorted needles: a binary search starts where the last one ended
        hashes, item = hashes[maybe][order], item[maybe][order]
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
        self.vocab: dict[str, int] = {w: i + _FIRST_ID for i, w in enumerate(sorted(NUMBER_WORDS))}
        seen: set[str] = set()
        for start in range(0, len(self.problems), BATCH):  # a batch's words at a time: few small strings alive at once
            seen.update(_tokens([p.text for p in self.problems[start : start + BATCH]]))
        for w in sorted({_word(w) for w in seen} - {_SEPARATOR}):
            self.vocab.setdefault(w, len(self.vocab) + _FIRST_ID)
        del seen
        self.ids = _WordIds(self.vocab)
        self.is_number = np.zeros(len(self.vocab) + _FIRST_ID, bool)
        self.is_number[[_NUMBER, _UNKNOWN_NUMBER]] = True
        for w, i in self.vocab.items():
            self.is_number[i] = w[0].isdigit() or w in NUMBER_WORDS
        self.whole: dict[bytes, list[int]] = {}  # a problem's word ids -> the problems written so
        ids = np.concatenate(
            [
                self._ids([p.text for p in self.problems[start : start + BATCH]])
                for start in range(0, len(problems), BATCH)
            ]
            or [np.zeros(0, np.uint64)]
        )
        ends = np.flatnonzero(ids == _SEP)
        for p, (a, b) in enumerate(
            zip(np.concatenate([[0], ends[:-1] + 1])[: len(ends)].tolist(), ends.tolist(), strict=True)
        ):
            self.whole.setdefault(ids[a:b].tobytes(), []).append(p)
        n_problems = len(self.problems)
        owner = np.repeat(np.arange(n_problems), np.diff(np.concatenate([[-1], ends])))
        n_of = np.array([p.n for p in self.problems], np.int64)
        self.indexes = {}
        for n in sorted(set(n_of.tolist())):
            built = []
            for stream, bad in self._streams(ids):
                hashes, ok = _windows(stream, bad, n)
                mine = ok & (n_of[owner[: len(ok)]] == n)
                built.append(_Index(hashes[mine], owner[: len(ok)][mine], n_problems))
            self.indexes[n] = tuple(built)
        # a problem's masked n-grams only count with enough of them: a short problem with its numbers masked is a
        # template many problems fill
        self.numbers_ok = sum((m.total for _, m in self.indexes.values()), np.zeros(n_problems, np.int64))
        self.numbers_ok = self.numbers_ok >= NUMBERS_MIN_NGRAMS

    def _ids(self, texts: Sequence[str]) -> np.ndarray:
        """The word ids of texts tokenised at once, each text's followed by the separator's."""
        raw = _tokens(texts)
        return np.fromiter(map(self.ids.__getitem__, raw), np.uint64, len(raw))

    def _streams(self, ids: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(ids, bad) as written (numbers are words) and with every number masked."""
        numeric = self.is_number[ids]
        masked = np.where(numeric, np.uint64(_NUMBER), ids)
        return (ids, ids <= _SEP), ((masked), (masked == _UNKNOWN) | (masked == _SEP))

    def match(self, prompts: Sequence[Sequence[str]]) -> list[list[Hit]]:
        """Each prompt (its segments: user turns, problem field) with the benchmark problems it holds; BATCH prompts
        or BATCH_CHARS of text at a time (a long prompt alone)."""
        out: list[list[Hit]] = []
        start = chars = 0
        for end, prompt in enumerate(prompts):
            size = sum(map(len, prompt))
            if end > start and (end - start >= BATCH or chars + size > BATCH_CHARS):
                out += self._match(prompts[start:end])
                start, chars = end, 0
            chars += size
        return out + (self._match(prompts[start:]) if start < len(prompts) else [])

    def _match(self, prompts: Sequence[Sequence[str]]) -> list[list[Hit]]:
        found: dict[int, dict[int, Hit]] = defaultdict(dict)  # prompt -> benchmark problem -> its hit
        segments = [(i, text) for i, prompt in enumerate(prompts) for text in prompt]
        if not segments:
            return [[] for _ in prompts]
        ids = self._ids([text for _, text in segments])
        ends = np.flatnonzero(ids == _SEP)  # one per segment: where it ends
        starts = np.concatenate([[0], ends[:-1] + 1])[: len(ends)]
        for (i, text), a, b in zip(segments, starts.tolist(), ends.tolist(), strict=True):
            for p in self.whole.get(ids[a:b].tobytes(), ()) if b > a else ():
                found[i][p] = Hit(self.problems[p].benchmark, self.problems[p].row, "exact", 1.0, _cut(text))
        owner = np.repeat(np.array([i for i, _ in segments], np.int64), ends - starts + 1)
        self._ngram_hits(ids, owner, prompts, found)
        return [
            sorted(found[i].values(), key=lambda h: (h.benchmark, h.row)) if i in found else []
            for i in range(len(prompts))
        ]

    def _ngram_hits(self, ids: np.ndarray, owner: np.ndarray, prompts, found: dict[int, dict[int, Hit]]) -> None:
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
                for i, p, share in zip(items[strong].tolist(), problems[strong].tolist(), shares[strong].tolist(),
                                       strict=True):  # fmt: skip
                    if p not in found[i]:
                        evidence = self.evidence(prompts[i], p, method == "ngram_numbers")
                        problem = self.problems[p]
                        found[i][p] = Hit(problem.benchmark, problem.row, method, round(share, 4), evidence)

    def evidence(self, prompt: Sequence[str], p: int, masked: bool) -> str:
        """The longest run of the prompt's text whose n-grams are the problem's (masked when `masked`)."""
        n = self.problems[p].n
        stream, bad = self._streams(self._ids([self.problems[p].text])[:-1])[masked]
        theirs = np.unique(_windows(stream, bad, n)[0])
        best = (0, "", 0)  # run length (in windows), text, first window
        for text in prompt:
            hashes, ok = _windows(*self._streams(self._ids([text])[:-1])[masked], n)
            edges = np.diff(np.concatenate([[0], (ok & np.isin(hashes, theirs)).astype(np.int8), [0]]))
            starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            if len(starts) and (k := int(np.argmax(ends - starts))) >= 0 and ends[k] - starts[k] > best[0]:
                best = (int(ends[k] - starts[k]), text, int(starts[k]))
        run, text, first = best
        if not run:
            return ""
        last = first + run - 1 + n - 1  # the run's last word
        prepared = _prepared(text)
        if len(prepared) != len(text):  # NFKC changed the length: offsets do not hold, show the words
            return _cut(" ".join(words(text)[first : last + 1]))
        spans = [m.span() for m in _WORD.finditer(prepared)]
        return _cut(text[spans[first][0] : spans[last][1]])


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
    generations per row). A clean prompt is remembered by a 64-bit digest of its segments (~60 bytes each), at most
    `remember` of them (then they are forgotten and remembered afresh: memory stays bounded however many distinct
    prompts pass); a contaminated one with its hits."""

    def __init__(self, matcher: Matcher, remember: int = 500_000) -> None:
        self.matcher, self.remember = matcher, remember
        self.clean: set[int] = set()
        self.found: dict[int, list[Hit]] = {}
        self.matched = 0  # distinct prompts matched so far

    def match(self, prompts: Sequence[Sequence[str]]) -> list[list[Hit]]:
        keys = [_digest64(p) for p in prompts]
        todo: dict[int, Sequence[str]] = {}
        for key, prompt in zip(keys, prompts, strict=True):
            if key not in self.clean and key not in self.found:
                todo.setdefault(key, prompt)
        if len(self.clean) + len(todo) > self.remember:
            self.clean.clear()
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
