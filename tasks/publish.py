"""Select, publish, push as Prefect tasks (rsr/stages/publish.py does the work)."""

from prefect import task

from rsr.stages import publish as stage
from rsr.stages.publish import Selection

__all__ = ["Selection", "publish", "push", "random_baseline", "select_trajectories"]

select_trajectories = task(stage.select_trajectories, name="select")
random_baseline = task(stage.random_baseline, name="random-baseline")
publish = task(stage.publish, name="publish")
push = task(stage.push, name="push-to-hub", retries=2, retry_delay_seconds=30)
