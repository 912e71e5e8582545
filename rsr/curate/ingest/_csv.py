"""A strict CSV reader that resynchronises after a broken region instead of swallowing the rows behind it.

Python's csv module, given an unterminated quote, reads every following line into one field until the next quote
(or the end of the file). Here each record remembers the physical lines it took: a record that fails (a stray
quote under `strict=True`, the end of the file inside quotes, more bytes than one record may hold, or a field count
unlike the header's) is reported against its first line only, and the lines after that one are read again as rows.
A legitimately multi-line quoted field parses cleanly and is kept whole.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple


class CsvRow(NamedTuple):
    line: int  # the record's first physical line, 1-based
    fields: list[str] | None  # None when broken
    first_line: str  # the text of its first line (the raw text of a reject)
    error: str | None = None


class _TooLong(Exception):
    pass


class _Lines:
    """The file's physical lines, numbered, with those taken by the current record kept for a re-read."""

    def __init__(self, lines: Iterable[str], max_bytes: int) -> None:
        self._source = enumerate(lines, start=1)
        self._pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []
        self._size, self._max = 0, max_bytes

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        item = self._pending.popleft() if self._pending else next(self._source)
        self.taken.append(item)
        self._size += len(item[1])
        if self._size > self._max:
            raise _TooLong(f"CSV record over {self._max} bytes")
        return item[1]

    def start_record(self) -> None:
        self.taken, self._size = [], 0

    def reread_after_first(self) -> None:
        """The current record is broken: its lines after the first are read again."""
        self._pending.extendleft(reversed(self.taken[1:]))


def csv_rows(lines: Iterable[str], delimiter: str, max_bytes: int) -> Iterator[CsvRow]:
    """Records of CSV text lines (header included, as the first row). A broken record is one CsvRow with its error;
    a record whose field count differs from the first row's is broken too when it spans several lines (a quote
    gone wrong), and a short row on one line is reported by the caller."""
    source = _Lines(lines, max_bytes)
    reader = csv.reader(source, delimiter=delimiter, strict=True)
    width = None
    while True:
        source.start_record()
        try:
            fields = next(reader)
        except StopIteration:
            return
        except (csv.Error, _TooLong) as e:
            if not source.taken:
                return
            yield _broken(source, f"{e}: an unterminated or stray quote?")
            reader = csv.reader(source, delimiter=delimiter, strict=True)  # a fresh state after the bad region
            continue
        if not source.taken:
            return
        width = len(fields) if width is None else width
        if len(source.taken) > 1 and fields and len(fields) != width:
            yield _broken(source, f"{len(fields)} fields over lines {source.taken[0][0]}-{source.taken[-1][0]}, "
                                  f"the header has {width}: an unterminated quote?")  # fmt: skip
            continue
        yield CsvRow(source.taken[0][0], fields, source.taken[0][1])


def _broken(source: _Lines, why: str) -> CsvRow:
    line, text = source.taken[0]
    source.reread_after_first()
    return CsvRow(line, None, text, f"broken CSV record starting at line {line} ({why})")
