"""Writes modelwatch's Kibana saved objects (``modelwatch.ndjson``) from the Python data below.

Ids, titles and references all come from this one file, so the committed NDJSON is never
edited by hand: change this generator, run it, and commit both. ``--check`` exits 1 when the
committed file differs from what the generator writes (CI runs it). The output is
deterministic: ids are UUIDv5 of a fixed namespace and a slug, keys are sorted, one object per
line, a trailing newline.

Objects are in the Kibana 8.x saved-object format (``coreMigrationVersion`` 8.8.0, so Kibana
8.8 or newer imports them and migrates them forward). Field names follow
``sidecar.documents``; the data stream patterns come from it too.

Usage::

    python dashboards/kibana/generate.py            # rewrite modelwatch.ndjson
    python dashboards/kibana/generate.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.documents import drift_stream, predictions_stream

OUTPUT = Path(__file__).with_name("modelwatch.ndjson")

CORE_MIGRATION_VERSION = "8.8.0"
"""The Kibana version the objects are written for; older Kibanas refuse the import."""

TYPE_MIGRATION_VERSIONS = {
    "index-pattern": "8.0.0",
    "search": "8.0.0",
    # 8.6.0 renamed the Lens datasource ``indexpattern`` to ``formBased``, the name used here.
    "lens": "8.6.0",
    "dashboard": "8.7.0",
}
"""Per type, the newest migration the objects' layout already reflects (later ones still run)."""

_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://modelwatch.invalid/kibana")

PREDICTIONS_PATTERN = predictions_stream("*")
DRIFT_PATTERN = drift_stream("*")

SLOW_PREDICTION_NS = 250_000_000
"""The "slow predictions" search: ``event.duration`` (nanoseconds) above 250 ms."""

DASHBOARD_TITLE = "modelwatch — predictions and drift"

_SEARCH_INDEX_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
_PREDICTION_COLUMNS = [
    "ml.model.name",
    "ml.model.version",
    "event.outcome",
    "event.duration",
    "ml.prediction",
    "trace.id",
]
_LAYER = "layer"


def object_id(slug: str) -> str:
    """The stable, UUID-shaped id of the saved object named ``slug``."""
    return str(uuid.uuid5(_ID_NAMESPACE, slug))


PREDICTIONS_VIEW = object_id("data-view/predictions")
DRIFT_VIEW = object_id("data-view/drift")


def saved_objects() -> list[dict[str, Any]]:
    """Every saved object, dependencies first (data views, searches, Lens panels, dashboard)."""
    searches = [
        _search(
            "search/errors",
            "modelwatch — failed predictions",
            "Predictions whose outcome is failure (the model server reported an error).",
            'event.outcome : "failure"',
        ),
        _search(
            "search/slow",
            "modelwatch — slow predictions (over 250 ms)",
            "Predictions slower than 250 ms: event.duration is in nanoseconds, "
            f"so the threshold is {SLOW_PREDICTION_NS}. Edit the number for another one.",
            f"event.duration > {SLOW_PREDICTION_NS}",
        ),
        _search(
            "search/model-version",
            "modelwatch — one model version (template)",
            "A template: replace <model> and <version> in the query with a model name and "
            "version, then save as a new search.",
            'ml.model.name : "<model>" and ml.model.version : "<version>"',
        ),
    ]
    charts = [_volume_chart(), _latency_chart(), _drift_chart()]
    return [
        _data_view(PREDICTIONS_VIEW, PREDICTIONS_PATTERN, "modelwatch predictions", durations=True),
        _data_view(DRIFT_VIEW, DRIFT_PATTERN, "modelwatch drift", durations=False),
        *searches,
        *charts,
        _dashboard(charts, searches),
    ]


def render() -> bytes:
    """The NDJSON file: one object per line, keys sorted, UTF-8, a trailing newline."""
    lines = (_dumps(obj) for obj in saved_objects())
    return "".join(f"{line}\n" for line in lines).encode()


