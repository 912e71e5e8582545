"""`hf` adapter: a `datasets` folder written by save_to_disk (or a hub id), in messages or mapped-table form."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

from rsr.ingest import messages, table
from rsr.ingest._common import CHUNK, IngestResult, collect
from rsr.ingest._io import iter_batches
from rsr.records import Rejected


def is_saved_dataset(path: Path) -> bool:
    """save_to_disk writes dataset_info.json + state.json (a Dataset) or dataset_dict.json (a DatasetDict)."""
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    return path.is_dir() and any((path / m).is_file() for m in markers)


def ingest_hf(
    source: str | Path,
    *,
    teacher: str | None = None,
    mapping: Mapping[str, str] | str | None = None,
    chunk_size: int = CHUNK,
) -> Iterator[IngestResult]:
    """Every split is ingested; rows of split S are reported as source_file "<path>[S]", line = row index."""
    import datasets
    import pyarrow as pa

    fields = table.parse_mapping(mapping) if mapping is not None else None
    if isinstance(source, Path):
        try:
            loaded = datasets.load_from_disk(str(source))
        except (ValueError, KeyError, TypeError, pa.ArrowException) as e:  # broken JSON metadata, bad Arrow
            reason = f"unreadable saved HF dataset: {type(e).__name__}: {e}"[:1000]
            yield IngestResult(rejected=[Rejected(source_file=str(source), source_line=0, reason=reason, raw="")])
            return
    else:
        try:
            loaded = datasets.load_dataset(source)
        except (FileNotFoundError, ConnectionError, ValueError) as e:
            raise FileNotFoundError(f"cannot load HF dataset {source!r}: {e}") from e
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, dataset in splits:
        name = f"{source}[{split}]" if split else str(source)
        if "messages" in dataset.column_names and fields is None:
            one = partial(messages.record_to_trajectory, source_file=name, teacher=teacher)
        else:
            mapped = fields or table.parse_mapping(None)
            one = partial(table.record_to_trajectory, source_file=name, teacher=teacher, mapping=mapped)
        rows = iter_batches(dataset.with_format("arrow").iter(batch_size=chunk_size), "dataset")
        yield from collect(rows, name, one, chunk_size)
