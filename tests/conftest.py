"""Shared fixtures: the real reference data beside the repo, and a private state folder per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RSR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (8 real teachers on 721 MATH problems); tests that need it skip where it is absent."""
    if not (SHARED_DATA / "zeroeval-math-l5").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (set RSR_SHARED_DATA or lay out ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """A fresh RSR_HOME for one test."""
    home = tmp_path / "rsr-home"
    monkeypatch.setenv("RSR_HOME", str(home))
    return home
