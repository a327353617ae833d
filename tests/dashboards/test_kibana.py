"""Kibana saved objects: valid NDJSON, consistent references, fields that exist, regenerable."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sidecar.documents import DocumentBuilder, drift_stream, predictions_stream
from sidecar.es_setup import DRIFT_COMPONENT, ECS_COMPONENT, PREDICTIONS_COMPONENT, objects
from sidecar.snapshot import DriftSnapshot, FeatureDrift

KIBANA = Path(__file__).parents[2] / "dashboards" / "kibana"
COMMITTED = KIBANA / "modelwatch.ndjson"

_KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@]*)\s*(?::|>=|<=|>|<)")
_KQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NUMERIC = {"long", "double", "integer", "float", "scaled_float"}


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kibana_generate", KIBANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


@pytest.fixture(scope="module")
def saved() -> list[dict[str, Any]]:
    """The committed saved objects, parsed."""
    return [json.loads(line) for line in COMMITTED.read_text(encoding="utf-8").splitlines()]


def _by_id(saved: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["id"]: obj for obj in saved}


def _of_type(saved: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [obj for obj in saved if obj["type"] == type_]


def _reference(obj: dict[str, Any], name: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [ref for ref in obj["references"] if ref["name"] == name]
    assert len(matches) == 1, f"{obj['type']} {obj['id']}: reference {name!r} found {matches}"
    return matches[0]


def _lens_layers(lens: dict[str, Any]) -> dict[str, Any]:
    layers: dict[str, Any] = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    return layers


def _lens_columns(lens: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for layer in _lens_layers(lens).values():
        yield from layer["columns"].values()


def _view_of(obj: dict[str, Any]) -> str:
    index_refs: set[str] = {
        ref["id"] for ref in obj["references"] if ref["type"] == "index-pattern"
    }
    assert len(index_refs) == 1, f"{obj['id']} should read exactly one data view"
    return index_refs.pop()


def _queries(obj: dict[str, Any]) -> list[str]:
    if obj["type"] == "search":
        source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        return [source["query"]["query"]]
    if obj["type"] == "lens":
        return [obj["attributes"]["state"]["query"]["query"]]
    return []


def _fields_used(obj: dict[str, Any]) -> set[str]:
    # Quoted values go first: "<model>" would otherwise read as a comparison on "model".
    unquoted = [_KQL_STRING.sub('""', query) for query in _queries(obj)]
    fields = {field for query in unquoted for field in _KQL_FIELD.findall(query)}
    if obj["type"] == "search":
        fields.update(obj["attributes"]["columns"])
        fields.update(field for field, _ in obj["attributes"]["sort"])
    if obj["type"] == "lens":
        fields.update(column["sourceField"] for column in _lens_columns(obj))
        fields.discard("___records___")  # Lens's name for "count documents", not a field
    return fields


def _mapped_types(*components: str) -> dict[str, str]:
    bodies = {obj.name: obj.body for obj in objects(namespace="default")}
    types: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, mapping in properties.items():
            if "properties" in mapping:
                walk(mapping["properties"], f"{prefix}{name}.")
            else:
                types[f"{prefix}{name}"] = mapping["type"]

    for component in components:
        walk(bodies[component]["template"]["mappings"]["properties"], "")
    return types


def _flatten(source: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in source.items():
        if isinstance(value, dict):
            keys |= _flatten(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def _field_owners(saved: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Fields used by objects on each data view, keyed by the data view's title."""
    views = {obj["id"]: obj["attributes"]["title"] for obj in _of_type(saved, "index-pattern")}
    owners: dict[str, set[str]] = {title: set() for title in views.values()}
    for obj in saved:
        if obj["type"] in {"search", "lens"}:
            owners[views[_view_of(obj)]] |= _fields_used(obj)
    return owners


