"""Suite-wide test settings.

Hypothesis runs with no per-example deadline and without the "too slow" health check: CI
machines are shared two-core hosts, and a slow neighbour must not fail a property test whose
property holds. Each property test still sets its own example count.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "modelwatch",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    print_blob=True,
)
settings.load_profile("modelwatch")
