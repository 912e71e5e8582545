"""The whole DAG on real data: 3 real teachers (a subset of problems) -> DuckDB -> published dataset -> MLflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

TEACHERS = ["claude-3-5-sonnet-20241022", "Qwen2.5-7B-Instruct", "gemma-2-9b-it"]
N_PROBLEMS = 8


def _subset(shared: Path, out: Path) -> list[Path]:
    """The first problems of each teacher's real file (same problems for all), written to tmp for CI time."""
    files = []
    for teacher in TEACHERS:
        records = json.loads((shared / "zeroeval-math-l5" / f"{teacher}.json").read_text())[:N_PROBLEMS]
        path = out / f"{teacher}.json"
        path.write_text(json.dumps(records))
        files.append(path)
    return files


def _counts(db: Path) -> dict:
    from rsr.store.queries import Reader

    with Reader.open(db) as store:
        return {
            table: store.query(f"SELECT count(*) FROM {table}")[1][0][0]
            for table in ("trajectories", "verdicts", "scores", "duplicates", "quarantine", "publications")
        }


def _config(shared: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """The pipeline's config over the real teachers' subsets, and those files."""
    files = _subset(shared, tmp_path)
    config = {
        "teachers": [{"name": t, "path": str(f), "format": "zeroeval"} for t, f in zip(TEACHERS, files, strict=True)],
        "students": [{"ref": "smollm2-135m", "dtype": "bfloat16"}],
        "policy": {"name": "per_problem_min_rsr"},
        "scoring": {"shard_size": 8},
        "output": "real-sft",
    }
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return config_path, files


def _assert_views(db: Path, n: int) -> tuple[list, list]:
    """Every teacher summarised, scored and on the board; every run completed. (dataset lineage, n selected)"""
    from rsr.store.queries import Reader

    with Reader.open(db) as store:
        _, summary = store.query("SELECT teacher, n_trajectories, n_correct FROM teacher_summary ORDER BY teacher")
        assert {row[0] for row in summary} == set(TEACHERS)
        assert all(row[1] == N_PROBLEMS for row in summary)
        assert sum(row[2] for row in summary) > 0  # strong teachers get level-5 problems right
        _, scores = store.query("SELECT rsr, n_tokens, truncated FROM latest_scores")
        assert len(scores) == n and all(r[0] > 0 and r[1] > 0 for r in scores)
        _, board = store.query("SELECT teacher, dataset_rsr FROM teacher_selection")
        assert len(board) == len(TEACHERS) and all(r[1] > 0 for r in board)
        _, runs = store.query("SELECT flow_name, prefect_flow_run_id, status FROM runs ORDER BY started_at")
        assert {r[0] for r in runs} >= {"pipeline", "curate-teacher", "publish-dataset"}
        assert all(r[1] and r[2] == "completed" for r in runs)
        _, lineage = store.query("SELECT DISTINCT dataset_id, mlflow_run_id FROM dataset_lineage")
        _, selected = store.query("SELECT count(*) FROM publication_items")
    return lineage, selected


def _assert_mlflow_run(mlflow_uri: str, published, files: list[Path]) -> None:
    """The publish run's dataset inputs carry the digests taken at ingest; it names its Prefect flow run."""
    from mlflow import MlflowClient

    run = MlflowClient(mlflow_uri).get_run(published.mlflow_run_id)
    digests = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    used = {Path(f).name: f for f in files}
    for name, digest in digests.items():
        if name in used:
            assert digest == hashlib.sha256(Path(used[name]).read_bytes()).hexdigest()[:20]  # at ingest
    assert set(digests) & set(used)
    assert run.data.tags["prefect.flow_run_id"]


@pytest.mark.slow
def test_pipeline_on_real_teachers(shared_data, state_dir, tmp_path):
    import datasets

    from rsr.settings import StateDir
    from rsr_flows.pipeline import pipeline

    config_path, files = _config(shared_data, tmp_path)
    result = pipeline(str(config_path), state=str(state_dir))
    st = StateDir.from_env(state_dir)
    n = len(TEACHERS) * N_PROBLEMS
    counts = _counts(st.duckdb)
    assert counts["trajectories"] == n
    assert counts["verdicts"] == n
    assert counts["scores"] == n
    assert counts["publications"] == 1
    lineage, selected = _assert_views(st.duckdb, n)

    published = result.published[0].publication
    ds = datasets.load_from_disk(published.path)
    assert len(ds) == published.n_rows == selected[0][0]
    assert 0 < len(ds) <= N_PROBLEMS  # per problem at most one trajectory, verified correct only
    assert ds[0]["messages"][-1]["role"] == "assistant"
    assert lineage == [(published.dataset_id, published.mlflow_run_id)]
    _assert_mlflow_run(st.mlflow_uri, published, files)

    # Re-running with the same inputs changes nothing: no new trajectory, score or publication.
    again = pipeline(str(config_path), state=str(state_dir))
    assert _counts(st.duckdb) == counts
    assert again.published[0].publication.dataset_id == published.dataset_id
    assert all(s.scored == 0 for s in again.scores)