def test_file_is_ndjson_of_saved_objects() -> None:
    """Every line is one JSON object with type, id and attributes; the file ends with a newline."""
    text = COMMITTED.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines, "no saved objects"
    for number, line in enumerate(lines, start=1):
        obj = json.loads(line)
        assert isinstance(obj, dict), f"line {number} is not an object"
        assert isinstance(obj.get("type"), str), f"line {number} has no type"
        assert isinstance(obj.get("id"), str), f"line {number} has no id"
        assert isinstance(obj.get("attributes"), dict), f"line {number} has no attributes"
        assert isinstance(obj.get("references"), list), f"line {number} has no references"


def test_ids_are_unique_and_uuid_shaped(saved: list[dict[str, Any]]) -> None:
    """No two objects share an id, and every id is a canonical UUID string."""
    ids = [obj["id"] for obj in saved]
    assert len(ids) == len(set(ids))
    for id_ in ids:
        assert str(uuid.UUID(id_)) == id_


def test_every_reference_resolves_to_an_object_of_its_type(saved: list[dict[str, Any]]) -> None:
    """Each references[] entry names an object in the file whose type matches the reference."""
    by_id = _by_id(saved)
    for obj in saved:
        names = [ref["name"] for ref in obj["references"]]
        assert len(names) == len(set(names)), f"{obj['id']} repeats a reference name"
        for ref in obj["references"]:
            assert ref["id"] in by_id, f"{obj['id']} references missing {ref['id']}"
            assert by_id[ref["id"]]["type"] == ref["type"], f"{obj['id']}: {ref} has the wrong type"


def test_saved_searches_read_their_data_view_through_index_ref_name(
    saved: list[dict[str, Any]],
) -> None:
    """A search's searchSourceJSON names, by indexRefName, a reference to a data view."""
    searches = _of_type(saved, "search")
    assert len(searches) == 3
    for search in searches:
        source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        assert "index" not in source, "the data view id belongs in references"
        assert _reference(search, source["indexRefName"])["type"] == "index-pattern"


def test_every_lens_layer_has_a_data_view_reference(saved: list[dict[str, Any]]) -> None:
    """Each Lens layer is bound to a data view by an indexpattern-datasource-layer reference."""
    lenses = _of_type(saved, "lens")
    assert lenses
    for lens in lenses:
        for layer_id in _lens_layers(lens):
            ref = _reference(lens, f"indexpattern-datasource-layer-{layer_id}")
            assert ref["type"] == "index-pattern"


