"""Readers that turn a file into raw records, one per line/row, without ever failing on one bad record.

A reader yields `RawRecord`s: either a parsed value or an error with the raw text, so the adapters can
quarantine bad records with their place and keep going. Only a missing path raises.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rsr.curate.ingest._csv import csv_rows

RAW_LIMIT = 4096  # bytes of raw text kept with a rejected record
# One record's bytes at most (a JSONL line, a CSV record): a longer one is quarantined with its size, unparsed. An
# 8 MB trace goes in alone; 16 MB bounds what one record costs (its text, parsed, as Arrow and in DuckDB: ~5x).
MAX_RECORD_BYTES = 16 * 1024 * 1024
_MB = MAX_RECORD_BYTES >> 20
_SNIFF_BYTES = 8192
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")  # control bytes, less tab, newlines, \v, \f and \r


@dataclass(frozen=True)
class RawRecord:
    line: int  # 1-based for JSONL/CSV, 0-based for JSON lists/Parquet, 0 for a whole-file problem
    value: Any = None
    raw: str = ""
    error: str | None = None


def cut(text: str, limit: int = RAW_LIMIT) -> str:
    """The raw text kept with a rejected record: at most `limit` UTF-8 bytes, and always encodable."""
    data = text[:limit].encode("utf-8", "replace")[:limit]
    return data.decode("utf-8", "ignore")  # "ignore" drops a multi-byte character split by the cut


def dump_raw(value: Any) -> str:
    """A bounded JSON rendering of an already parsed record (for rejects from lists/Parquet/HF)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)[: RAW_LIMIT * 2]
    return cut(text)


def require_path(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path} (check the path; a directory must be a saved HF dataset)")
    if not os.access(path, os.R_OK):
        raise FileNotFoundError(f"input not readable: {path} (check its permissions)")
    return path


@dataclass(frozen=True)
class InputDigest:
    sha256: str
    size: int  # bytes read (all files of a directory)
    kind: str  # "file" or "hf_dir"


