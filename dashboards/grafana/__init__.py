"""modelwatch's Grafana dashboards as code (grafana-foundation-sdk, Grafana 11.6 schema).

``queries`` holds every PromQL query; ``_serving``, ``_drift`` and ``_health`` lay the panels
out; ``generate`` writes ``json/<uid>.json``. Provisioning files for Grafana are under
``provisioning/``.
"""

from __future__ import annotations

from dashboards.grafana._build import dashboards, render
from dashboards.grafana.queries import UIDS, all_queries, required_queries, substitute_variables

__all__ = [
    "UIDS",
    "all_queries",
    "dashboards",
    "render",
    "required_queries",
    "substitute_variables",
]
