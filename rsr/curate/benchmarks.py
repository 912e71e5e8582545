"""Benchmarks to decontaminate against: read from a local file (any form ingest reads: JSONL, JSON, CSV, Parquet,
compressed) or a saved `datasets` folder, or from a Hugging Face hub dataset at a pinned revision; the problems'
content digest; the presets of the usual reasoning benchmarks.

    got = load_benchmark("math500", "../shared/data/problems/math500.jsonl")   # column found: problem
    got = load_benchmark("aime24")                                             # a preset: hub id, split, column
    got.problems, got.digest, got.revision, got.skipped

A row without a problem text is skipped and counted (`skipped`, its first few with file and row), never silently;
a benchmark with none is refused, and a missing problem column names the columns the records have.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from rsr.curate.decontaminate import DEFAULT_NGRAM
from rsr.curate.ingest._common import MISSING, lookup
from rsr.curate.ingest._io import iter_batches, iter_records, require_path
from rsr.curate.ingest.hf import is_saved_dataset

PROBLEM_COLUMNS = ("problem", "question", "prompt", "Question", "question_content", "input", "query")
_SNIFF = 20
_SHOWN = 3  # skipped rows named in the message


@dataclass(frozen=True)
class Preset:
    """A benchmark on the Hugging Face hub: where, which split and which column holds the problem."""

    hub_id: str
    split: str
    column: str
    config: str | None = None
    note: str = ""


PRESETS: dict[str, Preset] = {
    "aime24": Preset("HuggingFaceH4/aime_2024", "train", "problem", note="AIME 2024 I and II, 30 problems"),
    "aime25": Preset("yentinglin/aime_2025", "train", "problem", note="AIME 2025 I and II, 30 problems"),
    "amc23": Preset("AI-MO/aimo-validation-amc", "train", "problem", note="AMC 12 2022 and 2023, 83 problems"),
    "math500": Preset("HuggingFaceH4/MATH-500", "test", "problem", note="MATH-500, 500 problems"),
    "gpqa-diamond": Preset(
        "Idavidrein/gpqa", "train", "Question", "gpqa_diamond", note="198 questions; gated: accept its terms, HF_TOKEN"
    ),
    "livecodebench": Preset(
        "lighteval/code_generation_lite",
        "test",
        "question_content",
        "release_v6",
        note="LiveCodeBench v1-v6, 1,055 problems; a ~4 GB download (test cases)",
    ),  # fmt: skip
    "gsm8k": Preset("openai/gsm8k", "test", "question", "main", note="GSM8K test, 1,319 problems"),
    "olympiadbench": Preset(
        "Hothan/OlympiadBench",
        "train",
        "question",
        "OE_TO_maths_en_COMP",
        note="OlympiadBench, text-only English competition maths",
    ),
}


class HubUnreachable(FileNotFoundError):
    """A hub benchmark that cannot be read here (no network, offline mode, gated, not found)."""


@dataclass
class LoadedBenchmark:
    name: str
    source: str  # the file or folder as given (resolved), or the hub id
    kind: str  # file | hf_dir | hub
    column: str  # where the problem was read (a column or dotted path)
    split: str | None = None
    config: str | None = None
    revision: str | None = None  # hub: the commit read
    ngram: int = DEFAULT_NGRAM
    problems: list[tuple[int, str]] = field(default_factory=list)  # (row as its source numbers it, text)
    skipped: list[str] = field(default_factory=list)  # "<source>:<row>: <reason>", the first few
    n_skipped: int = 0

    @property
    def digest(self) -> str:
        return content_digest(self.problems)


def content_digest(problems: list[tuple[int, str]]) -> str:
    """sha256 of the problems' texts, in order (not of the file: the same problems as JSONL or Parquet are the
    same benchmark): what re-adding a benchmark compares."""
    h = hashlib.sha256()
    for _, text in problems:
        h.update(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


def with_preset(
    name: str, source: str | None, column: str | None, split: str | None, config: str | None
) -> tuple[str, str | None, str | None, str | None]:
    """(source, column, split, config) as read: without a source, the preset called `name` fills them in."""
    if source is not None:
        return source, column, split, config
    preset = PRESETS.get(name)
    if preset is None:
        presets = ", ".join(PRESETS)
        raise ValueError(f"benchmark {name!r} is no preset ({presets}): give its SOURCE, a file or a hub dataset id")
    return preset.hub_id, column or preset.column, split or preset.split, config or preset.config


def is_local(source: str) -> bool:
    """A local file or folder (else a hub dataset id): the loader's own rule."""
    return Path(source).expanduser().exists()


def load_benchmark(
    name: str,
    source: str | None = None,
    column: str | None = None,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    ngram: int = DEFAULT_NGRAM,
) -> LoadedBenchmark:
    """A benchmark's problems. `source` None: the preset called `name`. A local path is read as ingest reads it; any
    other source is a hub dataset id, read with `datasets` at `revision` (default: the newest commit, resolved and
    recorded). `column`: where the problem is (default: the first of PROBLEM_COLUMNS the records hold)."""
    source, column, split, config = with_preset(name, source, column, split, config)
    path = Path(source).expanduser()
    if is_local(source):
        if revision:
            raise ValueError(f"{source} is a local file: a revision applies to hub datasets only")
        kind = "hf_dir" if path.is_dir() else "file"
        got = LoadedBenchmark(name, str(path.resolve()), kind, "", split, config, None, ngram)
        rows = _saved_rows(path, split, config) if path.is_dir() else _file_rows(require_path(path), split, config)
    else:
        got = LoadedBenchmark(name, source, "hub", "", split, config, _resolve(name, source, revision), ngram)
        rows = _hub_rows(got)
    _read(got, rows, column)
    return got


