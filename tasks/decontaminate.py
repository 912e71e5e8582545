"""Benchmark decontamination as Prefect tasks (rsr/stages/decontaminate.py does the work)."""

from prefect import task

from rsr.stages import decontaminate as stage
from rsr.stages.decontaminate import Decontaminated, Registered

__all__ = ["Decontaminated", "Registered", "decontaminate", "register_benchmark"]

register_benchmark = task(stage.register_benchmark, name="register-benchmark")
decontaminate = task(stage.decontaminate, name="decontaminate")
