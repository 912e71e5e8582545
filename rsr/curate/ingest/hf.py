"""`hf` container: a `datasets` folder written by save_to_disk, or a hub id; its rows are read by the same adapters
as files, picked by the same rules (generations > messages > conversations > table).

hf_options: {"config": ..., "split": ..., "revision": ...} -> load_dataset(source, name=config, split=split,
revision=revision). For a saved folder, split selects one split of a DatasetDict and config a sub-folder saved
under that name; a revision has no meaning there (ValueError).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rsr.curate.ingest._common import CHUNK, IngestResult
from rsr.curate.ingest._io import iter_batches
from rsr.curate.ingest.adapters import detect_rows, read_planned
from rsr.curate.ingest.plan import make_plan
from rsr.records import Rejected

HF_OPTIONS = ("config", "split", "revision")
_SNIFF_ROWS = 20


def is_saved_dataset(path: Path) -> bool:
    """save_to_disk writes dataset_info.json + state.json (a Dataset) or dataset_dict.json (a DatasetDict)."""
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    return path.is_dir() and any((path / m).is_file() for m in markers)


def check_options(hf_options: Mapping[str, Any] | None) -> dict[str, str | None]:
    """config/split/revision, each a string or None; anything else is a usage error (ValueError)."""
    options = dict(hf_options or {})
    unknown = sorted(set(options) - set(HF_OPTIONS))
    if unknown:
        raise ValueError(f"unknown hf option(s) {unknown}; expected some of {list(HF_OPTIONS)}")
    for key, value in options.items():
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"hf option {key} must be a non-empty string, got {value!r}")
    return {key: options.get(key) for key in HF_OPTIONS}


def ingest_hf(
    source: str | Path,
    *,
    teacher: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
    chunk_size: int = CHUNK,
    fmt: str | None = None,
    hf_options: Mapping[str, Any] | None = None,
) -> Iterator[IngestResult]:
    """Every split (or the one named) is ingested; rows of split S are reported as source_file "<source>[S]" (a hub
    source also names its config and revision: "org/name:config@rev[S]"), line = row index. fmt: the row format
    (None: detected per split)."""
    import datasets
    import pyarrow as pa

    options = check_options(hf_options)
    if isinstance(source, Path):
        if options["revision"]:
            raise ValueError(f"{source} is a saved dataset: a revision applies to hub datasets only")
        folder = source / options["config"] if options["config"] else source
        if options["config"] and not is_saved_dataset(folder):
            raise ValueError(f"config {options['config']!r}: {folder} is not a saved HF dataset")
        try:
            loaded = datasets.load_from_disk(str(folder))
        except (ValueError, KeyError, TypeError, pa.ArrowException) as e:  # broken JSON metadata, bad Arrow
            reason = f"unreadable saved HF dataset: {type(e).__name__}: {e}"[:1000]
            yield IngestResult(rejected=[Rejected(source_file=str(source), source_line=0, reason=reason, raw="")])
            return
        if options["split"] and not isinstance(loaded, datasets.DatasetDict):
            raise ValueError(f"{folder} holds one dataset, not a DatasetDict of splits: drop split={options['split']}")
        name = str(folder)
    else:
        kwargs = {"name": options["config"], "split": options["split"], "revision": options["revision"]}
        try:
            loaded = datasets.load_dataset(source, **kwargs)
        except (FileNotFoundError, ConnectionError, ValueError) as e:
            raise FileNotFoundError(f"cannot load HF dataset {source!r} ({_described(options)}): {e}") from e
        name = source + (f":{options['config']}" if options["config"] else "")
        name += f"@{options['revision']}" if options["revision"] else ""
    for split, dataset in _splits(loaded, options["split"], name):
        where = f"{name}[{split}]" if split else name
        head = _head(dataset)
        plan = make_plan(fmt or detect_rows(head), head, mapping)
        rows = iter_batches(dataset.with_format("arrow").iter(batch_size=256), "dataset")  # 256 long rows: a few MB
        yield from read_planned(rows, where, plan, teacher, chunk_size)


def _head(dataset: Any) -> list[dict]:
    """The first rows, for detection (a few: rows can be large)."""
    return dataset.select(range(min(_SNIFF_ROWS, len(dataset)))).to_list()


def _splits(loaded: Any, split: str | None, name: str) -> list[tuple[str | None, Any]]:
    """(split name, Dataset) pairs: all of a DatasetDict, or the one asked for; a lone Dataset as (split, it)."""
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        return [(split, loaded)]
    if split is None:
        return list(loaded.items())
    if split not in loaded:
        raise ValueError(f"{name} has no split {split!r}; it has {', '.join(loaded)}")
    return [(split, loaded[split])]


def _described(options: Mapping[str, str | None]) -> str:
    given = [f"{key}={value}" for key, value in options.items() if value]
    return ", ".join(given) or "default config, all splits"