def input_digest(path: Path) -> InputDigest:
    """sha256 of an input as it is read: a file's bytes, or a saved HF dataset folder's files (relative path and
    bytes of each, in sorted order), so that lineage names exactly what was ingested."""
    if not path.is_dir():
        with path.open("rb") as f:
            return InputDigest(hashlib.file_digest(f, "sha256").hexdigest(), path.stat().st_size, "file")
    h, size = hashlib.sha256(), 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(file.relative_to(path).as_posix().encode("utf-8", "surrogateescape") + b"\x00")
        with file.open("rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
        size += file.stat().st_size
    return InputDigest(h.hexdigest(), size, "hf_dir")


COMPRESSED = ("gz", "bz2", "zst")  # read through their decompressor wherever the plain file is read


def open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, decompressed as a stream when its name ends in .gz, .bz2 or .zst (never whole in memory)."""
    kind = path.suffix.lower().lstrip(".")
    if kind == "gz":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True))
    return path.open("rb")


def whole_file_problem(path: Path) -> str | None:
    """Why a whole file cannot hold records (empty, binary, a broken compressed stream), or None if it may."""
    if path.is_dir():
        return None
    try:
        head = _read_head(path, _SNIFF_BYTES)
    except (OSError, EOFError, ValueError) as e:  # gzip/bz2/zstd errors are OSError, EOFError or their own
        return f"unreadable {path.suffix} file: {type(e).__name__}: {e}"
    if not head:
        return "empty file"
    if head.startswith(b"PAR1"):
        return None
    if not head.strip():
        return "empty file (whitespace only)"
    # a text file with one corrupt record is not binary (that record is quarantined on its own line), so a single
    # clean text line anywhere in the head clears the file
    if _CONTROL.search(head) and not any(_clean_text(line) for line in head.split(b"\n")):
        return "binary file: not JSON, JSONL, CSV or Parquet"
    return None


def _read_head(path: Path, size: int) -> bytes:
    """Up to `size` bytes from the top; a compressed stream cut short gives what it held before the cut (its
    records are read, the cut is reported where it falls), an unreadable one raises."""
    head = b""
    with open_bytes(path) as f:
        try:
            while len(head) < size and (piece := f.read1(size - len(head))):
                head += piece
        except (OSError, EOFError, ValueError):
            if not head:
                raise
    return head


def _clean_text(line: bytes) -> bool:
    """A non-blank line of valid UTF-8 without control characters."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(line.strip()) and not _CONTROL.search(line)


def suffix_of(path: Path) -> str:
    """The format's suffix, under a compression suffix: data.jsonl.zst -> jsonl."""
    kind = path.suffix.lower().lstrip(".")
    if kind in COMPRESSED:
        kind = Path(path.stem).suffix.lower().lstrip(".")
    return kind


def iter_records(path: Path) -> Iterator[RawRecord]:
    """Raw records of a JSONL / JSON list / CSV / TSV / Parquet file, chosen by suffix (JSONL otherwise); a
    compressed file (.gz, .bz2, .zst) by the suffix under it. A stream that breaks midway ends with one entry."""
    problem = whole_file_problem(path)
    if problem:
        yield RawRecord(0, raw=head_text(path), error=problem)
        return
    kind = suffix_of(path)
    if kind == "json":
        yield from iter_json_list(path)
    elif kind == "parquet" or (kind != "jsonl" and head_text(path, 4) == "PAR1"):  # or by its magic bytes
        yield from iter_parquet(path)
    elif kind in ("csv", "tsv"):
        yield from _guarded(iter_csv(path, delimiter="\t" if kind == "tsv" else ","), path)
    else:
        yield from _guarded(iter_jsonl(path), path)


def _guarded(records: Iterator[RawRecord], path: Path) -> Iterator[RawRecord]:
    """A compressed stream cut short or corrupt midway: the records before it are kept, the rest is one reject."""
    line = 0
    try:
        for raw in records:
            line = raw.line
            yield raw
    except (OSError, EOFError, ValueError) as e:
        yield RawRecord(line + 1, error=f"unreadable {path.name} from line {line + 1} on: {type(e).__name__}: {e}")


def head_text(path: Path, limit: int = RAW_LIMIT) -> str:
    try:
        return cut(_read_head(path, limit).decode("utf-8", "replace"))
    except (OSError, EOFError, ValueError):
        with path.open("rb") as f:
            return cut(f.read(limit).decode("utf-8", "replace"))


def parse_json_text(text: str) -> tuple[Any, str | None]:
    """json.loads that reports instead of raising (deep nesting raises RecursionError, not ValueError)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"broken JSON: {e.msg} at line {e.lineno} column {e.colno}"
    except RecursionError:
        return None, "broken JSON: nested too deeply"
    except ValueError as e:  # e.g. integer strings longer than Python's digit limit
        return None, f"broken JSON: {e}"


def iter_jsonl(path: Path) -> Iterator[RawRecord]:
    """One record per line, never holding more than MAX_RECORD_BYTES of one line."""
    with open_bytes(path) as f:
        for number, data in enumerate(iter(lambda: f.readline(MAX_RECORD_BYTES + 1), b""), start=1):
            if len(data) > MAX_RECORD_BYTES and not data.endswith(b"\n"):
                size, raw = len(data), cut(data[:RAW_LIMIT].decode("utf-8", "replace"))
                while data and not data.endswith(b"\n"):  # skip the rest of the huge line in bounded chunks
                    data = f.readline(MAX_RECORD_BYTES)
                    size += len(data)
                error = f"record of {size} bytes: over the {_MB} MB limit of one record"
                yield RawRecord(number, raw=raw, error=error)
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raw = cut(data.decode("utf-8", "replace"))
                yield RawRecord(number, raw=raw, error=f"invalid UTF-8 at byte {e.start} of the line")
                continue
            if not text.strip():
                continue  # blank lines separate nothing in JSONL; they are not records
            value, error = parse_json_text(text)
            # a good line keeps its text uncut (no copy): it is cut only if the record is rejected later
            yield RawRecord(number, value=value, raw=text if error is None else cut(text), error=error)


def iter_json_list(path: Path) -> Iterator[RawRecord]:
    """A JSON list of records. Bad bytes are kept as surrogates so one bad record does not sink the file.

    The one reader that holds its whole file: a JSON list (ZeroEval's format) is parsed whole. A streaming parser
    (ijson) would fail the whole file on one record's invalid UTF-8, where this keeps the rest; ZeroEval files are
    one teacher x one benchmark (a few MB). Inputs at scale come as JSONL, CSV, Parquet or HF datasets."""
    try:
        with open_bytes(path) as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except (OSError, EOFError, ValueError) as e:
        yield RawRecord(0, error=f"unreadable {path.name}: {type(e).__name__}: {e}")
        return
    value, error = parse_json_text(text)
    if error:
        yield RawRecord(0, raw=cut(text), error=f"{error} (the whole JSON file is unreadable)")
        return
    if not isinstance(value, list):
        yield RawRecord(0, raw=cut(text), error=f"expected a JSON list of records, got {type(value).__name__}")
        return
    del text
    for index, item in enumerate(value):
        yield RawRecord(index, value=item, raw="")  # raw is rendered lazily by the caller only on reject


def iter_csv(path: Path, delimiter: str = ",") -> Iterator[RawRecord]:
    """Rows streamed from the file, read strictly (rsr.curate.ingest._csv): a broken region is rejected at its
    first line and the rows after it are still read; bad bytes are kept as surrogates (that record is rejected)."""
    with (
        open_bytes(path) as raw_file,
        io.TextIOWrapper(raw_file, encoding="utf-8", errors="surrogateescape", newline="") as f,
    ):
        rows = csv_rows(f, delimiter, MAX_RECORD_BYTES)
        header = next(rows, None)
        if header is None or header.fields is None:
            why = "empty CSV file" if header is None else f"unreadable CSV header: {header.error}"
            yield RawRecord(0, raw=cut(header.first_line) if header else "", error=why)
            return
        names = [h.strip().lstrip("\ufeff") for h in header.fields]
        for row in rows:
            if row.fields is None:
                yield RawRecord(row.line, raw=cut(row.first_line), error=row.error)
            elif len(row.fields) == len(names):
                yield RawRecord(row.line, value=dict(zip(names, row.fields, strict=True)))
            elif row.fields:
                error = f"CSV row has {len(row.fields)} fields, the header has {len(names)}"
                yield RawRecord(row.line, raw=cut(delimiter.join(row.fields)), error=error)


def iter_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        yield RawRecord(0, raw=head_text(path), error=f"unreadable Parquet file: {e}")
        return
    yield from iter_batches(pf.iter_batches(batch_size=256), "Parquet")  # 256 long rows: a few MB


def iter_batches(batches: Iterator[Any], what: str) -> Iterator[RawRecord]:
    """Rows of Arrow batches (Parquet, HF datasets), numbered from 0; a read error ends them with one entry."""
    import pyarrow as pa

    index = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                yield RawRecord(index, value=row)
                index += 1
    except (pa.ArrowException, OSError, ValueError) as e:  # a corrupt file: the rest of it is lost
        yield RawRecord(index, error=f"unreadable {what} data from row {index} on: {type(e).__name__}: {e}")
