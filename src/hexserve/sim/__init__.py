"""Discrete-event simulator: replay a workload against a plan file with the planner's cost model."""
