"""A flagged trajectory is in no publication (unless asked for), and the dataset card, the MLflow run and the
publication's row name every benchmark checked, with its digest and how many trajectories it removed: the real
select and publish tasks on the hand-made publishable state (tests/support/publish_case.py)."""

from __future__ import annotations

import json

from huggingface_hub import DatasetCard

from rsr.config import BenchmarkSpec
from rsr.settings import StateDir
from rsr.spec import StudentSpec
from rsr.store.writer import Store
from rsr_tasks.decontaminate import decontaminate, register_benchmark
from rsr_tasks.publish import publish, select_trajectories
from rsr_tasks.score import FoundStudent
from tests.support.publish_case import POLICY, mlflow_client


def test_a_flagged_trajectory_is_published_only_when_asked_and_the_card_and_run_name_the_benchmarks(
    env, tmp_path, monkeypatch
) -> None:
    db = env["home"] / "rsr.duckdb"
    env["store"].close()  # the tasks open the state's database themselves
    bench = tmp_path / "tiny-bench.jsonl"
    bench.write_text(json.dumps({"problem": "problem 1"}) + "\n" + json.dumps({"problem": "A problem no one saw."}))
    register_benchmark.fn(db, env["run"], BenchmarkSpec(name="tiny-bench", source=str(bench)))
    assert decontaminate.fn(db, env["run"]).flagged == 2  # "Problem 1" of both teachers, word for word
    flagged = {t.trajectory_id for t in env["trajs"] if t.problem == "Problem 1"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env['home'] / 'mlflow.db'}")
    state = StateDir(env["home"])
    env["store"] = store = Store.open(db)
    found = FoundStudent(store.find_student(StudentSpec(ref="stu")), store.current_setting("stu"))
    store.close()

    clean = select_trajectories.fn(state, found, POLICY)
    assert not {c.trajectory_id for c in clean.chosen} & flagged and len(clean.chosen) == 1
    pub = publish.fn(state, env["run"], clean, "clean-sft", "prefect-123")
    kept = select_trajectories.fn(state, found, POLICY, include_contaminated=True)
    assert {c.trajectory_id for c in kept.chosen} & flagged
    with_flagged = publish.fn(state, env["run"], kept, "with-flagged-sft", "prefect-123")
    env["store"] = store = Store.open(db)
    items = dict(store.query("SELECT dataset_id, list(trajectory_id) FROM publication_items GROUP BY 1")[1])
    assert not set(items[pub.dataset_id]) & flagged and set(items[with_flagged.dataset_id]) & flagged
    digest = store.benchmarks()[0].digest

    card = DatasetCard.load(pub.path / "README.md").text
    assert "## Decontamination" in card and "were left out of scoring and selection" in card
    assert f"| tiny-bench | `{bench}` | `-` | 2 | 8 | `{digest}` | 2 |" in card
    assert "trajectories removed |" in card
    flagged_card = DatasetCard.load(with_flagged.path / "README.md").text
    assert "were **kept** (`include_contaminated`)" in flagged_card and "trajectories kept |" in flagged_card

    run = mlflow_client(env).get_run(pub.mlflow_run_id)
    params = run.data.params
    assert params["decontamination.benchmarks"] == "tiny-bench"
    assert params["decontamination.include_contaminated"] == "False"
    assert (params["benchmark.tiny-bench.digest"], params["benchmark.tiny-bench.removed"]) == (digest, "2")
    assert params["benchmark.tiny-bench.source"] == str(bench) and params["benchmark.tiny-bench.revision"] == "-"
    checked = [i for i in run.inputs.dataset_inputs if [t.value for t in i.tags] == ["benchmark"]]
    assert [(i.dataset.name, i.dataset.digest) for i in checked] == [("tiny-bench", digest[:20])]
    assert json.loads(checked[0].dataset.source) == {"uri": str(bench), "revision": None, "sha256": digest,
                                                      "problems": 2}  # fmt: skip
    recorded = store.get_publication(pub.dataset_id)["params"]
    assert recorded["benchmarks"][0]["digest"] == digest and recorded["include_contaminated"] is False
