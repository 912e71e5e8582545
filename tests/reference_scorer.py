"""The test oracle lives with the benchmarks' one baseline scorer (benchmarks/baseline_scorer.py): re-exported."""

from benchmarks.baseline_scorer import REL_TOL, BoundaryMerge, Reference, reference

__all__ = ["REL_TOL", "BoundaryMerge", "Reference", "reference"]