def test_dashboard_panels_resolve_through_panel_ref_name(saved: list[dict[str, Any]]) -> None:
    """Every dashboard panel's panelRefName resolves (panelIndex-prefixed) to an object."""
    by_id = _by_id(saved)
    [dashboard] = _of_type(saved, "dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    for panel in panels:
        ref = _reference(dashboard, f"{panel['panelIndex']}:{panel['panelRefName']}")
        assert ref["type"] == panel["type"]
        assert by_id[ref["id"]]["type"] == panel["type"]
        assert panel["gridData"]["i"] == panel["panelIndex"]


def test_dashboard_shows_every_chart_and_saved_search(saved: list[dict[str, Any]]) -> None:
    """The dashboard has one panel per Lens chart and per saved search, and nothing else."""
    [dashboard] = _of_type(saved, "dashboard")
    assert dashboard["attributes"]["title"] == "modelwatch — predictions and drift"
    shown = sorted(ref["id"] for ref in dashboard["references"])
    expected = sorted(obj["id"] for obj in saved if obj["type"] in {"lens", "search"})
    assert shown == expected


def test_dashboard_panels_fit_the_grid_without_overlapping(saved: list[dict[str, Any]]) -> None:
    """Panels lie within Kibana's 48-column grid and no two cover the same cell."""
    [dashboard] = _of_type(saved, "dashboard")
    covered: set[tuple[int, int]] = set()
    for panel in json.loads(dashboard["attributes"]["panelsJSON"]):
        grid = panel["gridData"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 48
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & covered, f"panel {panel['panelIndex']} overlaps another"
        covered |= cells


def test_data_views_cover_both_data_streams_with_timestamp(saved: list[dict[str, Any]]) -> None:
    """There is one data view per data stream pattern, each with @timestamp as its time field."""
    views = _of_type(saved, "index-pattern")
    assert sorted(view["attributes"]["title"] for view in views) == sorted(
        [predictions_stream("*"), drift_stream("*")]
    )
    for view in views:
        assert view["attributes"]["timeFieldName"] == "@timestamp"


def test_fields_used_are_mapped_with_a_fitting_type(saved: list[dict[str, Any]]) -> None:
    """Fields in queries, columns and charts are in the setup mappings, typed for their use."""
    mappings = {
        predictions_stream("*"): _mapped_types(ECS_COMPONENT, PREDICTIONS_COMPONENT),
        drift_stream("*"): _mapped_types(ECS_COMPONENT, DRIFT_COMPONENT),
    }
    for title, fields in _field_owners(saved).items():
        missing = fields - set(mappings[title])
        assert not missing, f"{title}: fields not in the mappings: {sorted(missing)}"
    views = {obj["id"]: obj["attributes"]["title"] for obj in _of_type(saved, "index-pattern")}
    for lens in _of_type(saved, "lens"):
        types = mappings[views[_view_of(lens)]]
        for column in _lens_columns(lens):
            operation, field = column["operationType"], column["sourceField"]
            if operation == "date_histogram":
                assert types[field] == "date"
            elif operation == "terms":
                assert types[field] == "keyword", f"terms on {field}"
            elif operation in {"percentile", "max", "average", "median"}:
                assert types[field] in _NUMERIC, f"{operation} of {field}"


def test_fields_used_appear_in_built_documents(saved: list[dict[str, Any]]) -> None:
    """The document builder emits every field the saved objects query or chart."""
    builder = DocumentBuilder()
    event = {
        "id": "ev-1",
        "timestamp": "2026-11-25T09:00:00.123Z",
        "latency_seconds": 0.3,
        "status": "error",
        "features": {"x": 1.0},
        "prediction": 1,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    [prediction] = builder.predictions("m", "1", [event])
    feature = FeatureDrift("x", "numeric", 500, 0.2, "ks", 0.3, 0.001, 0.002, True, 0.01)
    snapshot = DriftSnapshot("m", "1", 0.0, 600.0, 500, "bonferroni", 0.05, (feature,), None)
    feature_doc = builder.drift(snapshot, 1_700_000_000.0)[0]
    emitted = {
        predictions_stream("*"): _flatten(prediction.source),
        drift_stream("*"): _flatten(feature_doc.source),
    }
    for title, fields in _field_owners(saved).items():
        missing = fields - emitted[title]
        assert not missing, f"{title}: documents lack {sorted(missing)}"


def test_slow_search_threshold_is_250_ms_in_nanoseconds(saved: list[dict[str, Any]]) -> None:
    """The slow-predictions search compares event.duration (ns) with 250 ms."""
    [slow] = [obj for obj in _of_type(saved, "search") if "slow" in obj["attributes"]["title"]]
    source = json.loads(slow["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["query"] == f"event.duration > {250 * 1_000_000}"


def test_generator_reproduces_committed_file(tmp_path: Path) -> None:
    """Running the generator writes exactly the committed bytes (regenerate after changes)."""
    output = tmp_path / "modelwatch.ndjson"
    assert generate.main(["--output", str(output)]) == 0
    assert output.read_bytes() == COMMITTED.read_bytes()


def test_check_flags_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check exits 1 for a file that differs from the generator's output, 0 once regenerated."""
    output = tmp_path / "modelwatch.ndjson"
    output.write_bytes(COMMITTED.read_bytes().replace(b"now-24h", b"now-7d"))
    assert generate.main(["--check", "--output", str(output)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert generate.main(["--output", str(output)]) == 0
    assert generate.main(["--check", "--output", str(output)]) == 0
