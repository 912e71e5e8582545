"""`generations` adapter: rows holding several generations for one problem (OpenR1-Math-220k):
{"problem", "answer", "generations": [str, ...], "correctness_math_verify": [bool, ...], "uuid", ...}.

One trajectory per generation ([user problem, assistant generation], generation=i, teacher_correct from the
aligned correctness list). It is the table adapter with a preset mapping: response=generations,
correctness=correctness_math_verify (else `correctness`), id=uuid (else `id`); a given mapping overrides it.
The row's `messages` (one of the generations again) is not read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rsr.curate.ingest import table
from rsr.curate.ingest._common import RecordError
from rsr.records import Trajectory

CORRECTNESS_COLUMNS = ("correctness_math_verify", "correctness")
ID_COLUMNS = ("uuid", "id")


def preset(rec: Mapping) -> dict[str, str]:
    """The columns this row holds its generations, correctness and id in."""
    out = {"response": "generations"}
    for field, candidates in (("correctness", CORRECTNESS_COLUMNS), ("id", ID_COLUMNS)):
        out[field] = next((c for c in candidates if rec.get(c) is not None), candidates[0])
    return out


def adapter(
    mapping: Mapping[str, str] | str | None, *, source_file: str, teacher: str | None
) -> Callable[[dict, int], list[Trajectory | RecordError]]:
    """The per-record function; the mapping is checked now (a bad one is a ValueError before any record)."""
    given = table.explicit_pairs(mapping)
    resolved: dict[tuple, dict[str, str]] = {}  # per distinct preset: rows of one file nearly always share it
    table.parse_mapping(given, preset({}))

    def one(rec: dict, line: int) -> list[Trajectory | RecordError]:
        key = tuple(preset(rec).items())
        if key not in resolved:
            resolved[key] = table.parse_mapping(given, dict(key))
        fields = resolved[key]
        return table.record_to_trajectories(rec, line, source_file=source_file, teacher=teacher, mapping=fields)

    return one
