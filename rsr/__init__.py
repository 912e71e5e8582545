"""rsr-curate: pick the teacher trajectories that teach a given student best (Rank-Surprisal Ratio)."""

from rsr.metric import METRIC_VERSION, R_MAX, TrajectoryStats, dataset_rsr, trajectory_rsr

__version__ = "0.1.0"
__all__ = ["METRIC_VERSION", "R_MAX", "TrajectoryStats", "dataset_rsr", "trajectory_rsr"]
