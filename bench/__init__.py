"""Benchmarks of the sidecar: each prints its figure, its baselines, their ratio and its goal.

Run ``python -m bench`` (all of them) or ``python -m bench engine http drift memory`` (a subset),
with ``--quick`` for a smoke run on smaller sizes. Figures are ratios against baselines measured
in the same process and the same run; nothing here asserts on time. See ``docs/performance.md``.
"""
