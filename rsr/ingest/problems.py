"""Problem sets with gold answers (JSONL: problem|prompt|question + answer), and joining their golds to trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rsr.ingest._common import RecordError, answer_str, opt_id
from rsr.ingest._io import iter_records, require_path
from rsr.records import Problem, Trajectory, normalize_text, problem_id_for

_TEXT_KEYS = ("problem", "prompt", "question")
_ID_KEYS = ("problem_id", "id", "unique_id")


@dataclass
class ProblemIndex:
    """Golds by our problem_id (the normalised-text hash) and by the file's own ids."""

    problems: list[Problem] = field(default_factory=list)
    by_pid: dict[str, Problem] = field(default_factory=dict)
    by_own_id: dict[str, Problem] = field(default_factory=dict)
    by_text: dict[str, Problem] = field(default_factory=dict)

    def lookup(self, problem_id: str, problem_text: str) -> Problem | None:
        return (
            self.by_pid.get(problem_id)
            or self.by_own_id.get(problem_id)
            or self.by_text.get(normalize_text(problem_text))
        )


def load_problem_index(path: Path) -> ProblemIndex:
    """Read a problems file; a bad line is an error naming file and line (a gold set should be clean)."""
    path = require_path(Path(path))
    index = ProblemIndex()
    for raw in iter_records(path):
        where = f"{path}:{raw.line}"
        if raw.error is not None:
            raise ValueError(f"{where}: {raw.error}")
        rec = raw.value
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected an object, got {type(rec).__name__}")
        text = next((rec[k] for k in _TEXT_KEYS if isinstance(rec.get(k), str) and rec[k].strip()), None)
        if text is None:
            raise ValueError(f"{where}: no problem text (expected one of {', '.join(_TEXT_KEYS)})")
        try:
            gold = answer_str(rec.get("answer"))
            own_ids = [i for k in _ID_KEYS if (i := opt_id(rec, k)) is not None]
        except RecordError as e:
            raise ValueError(f"{where}: {e}") from None
        problem = Problem(problem_id=problem_id_for(text), text=text, gold_answer=gold, source=str(path))
        index.problems.append(problem)
        index.by_pid.setdefault(problem.problem_id, problem)
        index.by_text.setdefault(normalize_text(text), problem)
        for own in own_ids:
            index.by_own_id.setdefault(own, problem)
    return index


def load_problems(path: str | Path) -> list[Problem]:
    """Problems with gold answers; a float gold like 38.0 is rendered "38"."""
    return load_problem_index(Path(path)).problems


def join_gold(trajectories: list[Trajectory], index: ProblemIndex) -> list[Trajectory]:
    """Fill missing golds from the problems file: by problem_id / the file's own id, else by normalised text."""
    out = []
    for traj in trajectories:
        if traj.gold_answer is None and (hit := index.lookup(traj.problem_id, traj.problem)) and hit.gold_answer:
            traj = traj.model_copy(update={"gold_answer": hit.gold_answer})
        out.append(traj)
    return out


def problems_of(trajectories: list[Trajectory], index: ProblemIndex | None = None) -> list[Problem]:
    """One Problem per distinct problem_id, in first-seen order, with the first gold known for it."""
    seen: dict[str, Problem] = {}
    for traj in trajectories:
        current = seen.get(traj.problem_id)
        if current is None:
            hit = index.lookup(traj.problem_id, traj.problem) if index else None
            gold, source = traj.gold_answer, traj.source_file
            if hit is not None and hit.gold_answer and (gold is None or gold == hit.gold_answer):
                gold, source = hit.gold_answer, hit.source
            seen[traj.problem_id] = Problem(
                problem_id=traj.problem_id, text=traj.problem, gold_answer=gold, source=source if gold else None
            )
        elif current.gold_answer is None and traj.gold_answer:
            seen[traj.problem_id] = current.model_copy(
                update={"gold_answer": traj.gold_answer, "source": traj.source_file}
            )
    return list(seen.values())