def main(argv: Sequence[str] | None = None) -> int:
    """Write the file (or with ``--check`` compare it); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write or check")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    content = render()
    output: Path = args.output
    if args.check:
        if output.is_file() and output.read_bytes() == content:
            return 0
        print(
            f"{output} is out of date: run python dashboards/kibana/generate.py",
            file=sys.stderr,
        )
        return 1
    output.write_bytes(content)
    return 0


# --------------------------------------------------------------------------- object builders


def _saved_object(
    type_: str, id_: str, attributes: dict[str, Any], references: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "type": type_,
        "id": id_,
        "attributes": attributes,
        "references": references,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": TYPE_MIGRATION_VERSIONS[type_],
    }


def _data_view(id_: str, pattern: str, name: str, *, durations: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {"title": pattern, "name": name, "timeFieldName": "@timestamp"}
    if durations:
        # Kibana shows event.duration (and Lens percentiles of it) in ms, not raw nanoseconds.
        duration = {
            "id": "duration",
            "params": {
                "inputFormat": "nanoseconds",
                "outputFormat": "asMilliseconds",
                "outputPrecision": 1,
            },
        }
        attributes["fieldFormatMap"] = _dumps({"event.duration": duration})
    return _saved_object("index-pattern", id_, attributes, [])


def _search(slug: str, title: str, description: str, kql: str) -> dict[str, Any]:
    source = {
        "query": {"query": kql, "language": "kuery"},
        "filter": [],
        "indexRefName": _SEARCH_INDEX_REF,
    }
    attributes = {
        "title": title,
        "description": description,
        "columns": _PREDICTION_COLUMNS,
        "sort": [["@timestamp", "desc"]],
        "grid": {},
        "hideChart": False,
        "isTextBasedQuery": False,
        "kibanaSavedObjectMeta": {"searchSourceJSON": _dumps(source)},
    }
    references = [{"name": _SEARCH_INDEX_REF, "type": "index-pattern", "id": PREDICTIONS_VIEW}]
    return _saved_object("search", object_id(slug), attributes, references)


def _volume_chart() -> dict[str, Any]:
    columns = {
        "time": _date_histogram(),
        "version": _terms("ml.model.version", order_by="count", size=10),
        "count": {
            "label": "Predictions",
            "customLabel": True,
            "dataType": "number",
            "operationType": "count",
            "sourceField": "___records___",
            "isBucketed": False,
            "scale": "ratio",
            "params": {"emptyAsNull": True},
        },
    }
    return _lens(
        "lens/prediction-volume",
        "modelwatch — prediction volume by model version",
        "Predictions per interval, one series per model version (top 10).",
        PREDICTIONS_VIEW,
        columns,
        ["time", "version", "count"],
        series_type="bar_stacked",
        accessors=["count"],
        split="version",
    )


def _latency_chart() -> dict[str, Any]:
    columns: dict[str, Any] = {"time": _date_histogram()}
    for percentile in (50, 95, 99):
        columns[f"p{percentile}"] = {
            "label": f"p{percentile} latency",
            "customLabel": True,
            "dataType": "number",
            "operationType": "percentile",
            "sourceField": "event.duration",
            "isBucketed": False,
            "scale": "ratio",
            "params": {"percentile": percentile},
        }
    return _lens(
        "lens/latency",
        "modelwatch — prediction latency (p50, p95, p99)",
        "Percentiles of event.duration per interval, all models together.",
        PREDICTIONS_VIEW,
        columns,
        ["time", "p50", "p95", "p99"],
        series_type="line",
        accessors=["p50", "p95", "p99"],
        split=None,
    )


def _drift_chart() -> dict[str, Any]:
    columns = {
        "time": _date_histogram(),
        "feature": _terms("ml.drift.feature", order_by="psi", size=20),
        "psi": {
            # The worst value in the interval: several model versions may report one feature.
            "label": "PSI (max)",
            "customLabel": True,
            "dataType": "number",
            "operationType": "max",
            "sourceField": "ml.drift.psi",
            "isBucketed": False,
            "scale": "ratio",
            "params": {"emptyAsNull": True},
        },
    }
    return _lens(
        "lens/drift-psi",
        "modelwatch — drift history (PSI per feature)",
        "Population stability index of each feature over time (the 20 with the highest PSI).",
        DRIFT_VIEW,
        columns,
        ["time", "feature", "psi"],
        series_type="line",
        accessors=["psi"],
        split="feature",
        query='ml.drift.scope : "feature"',
    )


def _date_histogram() -> dict[str, Any]:
    return {
        "label": "@timestamp",
        "dataType": "date",
        "operationType": "date_histogram",
        "sourceField": "@timestamp",
        "isBucketed": True,
        "scale": "interval",
        "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
    }


def _terms(field: str, *, order_by: str, size: int) -> dict[str, Any]:
    return {
        "label": field,
        "customLabel": True,
        "dataType": "string",
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": {
            "size": size,
            "orderBy": {"type": "column", "columnId": order_by},
            "orderDirection": "desc",
            "otherBucket": True,
            "missingBucket": False,
            "parentFormat": {"id": "terms"},
        },
    }


def _lens(
    slug: str,
    title: str,
    description: str,
    view: str,
    columns: dict[str, Any],
    column_order: list[str],
    *,
    series_type: str,
    accessors: list[str],
    split: str | None,
    query: str = "",
) -> dict[str, Any]:
    layer: dict[str, Any] = {
        "layerId": _LAYER,
        "layerType": "data",
        "seriesType": series_type,
        "xAccessor": "time",
        "accessors": accessors,
    }
    if split is not None:
        layer["splitAccessor"] = split
    state = {
        "datasourceStates": {
            "formBased": {
                "layers": {
                    _LAYER: {
                        "columns": columns,
                        "columnOrder": column_order,
                        "incompleteColumns": {},
                    }
                }
            }
        },
        "visualization": {
            "legend": {"isVisible": True, "position": "right"},
            "valueLabels": "hide",
            "preferredSeriesType": series_type,
            "layers": [layer],
        },
        "query": {"query": query, "language": "kuery"},
        "filters": [],
    }
    attributes = {
        "title": title,
        "description": description,
        "visualizationType": "lnsXY",
        "state": state,
    }
    references = [
        {"name": f"indexpattern-datasource-layer-{_LAYER}", "type": "index-pattern", "id": view}
    ]
    return _saved_object("lens", object_id(slug), attributes, references)


def _dashboard(charts: list[dict[str, Any]], searches: list[dict[str, Any]]) -> dict[str, Any]:
    # Charts on top (volume and latency side by side, drift full width), then the searches.
    layout = [
        (charts[0], 0, 0, 24, 15),
        (charts[1], 24, 0, 24, 15),
        (charts[2], 0, 15, 48, 15),
        (searches[0], 0, 30, 24, 15),
        (searches[1], 24, 30, 24, 15),
        (searches[2], 0, 45, 48, 15),
    ]
    panels: list[dict[str, Any]] = []
    references: list[dict[str, str]] = []
    for target, x, y, w, h in layout:
        index = object_id(f"dashboard/panel/{target['id']}")
        ref_name = f"panel_{index}"
        panels.append(
            {
                "version": CORE_MIGRATION_VERSION,
                "type": target["type"],
                "panelIndex": index,
                "gridData": {"x": x, "y": y, "w": w, "h": h, "i": index},
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": ref_name,
            }
        )
        # Kibana 8 prefixes a panel's reference names with its panelIndex.
        references.append(
            {"name": f"{index}:{ref_name}", "type": target["type"], "id": target["id"]}
        )
    attributes = {
        "title": DASHBOARD_TITLE,
        "description": "Prediction volume, latency and drift from modelwatch's data streams.",
        "panelsJSON": _dumps(panels),
        "optionsJSON": _dumps(
            {
                "useMargins": True,
                "syncColors": False,
                "syncCursor": True,
                "syncTooltips": False,
                "hidePanelTitles": False,
            }
        ),
        "timeRestore": True,
        "timeFrom": "now-24h",
        "timeTo": "now",
        "refreshInterval": {"pause": False, "value": 60_000},
        "kibanaSavedObjectMeta": {
            "searchSourceJSON": _dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
        },
    }
    return _saved_object("dashboard", object_id("dashboard/main"), attributes, references)


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
