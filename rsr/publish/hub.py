"""Push a published dataset to the Hugging Face Hub with ``datasets``' own ``Dataset.push_to_hub``.

The card goes first (``HfApi.upload_file``), then the rows: ``push_to_hub`` reads the README already in the
repo, keeps our text and metadata, and adds its ``dataset_info`` and the Hub layout's data ``configs``
(``data/train-*.parquet``), so the repo ends with one card that carries both. The Hub checks the card's YAML
when it is committed.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, HfApi


def push_to_hub(folder: Path, repo_id: str, *, token: str | None = None, private: bool | None = None) -> str:
    """Upload the publication in ``folder`` to the dataset repo ``repo_id``; returns the data commit's URL."""
    folder = Path(folder)
    ds = datasets.load_from_disk(str(folder))
    card = DatasetCard.load(folder / "README.md")
    card.data.configs = None  # the local folder's configs (data.parquet); push_to_hub writes the Hub layout's
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_file(
        path_or_fileobj=str(card).encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message=f"rsr-curate: dataset card of {folder.name}",
    )
    commit = ds.push_to_hub(repo_id, token=token, private=private, commit_message=f"rsr-curate: {folder.name}")
    return commit.commit_url
