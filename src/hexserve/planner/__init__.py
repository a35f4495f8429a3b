"""The HexGen planner: the plan file, the best layout of one group, the colocated search, baselines.

docs/planner.md describes the algorithm, its objective and its measured quality and speed.
"""
