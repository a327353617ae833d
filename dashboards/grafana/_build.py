"""Build the dashboard models and their JSON text (used by ``generate`` and by tests)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana import _drift, _health, _serving
from dashboards.grafana.queries import DRIFT, HEALTH, SERVING

JSON_DIR = Path(__file__).parent / "json"

_BUILDERS: dict[str, Callable[[], model.Dashboard]] = {
    SERVING: _serving.build,
    DRIFT: _drift.build,
    HEALTH: _health.build,
}


def dashboards() -> dict[str, model.Dashboard]:
    """Every dashboard model, by uid."""
    return {uid: build() for uid, build in _BUILDERS.items()}


def to_json(dashboard: model.Dashboard) -> str:
    """The dashboard as stable, sorted, indented JSON text ending in a newline."""
    return (
        json.dumps(dashboard, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )


def render() -> dict[str, str]:
    """File name (``<uid>.json``) → JSON text, for every dashboard."""
    return {f"{uid}.json": to_json(dashboard) for uid, dashboard in dashboards().items()}
