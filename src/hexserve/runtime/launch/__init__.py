"""The distributed runtime: a plan's workers (one process per device), their process groups, and the
leader-side executors that drive them."""

from hexserve.runtime.launch.executor import PipelineExecutor
from hexserve.runtime.launch.launcher import launch_plan

__all__ = ["PipelineExecutor", "launch_plan"]
