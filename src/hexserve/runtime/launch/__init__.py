"""The distributed runtime: a plan's workers (one process per device), their process groups, and the
leader-side executors that drive them."""

from hexserve.runtime.launch.executor import PipelineExecutor
from hexserve.runtime.launch.launcher import launch_plan
from hexserve.runtime.launch.settings import check_plan, replica_settings

__all__ = ["PipelineExecutor", "check_plan", "launch_plan", "replica_settings"]
