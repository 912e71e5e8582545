"""rsr-curate: pick the teacher trajectories that teach a given student best (Rank-Surprisal Ratio)."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["METRIC_VERSION", "R_MAX", "TrajectoryStats", "dataset_rsr", "trajectory_rsr"]


def __getattr__(name: str):
    # Lazy: `rsr.metric` imports torch (~1.6 s); `rsr sql`, the verifier workers and --help should not pay that.
    if name in __all__:
        from rsr import metric

        return getattr(metric, name)
    raise AttributeError(f"module 'rsr' has no attribute {name!r}")
