"""Select, publish, push: a chat-format SFT dataset with lineage in DuckDB and MLflow."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from rsr.publish.baseline import Pick, publish_with_baseline
from rsr.publish.files import publish_selection, source_files
from rsr.publish.hub import push_to_hub
from rsr.publish.lineage import Tracking
from rsr.publish.manifest import BenchmarkUse, Publication, Request
from rsr.select import Baseline, SelectionPolicy, rank_teachers, select, selection_counts, token_matched_random
from rsr.settings import StateDir
from rsr.spec import Registration
from rsr.stages.score import FoundStudent, load_registered
from rsr.store.queries import Candidate, Reader
from rsr.store.writer import Store


@dataclass(frozen=True)
class Selection:
    """What a policy chose among a student's scored trajectories, and the numbers the card and MLflow show."""

    student: Registration
    policy: SelectionPolicy
    chosen: list[Candidate]
    counts: dict[str, int]  # rsr.select.selection_counts
    ranking: list[tuple[str, float, int]]  # (teacher, dataset RSR, n) best first, over all candidates
    benchmarks: list[BenchmarkUse] = field(default_factory=list)  # what every trajectory was checked against
    include_contaminated: bool = False  # trajectories holding a benchmark problem were candidates too
    candidates: list[Candidate] = field(default_factory=list, repr=False)  # what it was chosen from
    seed: int | None = None  # a random baseline's seed (None: the policy chose)


def select_trajectories(
    state: StateDir, found: FoundStudent, policy: SelectionPolicy, include_contaminated: bool = False
) -> Selection:
    """Apply the policy to the student's current scores made as ``found.key`` says (dtype, max_tokens, r_max),
    without the trajectories holding a benchmark problem unless `include_contaminated`."""
    with Reader.open(state.duckdb) as reader:
        cands = reader.candidates(found.student.student_id, found.key, include_contaminated)
        removed = reader.contamination_counts()
        benchmarks = [
            BenchmarkUse(b.name, b.source, b.kind, b.revision, b.digest, b.n_problems, b.ngram, removed[b.name][0])
            for b in reader.benchmarks()
        ]
    chosen = select(cands, policy)
    counts, ranking = selection_counts(cands, chosen, policy), rank_teachers(cands)
    return Selection(found.student, policy, chosen, counts, ranking, benchmarks, include_contaminated, cands)


def random_baseline(selection: Selection, baseline: Baseline) -> Selection:
    """A seeded random pick from the selection's eligible trajectories with its response tokens (within 2%)."""
    cands, policy = selection.candidates, selection.policy
    chosen = token_matched_random(cands, selection.chosen, policy, baseline.seed)
    counts = selection_counts(cands, chosen, policy)
    return dataclasses.replace(selection, chosen=chosen, counts=counts, seed=baseline.seed)


def training_split(registration: Registration) -> Callable[[list[dict], list[dict] | None], dict[str, str]]:
    """For a student whose template rewrites assistant text: the prompt/completion split its scores were made on.
    Rendering needs the student's tokenizer and template, so the student is loaded (once per process, shared with
    scoring); it must be the registered one."""
    return load_registered(registration).training_example


def native_split(registration: Registration) -> Callable[[list[dict], list[dict] | None], dict] | None:
    """For a student whose template reads reasoning in its own field or tags (or tool arguments as mappings): each
    row's `messages` in that form, as they were scored, so a trainer feeds its template what it reads. None when
    the records' form is the student's own (nothing is loaded then)."""
    if not registration.info.get("native_form"):
        return None
    student = load_registered(registration)  # loaded once per process, shared with scoring
    return lambda messages, tools: {"messages": student.renderer.native(messages)}


def publish(
    state: StateDir,
    run_id: str,
    selection: Selection,
    name: str,
    prefect_flow_run_id: str | None = None,
    mlflow_uri: str | None = None,
    baseline: Selection | None = None,
) -> Publication:
    """Write the selection as a dataset, log it to MLflow and register it in DuckDB; with ``baseline`` (a
    random_baseline), that one too as `<name>-random`, each naming the other (the result's ``baseline``).

    ``mlflow_uri``: the --mlflow-uri flag or the config's; None falls back to $MLFLOW_TRACKING_URI, then the
    state folder's store."""
    row = selection.student
    info = row.info
    request = Request(
        name,
        row.student_id,
        row.ref,
        selection.policy,
        run_id,
        prefect_flow_run_id,
        render_mode=info.get("render_mode", "template"),
        render_note=info.get("render_note"),
        chat_template=info.get("chat_template"),
        end_of_turn=info.get("end_of_turn"),  # registrations before issue 31 lack it: the card says it in words
        split=training_split(row) if info.get("render_mode") == "generation" else native_split(row),
    )
    tracking = Tracking.resolve(state, mlflow_uri)
    with Store.open(state.duckdb) as store:
        checked = {"benchmarks": selection.benchmarks, "include_contaminated": selection.include_contaminated}
        if baseline is None:
            pub = publish_selection(
                store,
                selection.chosen,
                request,
                out_root=state.datasets,
                tracking=tracking,
                sources=source_files(store, selection.chosen),
                counts=selection.counts,
                **checked,
            )
        else:
            picks = [Pick(s.chosen, source_files(store, s.chosen), s.counts) for s in (selection, baseline)]
            seed = baseline.seed or 0
            pub = publish_with_baseline(store, *picks, request, seed, out_root=state.datasets, tracking=tracking,
                                        **checked)  # fmt: skip
        store.set_run_mlflow(run_id, pub.mlflow_run_id)
    return pub


def push(state: StateDir, pub: Publication, repo_id: str, mlflow_uri: str | None = None) -> str:
    """Upload a publication to the Hub (datasets' own push; the token from HF_TOKEN or `hf auth login`) and tag
    its MLflow run with the repo. Returns the commit URL."""
    url = push_to_hub(pub.path, repo_id)
    if pub.mlflow_run_id:
        client = Tracking.resolve(state, mlflow_uri).client()
        client.set_tag(pub.mlflow_run_id, "rsr.hub_repo", repo_id)
        client.set_tag(pub.mlflow_run_id, "rsr.hub_commit", url)
    return url
