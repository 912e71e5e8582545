"""Problem sets with gold answers (JSONL: problem|prompt|question + answer), and joining their golds to trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from rsr.curate.ingest._common import RecordError, answer_str, opt_id
from rsr.curate.ingest._io import iter_records, require_path
from rsr.records import Problem, Trajectory, normalize_text, problem_id_for

_TEXT_KEYS = ("problem", "prompt", "question")
_ID_KEYS = ("problem_id", "id", "unique_id")


class ProblemIndex(NamedTuple):
    """Golds by our problem_id (the normalised-text hash) or the file's own ids, and by normalised text."""

    problems: list[Problem]
    by_id: dict[str, Problem]
    by_text: dict[str, Problem]


def load_problem_index(path: Path) -> ProblemIndex:
    """Read a problems file; a bad line is an error naming file and line (a gold set should be clean)."""
    path = require_path(Path(path))
    index = ProblemIndex([], {}, {})
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
            own_ids = [i for k in _ID_KEYS if (i := opt_id(rec.get(k), f"`{k}`")) is not None]
        except RecordError as e:
            raise ValueError(f"{where}: {e}") from None
        problem = Problem(problem_id=problem_id_for(text), text=text, gold_answer=gold, source=str(path))
        index.problems.append(problem)
        index.by_text.setdefault(normalize_text(text), problem)
        for key in (problem.problem_id, *own_ids):
            index.by_id.setdefault(key, problem)
    return index


def load_problems(path: str | Path) -> list[Problem]:
    """Problems with gold answers; a float gold like 38.0 is rendered "38"."""
    return load_problem_index(Path(path)).problems


def join_gold(trajectories: list[Trajectory], index: ProblemIndex | None) -> tuple[list[Trajectory], list[Problem]]:
    """Missing golds filled from the problems file (by problem_id / the file's own id, else by normalised text), and
    one Problem per distinct problem_id, in first-seen order, with the first gold known for it."""
    joined: list[Trajectory] = []
    problems: dict[str, Problem] = {}
    for traj in trajectories:
        hit = index and (index.by_id.get(traj.problem_id) or index.by_text.get(normalize_text(traj.problem)))
        gold = hit.gold_answer if hit else None
        if traj.gold_answer is None and gold:
            traj = traj.model_copy(update={"gold_answer": gold})
        joined.append(traj)
        current = problems.get(traj.problem_id)
        if current is None or (current.gold_answer is None and traj.gold_answer):
            source = hit.source if gold and traj.gold_answer == gold else traj.source_file
            problems[traj.problem_id] = Problem(
                problem_id=traj.problem_id,
                text=current.text if current else traj.problem,
                gold_answer=traj.gold_answer,
                source=source if traj.gold_answer else None,
            )
    return joined, list(problems.values())