def _read(got: LoadedBenchmark, rows: Iterator[tuple[int, Any, str | None]], column: str | None) -> None:
    """The problems of (row, record, error) triples, the column decided from the first records."""
    head = list(islice(rows, _SNIFF))
    records = [r for _, r, e in head if e is None and isinstance(r, dict)]
    got.column = column or next((c for c in PROBLEM_COLUMNS if any(c in r for r in records)), "")
    if not records or not any(lookup(r, got.column) is not MISSING for r in records):
        have = sorted({k for r in records for k in r}) if records else []
        wanted = f"no column {column!r}" if column else f"no problem column (looked for {', '.join(PROBLEM_COLUMNS)})"
        columns = f"its records have {', '.join(have)}" if have else "no record could be read"
        raise ValueError(f"benchmark {got.name!r} ({got.source}): {wanted}; {columns}; name one: --map problem=COLUMN")
    for row, record, error in (*head, *rows):
        text, why = _problem_text(record, got.column) if error is None else (None, error)
        if text is None:
            got.n_skipped += 1
            if len(got.skipped) < _SHOWN:
                got.skipped.append(f"{got.source}:{row}: {why}")
        else:
            got.problems.append((row, text))
    if not got.problems:
        raise ValueError(
            f"benchmark {got.name!r} ({got.source}) holds no problem ({got.n_skipped} rows without one"
            + (f", e.g. {got.skipped[0]}" if got.skipped else "")
            + "): an empty benchmark is refused"
        )


def _problem_text(record: Any, column: str) -> tuple[str | None, str]:
    """A row's problem: text, or a chat whose user turns are joined (a `prompt` held as messages)."""
    if not isinstance(record, dict):
        return None, f"not an object ({type(record).__name__})"
    value = lookup(record, column)
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        value = "\n\n".join(m.get("content") or "" for m in value if m.get("role") in ("user", "human"))
    if value is MISSING or value is None:
        return None, f"no {column!r}"
    if not isinstance(value, str):
        return None, f"{column!r} is {type(value).__name__}, not text"
    return (value, "") if value.strip() else (None, f"{column!r} is empty")


def _file_rows(path: Path, split: str | None, config: str | None) -> Iterator[tuple[int, Any, str | None]]:
    if split or config:
        raise ValueError(f"{path} is a file: --split and a config apply to datasets (a hub id or a saved folder)")
    for raw in iter_records(path):
        yield raw.line, raw.value, raw.error


def _saved_rows(path: Path, split: str | None, config: str | None) -> Iterator[tuple[int, Any, str | None]]:
    import datasets

    folder = path / config if config else path
    if not is_saved_dataset(folder):
        raise ValueError(f"{folder} is a directory but not a saved HF dataset (no dataset_info.json / state.json)")
    return _dataset_rows(datasets.load_from_disk(str(folder)), split, str(folder))


def _dataset_rows(loaded: Any, split: str | None, name: str) -> Iterator[tuple[int, Any, str | None]]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) > 1:
            raise ValueError(f"{name} has splits {', '.join(loaded)}: name one with --split")
        if split is not None and split not in loaded:
            raise ValueError(f"{name} has no split {split!r}; it has {', '.join(loaded)}")
        loaded = loaded[split or next(iter(loaded))]
    for raw in iter_batches(loaded.with_format("arrow").iter(batch_size=256), "dataset"):
        yield raw.line, raw.value, raw.error


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _unreachable(name: str, hub_id: str, why: str) -> HubUnreachable:
    return HubUnreachable(
        f"benchmark {name!r}: the Hugging Face hub dataset {hub_id!r} cannot be read here ({why}); run `rsr "
        "add-benchmark` where there is network (it is then stored, at a pinned revision), or give a local copy: "
        "`rsr add-benchmark NAME FILE --map problem=COLUMN`"
    )


def _why(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__


def _resolve(name: str, hub_id: str, revision: str | None) -> str:
    """The commit `revision` (a branch, tag or commit; default the main branch) is now: what gets recorded."""
    if _offline():
        raise _unreachable(name, hub_id, "HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(hub_id, revision=revision).sha
    except Exception as err:  # network, gating, a missing repo or revision: each its one line, the cause chained
        raise _unreachable(name, hub_id, _why(err)) from err


def _hub_rows(got: LoadedBenchmark) -> Iterator[tuple[int, Any, str | None]]:
    import datasets

    try:
        loaded = datasets.load_dataset(got.source, name=got.config, split=got.split, revision=got.revision)
    except Exception as err:  # as in _resolve: said in one line, the cause chained for the log
        raise _unreachable(got.name, got.source, _why(err)) from err
    return _dataset_rows(loaded, got.split, got.source)
