"""The model server's HTTP API, driven in-process through its ASGI app with its lifespan running."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.app import ServableModel, create_app
from serving.errors import ModelLoadError, PredictionError
from serving.feedback import FeedbackForwarder
from serving.metadata import ModelMetadata
from serving.model import Inputs, OnnxModel, Outputs
from serving.settings import ServingSettings
from sidecar._listen import QuietServer
from tests.support.onnx_models import (
    build_classifier,
    build_regressor,
    regressor_coefficients,
)
from tests.support.tools import promtool_check_metrics

PREDICT = "/v1/models/tumour:predict"
ROW = {"mean_radius": 20.0, "mean_texture": 10.0, "size_class": "large"}
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DEADLINE = 10.0
TOKEN = "s3cret"  # noqa: S105 - a test token


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelMetadata]:
    directory = tmp_path_factory.mktemp("classifier")
    return directory, build_classifier(directory)


@pytest.fixture(scope="module")
def regressor(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelMetadata]:
    directory = tmp_path_factory.mktemp("regressor")
    return directory, build_regressor(directory)


@dataclass
class RecordingLog:
    """A prediction log that keeps every event in memory."""

    events: list[dict[str, Any]] = field(default_factory=list)
    started: bool = False
    closed: bool = False

    def start(self) -> None:
        self.started = True

    def log(self, **event: Any) -> str | None:
        self.events.append(event)
        return str(event.get("event_id"))

    def log_many(
        self,
        *,
        features: Sequence[Mapping[str, Any]],
        predictions: Sequence[Any],
        event_ids: Sequence[str] | None = None,
        scores: Sequence[Mapping[str, float] | None] | None = None,
        **shared: Any,
    ) -> list[str | None]:
        """Record one event per row, as the real logger's ``log_many`` queues them."""
        ids: list[str | None] = [None] * len(features) if event_ids is None else [*event_ids]
        for i, row in enumerate(features):
            event = {"features": row, "prediction": predictions[i], "event_id": ids[i], **shared}
            if scores is not None:
                event["scores"] = scores[i]
            self.events.append(event)
        return ids

    async def aclose(self, timeout: float = 5.0) -> None:
        self.closed = True


class ScriptedModel:
    """Wraps a real model: counts calls and fails any call holding a row with mean_radius 666."""

    provider = "TestProvider"

    def __init__(self, inner: ServableModel) -> None:
        self.inner = inner
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def predict(self, inputs: Inputs) -> Outputs:
        with self.lock:
            self.calls.append(len(inputs["mean_radius"]))
        if np.any(inputs["mean_radius"] == 666):
            raise PredictionError("radius 666 is cursed")
        return self.inner.predict(inputs)


@dataclass
class Harness:
    client: httpx.AsyncClient
    log: RecordingLog
    registry: CollectorRegistry
    sidecar_requests: list[httpx.Request]

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def _sidecar_ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"joined": 1, "unmatched": 0, "rejected": []})


@asynccontextmanager
async def serving(
    model_dir: Path,
    metadata: ModelMetadata,
    *,
    wrap: Callable[[OnnxModel], ServableModel] = lambda m: m,
    wait_ready: bool = True,
    sidecar: Callable[[httpx.Request], httpx.Response] = _sidecar_ok,
    load_gate: threading.Event | None = None,
    on_load_failed: Callable[[BaseException], None] | None = None,
    load_model: Callable[[], ServableModel] | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    settings = replace(ServingSettings(model_uri=model_dir, ingest_token=TOKEN), **overrides)
    log = RecordingLog()
    registry = CollectorRegistry()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sidecar(request)

    def load() -> ServableModel:
        if load_gate is not None:
            load_gate.wait(DEADLINE)
        return wrap(OnnxModel.load(model_dir / "model.onnx", metadata))

    forwarder = FeedbackForwarder(
        "http://sidecar",
        model=metadata.name,
        version=metadata.version,
        token=settings.ingest_token,
        timeout=settings.feedback_timeout_seconds,
        transport=httpx.MockTransport(handler),
    )
    app = create_app(
        settings,
        metadata,
        load_model=load_model or load,
        prediction_log=log,
        registry=registry,
        logger=structlog.get_logger(),
        feedback=forwarder,
        on_load_failed=on_load_failed,
        process_metrics=False,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://serving") as client,
    ):
        harness = Harness(client, log, registry, seen)
        if wait_ready:
            await _until(lambda: _ready(client))
        yield harness


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _until(condition: Callable[[], Any]) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met before the deadline")


# --------------------------------------------------------------------------- health


@pytest.mark.anyio
async def test_readyz_is_503_until_the_model_has_loaded(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """/healthz answers while the model loads, /readyz and predict say 503 until it is loaded."""
    gate = threading.Event()
    async with serving(*classifier, wait_ready=False, load_gate=gate) as h:
        assert (await h.client.get("/healthz")).status_code == 200
        before = await h.client.get("/readyz")
        assert before.status_code == 503
        assert before.json() == {"ready": False, "status": "loading"}
        early = await h.client.post(PREDICT, json={"instances": [ROW]})
        assert early.status_code == 503
        assert "not ready" in early.json()["error"]
        assert h.sample("modelwatch_serving_model_ready", model="tumour", version="3") == 0
        gate.set()
        await _until(lambda: _ready(h.client))
        assert (await h.client.get("/readyz")).json() == {"ready": True, "status": "ready"}
        assert h.sample("modelwatch_serving_model_ready", model="tumour", version="3") == 1
        info = {"model": "tumour", "version": "3", "provider": "CPUExecutionProvider"}
        assert h.sample("modelwatch_serving_model_info", **info) == 1


@pytest.mark.anyio
async def test_a_model_that_fails_to_load_reports_failure(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """A loader error calls on_load_failed with it and /readyz stays 503 with status failed."""
    failures: list[BaseException] = []

    def broken() -> ServableModel:
        raise ModelLoadError("model", "truncated file")

    async with serving(
        *classifier, wait_ready=False, load_model=broken, on_load_failed=failures.append
    ) as h:
        await _until(lambda: _async(bool(failures)))
        answer = await h.client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "failed"
    assert isinstance(failures[0], ModelLoadError)


async def _async(value: bool) -> bool:
    return value


@pytest.mark.anyio
async def test_lifespan_starts_and_closes_the_prediction_log(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """The prediction log is started with the app and closed when it stops."""
    async with serving(*classifier) as h:
        assert h.log.started
        assert not h.log.closed
    assert h.log.closed


# --------------------------------------------------------------------------- predict


@pytest.mark.anyio
async def test_predict_answers_labels_scores_and_ids(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Object rows get the class label, a score per class summing to 1, and one id each."""
    small = {**ROW, "mean_radius": 5.0, "size_class": "small"}
    async with serving(*classifier) as h:
        answer = await h.client.post(PREDICT, json={"instances": [ROW, small]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["predictions"] == [1, 0]
    assert [set(s) for s in body["scores"]] == [{"0", "1"}, {"0", "1"}]
    for scores, label in zip(body["scores"], body["predictions"], strict=True):
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert max(scores, key=scores.__getitem__) == str(label)
    assert len(set(body["ids"])) == 2


@pytest.mark.anyio
async def test_list_rows_in_feature_order_equal_object_rows(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """A row as a list in metadata order scores exactly like the same row as an object."""
    async with serving(*classifier) as h:
        as_object = (await h.client.post(PREDICT, json={"instances": [ROW]})).json()
        as_list = (await h.client.post(PREDICT, json={"instances": [[20.0, 10.0, "large"]]})).json()
    assert as_list["predictions"] == as_object["predictions"]
    assert as_list["scores"] == as_object["scores"]


@pytest.mark.anyio
async def test_categorical_feature_reaches_the_model(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Changing only the categorical (string) feature changes the scores."""
    rows = [{**ROW, "mean_radius": 13.0, "size_class": c} for c in ("small", "large")]
    async with serving(*classifier) as h:
        body = (await h.client.post(PREDICT, json={"instances": rows})).json()
    assert body["scores"][1]["1"] > body["scores"][0]["1"] + 0.1


@pytest.mark.anyio
async def test_an_unseen_category_is_accepted_and_scored(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """A category the encoder never saw is scored (the one-hot encoder ignores it), not refused."""
    rows = [{**ROW, "size_class": "enormous"}]
    async with serving(*classifier) as h:
        answer = await h.client.post(PREDICT, json={"instances": rows})
        events = list(h.log.events)
    assert answer.status_code == 200
    assert all(v is not None for v in answer.json()["scores"][0].values())
    assert events[0]["features"]["size_class"] == "enormous"


@pytest.mark.anyio
async def test_regressor_predicts_its_linear_function(
    regressor: tuple[Path, ModelMetadata],
) -> None:
    """A regressor whose features share one ONNX input answers x·w + b, with no scores."""
    rows = [[1.0, 2.0, 3.0], {"rooms": 4, "area": 50.5, "age": 0}]
    weights, bias = regressor_coefficients()
    expected = np.array([[1.0, 2.0, 3.0], [4.0, 50.5, 0.0]]) @ weights + bias
    async with serving(*regressor) as h:
        answer = await h.client.post("/v1/models/house-price:predict", json={"instances": rows})
    body = answer.json()
    assert answer.status_code == 200
    assert "scores" not in body
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-4)


@pytest.mark.anyio
async def test_every_instance_is_logged_with_its_context(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Each instance goes to the prediction log with features, label, scores, id, trace id."""
    headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    rows = [ROW, [5.0, 3.0, "small"]]
    async with serving(*classifier) as h:
        body = (await h.client.post(PREDICT, json={"instances": rows}, headers=headers)).json()
        events = list(h.log.events)
    assert [e["event_id"] for e in events] == body["ids"]
    assert [e["prediction"] for e in events] == body["predictions"]
    assert [e["scores"] for e in events] == body["scores"]
    assert events[0]["features"] == ROW
    assert events[1]["features"] == {"mean_radius": 5.0, "mean_texture": 3.0, "size_class": "small"}
    assert {e["trace_id"] for e in events} == {TRACE}
    assert {e.get("status", "ok") for e in events} == {"ok"}
    assert events[0]["latency_seconds"] == events[1]["latency_seconds"] > 0


@pytest.mark.anyio
async def test_response_headers_carry_model_and_request_id(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Answers name the model, its version and the request id; a given X-Request-ID is kept."""
    async with serving(*classifier) as h:
        given = await h.client.post(
            PREDICT, json={"instances": [ROW]}, headers={"X-Request-ID": "req-42"}
        )
        minted = await h.client.get("/healthz")
        error = await h.client.post(PREDICT, content=b"{")
        events = list(h.log.events)
    assert given.headers["x-model-name"] == "tumour"
    assert given.headers["x-model-version"] == "3"
    assert given.headers["x-request-id"] == "req-42"
    assert events[0]["trace_id"] == "req-42"  # no traceparent: the request id is the trace id
    assert len(minted.headers["x-request-id"]) == 32
    assert error.headers["x-model-version"] == "3"


@pytest.mark.anyio
async def test_request_id_reaches_every_logged_event_beside_the_trace_id(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Beside a traceparent, the X-Request-ID reaches each event as ``attributes.request_id``."""
    headers = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "X-Request-ID": "req-7"}
    async with serving(*classifier) as h:
        ok = await h.client.post(PREDICT, json={"instances": [ROW, ROW]}, headers=headers)
        events = list(h.log.events)
    assert ok.status_code == 200
    assert [e["attributes"] for e in events] == [{"request_id": "req-7"}] * 2
    assert {e["trace_id"] for e in events} == {TRACE}


@pytest.mark.anyio
async def test_a_failed_request_logs_its_request_id(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Events of a request the model failed carry the request id beside the error."""
    async with serving(*classifier, wrap=ScriptedModel) as h:
        answer = await h.client.post(
            PREDICT,
            json={"instances": [{**ROW, "mean_radius": 666.0}]},
            headers={"X-Request-ID": "req-8"},
        )
        events = list(h.log.events)
    assert answer.status_code == 500
    assert events[0]["attributes"]["request_id"] == "req-8"
    assert "cursed" in events[0]["attributes"]["error"]


# --------------------------------------------------------------------------- bad requests

TOO_MANY = {"instances": [ROW] * 11}
BAD_REQUESTS: list[tuple[str, bytes | dict[str, Any], int, str, str]] = [
    ("not json", b"{nope", 400, "invalid_json", ""),
    ("empty body", b"", 400, "invalid_json", ""),
    ("array body", b"[1, 2]", 400, "invalid_body", ""),
    ("no instances", {"rows": []}, 400, "unknown_field", "rows"),
    ("missing instances", {}, 400, "missing_field", "instances"),
    ("instances not a list", {"instances": {"a": 1}}, 422, "invalid_type", "instances"),
    ("no rows", {"instances": []}, 422, "invalid_value", "instances"),
    ("too many rows", TOO_MANY, 413, "too_many_instances", "instances"),
    ("scalar row", {"instances": [ROW, 3]}, 422, "wrong_shape", "instances[1]"),
    ("short list row", {"instances": [[1.0, "large"]]}, 422, "wrong_shape", "instances[0]"),
    (
        "missing feature",
        {"instances": [ROW, ROW, ROW, {"mean_radius": 1.0, "size_class": "large"}]},
        422,
        "missing_feature",
        "instances[3].mean_texture",
    ),
    (
        "unknown feature",
        {"instances": [{**ROW, "colour": "red"}]},
        422,
        "unknown_feature",
        "instances[0].colour",
    ),
    (
        "string for number",
        {"instances": [ROW, ROW, ROW, {**ROW, "mean_radius": "14.1"}]},
        422,
        "invalid_type",
        "instances[3].mean_radius",
    ),
    (
        "boolean for number",
        {"instances": [{**ROW, "mean_texture": True}]},
        422,
        "invalid_type",
        "instances[0].mean_texture",
    ),
    (
        "null for a non-nullable number",
        {"instances": [{**ROW, "mean_radius": None}]},
        422,
        "null_value",
        "instances[0].mean_radius",
    ),
    (
        "number too large for float32",
        {"instances": [{**ROW, "mean_radius": 1e300}]},
        422,
        "out_of_range",
        "instances[0].mean_radius",
    ),
    (
        "number for category",
        {"instances": [{**ROW, "size_class": 2}]},
        422,
        "invalid_type",
        "instances[0].size_class",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "status", "reason", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
async def test_bad_requests_get_a_4xx_naming_the_field(
    classifier: tuple[Path, ModelMetadata],
    body: bytes | dict[str, Any],
    status: int,
    reason: str,
    field: str,
) -> None:
    """Each kind of bad input gets its 4xx, a stable reason, the field, and reaches no model."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    async with serving(*classifier, max_instances=10) as h:
        answer = await h.client.post(PREDICT, content=content)
        logged = len(h.log.events)
    assert answer.status_code == status
    error = answer.json()
    assert error["reason"] == reason
    assert error["field"] == field
    assert error["error"].startswith(field)
    assert logged == 0


@pytest.mark.anyio
async def test_type_error_message_reads_like_the_contract(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """A wrong type is reported as '<path>: expected a number, got string'."""
    rows = [ROW, ROW, ROW, {**ROW, "mean_radius": "big"}]
    async with serving(*classifier) as h:
        answer = await h.client.post(PREDICT, json={"instances": rows})
    assert answer.json()["error"] == "instances[3].mean_radius: expected a number, got string"


@pytest.mark.anyio
async def test_wrong_model_name_is_404_naming_the_model(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Predict, metadata and feedback for another model name are 404 naming the served one."""
    async with serving(*classifier) as h:
        answers = [
            await h.client.post("/v1/models/other:predict", json={"instances": [ROW]}),
            await h.client.get("/v1/models/other"),
            await h.client.post("/v1/models/other:feedback", json={"labels": []}),
        ]
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json()["field"] == "name"
        assert "'tumour'" in answer.json()["error"]


@pytest.mark.anyio
async def test_oversized_body_is_413(classifier: tuple[Path, ModelMetadata]) -> None:
    """A body over max_body_bytes is refused with 413 before it is parsed."""
    async with serving(*classifier, max_body_bytes=2048) as h:
        answer = await h.client.post(PREDICT, content=b" " * 4096)
    assert answer.status_code == 413
    assert answer.json()["reason"] == "body_too_large"


@pytest.mark.anyio
async def test_chunked_body_over_the_limit_is_413_without_reading_it_all(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """A body with no Content-Length is refused at the chunk that passes max_body_bytes."""
    chunk = b" " * 1024
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1_000):  # 1 MiB offered; a server reading it all would take every chunk
            sent.append(len(chunk))
            yield chunk

    async with serving(*classifier, max_body_bytes=4096) as h:
        answer = await h.client.post(PREDICT, content=endless())
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    assert answer.json()["reason"] == "body_too_large"
    assert sum(sent) <= 4096 + len(chunk)


@pytest.mark.anyio
async def test_chunked_body_within_the_limit_is_read_whole(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """A body in several chunks with no Content-Length is joined and scored."""
    body = orjson.dumps({"instances": [ROW] * 3})

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    async with serving(*classifier) as h:
        answer = await h.client.post(PREDICT, content=pieces())
    assert answer.status_code == 200
    assert answer.json()["predictions"] == [1, 1, 1]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/models/tumour:predict", "POST"),
        ("GET", "/v1/models/tumour:feedback", "POST"),
        ("DELETE", "/v1/models/tumour", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
    ],
)
async def test_wrong_method_on_a_known_route_is_a_json_405(
    classifier: tuple[Path, ModelMetadata], method: str, path: str, allow: str
) -> None:
    """A wrong method on a known route is 405 with Allow, not a 404 for an odd model name."""
    async with serving(*classifier) as h:
        answer = await h.client.request(method, path)
    assert answer.status_code == 405
    assert set(answer.headers["allow"].split(", ")) == set(allow.split(", "))
    assert answer.json()["reason"] == "method_not_allowed"


@pytest.mark.anyio
async def test_unknown_path_is_a_json_404(classifier: tuple[Path, ModelMetadata]) -> None:
    """An unknown path gets a JSON 404 and is counted under the bounded 'unmatched' route."""
    async with serving(*classifier) as h:
        answer = await h.client.get("/v2/whatever/123")
        count = h.sample(
            "modelwatch_serving_request_duration_seconds_count",
            model="tumour",
            version="3",
            route="unmatched",
            method="GET",
            code="404",
        )
    assert answer.status_code == 404
    assert answer.json()["reason"] == "not_found"
    assert count == 1


# --------------------------------------------------------------------------- batching


@pytest.mark.anyio
async def test_concurrent_requests_share_one_model_call(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Eight concurrent one-row requests with max_batch_size 8 become a single model call."""
    scripted: list[ScriptedModel] = []

    def wrap(model: OnnxModel) -> ServableModel:
        scripted.append(ScriptedModel(model))
        return scripted[0]

    async with serving(*classifier, wrap=wrap, max_batch_size=8, max_wait_ms=1000.0) as h:
        rows = [{**ROW, "mean_radius": float(r)} for r in range(8)]
        answers = await asyncio.gather(
            *(h.client.post(PREDICT, json={"instances": [row]}) for row in rows)
        )
        batches = h.sample("modelwatch_serving_batch_size_count", model="tumour", version="3")
        rows_scored = h.sample("modelwatch_serving_batch_size_sum", model="tumour", version="3")
    assert [a.status_code for a in answers] == [200] * 8
    assert scripted[0].calls == [8]
    assert (batches, rows_scored) == (1, 8)
    single = await _single_scores(classifier, rows)
    for answer, expected in zip(answers, single, strict=True):
        assert answer.json()["scores"][0] == pytest.approx(expected, abs=1e-6)


async def _single_scores(
    classifier: tuple[Path, ModelMetadata], rows: list[dict[str, Any]]
) -> list[dict[str, float]]:
    async with serving(*classifier, max_batch_size=1) as h:
        return [
            (await h.client.post(PREDICT, json={"instances": [row]})).json()["scores"][0]
            for row in rows
        ]


@pytest.mark.anyio
async def test_a_failing_request_does_not_fail_its_batch(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """In a batch with one request the model rejects, only that one fails (500) and is logged."""
    async with serving(*classifier, wrap=ScriptedModel, max_batch_size=4, max_wait_ms=1000.0) as h:
        rows = [{**ROW, "mean_radius": r} for r in (10.0, 666.0, 12.0, 13.0)]
        answers = await asyncio.gather(
            *(h.client.post(PREDICT, json={"instances": [row]}) for row in rows)
        )
        events = list(h.log.events)
        errors = h.sample(
            "modelwatch_serving_predictions_total", model="tumour", version="3", status="error"
        )
        oks = h.sample(
            "modelwatch_serving_predictions_total", model="tumour", version="3", status="ok"
        )
    assert [a.status_code for a in answers] == [200, 500, 200, 200]
    failure = answers[1].json()
    assert failure["reason"] == "model_error"
    assert "radius 666 is cursed" in failure["error"]
    failed = [e for e in events if e.get("status", "ok") == "error"]
    assert len(failed) == 1
    assert failed[0]["features"]["mean_radius"] == 666.0
    assert failed[0]["prediction"] is None
    assert "cursed" in failed[0]["attributes"]["error"]
    assert (errors, oks) == (1, 3)


class NonFiniteScores:
    """Wraps a real model: any row with mean_radius 777 gets NaN scores, as an overflow would."""

    provider = "TestProvider"

    def __init__(self, inner: ServableModel) -> None:
        self.inner = inner
        self.calls = 0

    def predict(self, inputs: Inputs) -> Outputs:
        self.calls += 1
        outputs = self.inner.predict(inputs)
        assert outputs.scores is not None
        scores = outputs.scores.copy()
        scores[inputs["mean_radius"][:, 0] == 777] = np.nan
        return Outputs(outputs.predictions, scores)


@pytest.mark.anyio
async def test_an_overflowing_row_is_422_naming_the_instance(
    regressor: tuple[Path, ModelMetadata],
) -> None:
    """Features at float32's limit overflow the regressor: 422 naming the row, logged as error."""
    rows = [[1.0, 2.0, 3.0], [3.4e38, 3.4e38, 3.4e38]]
    async with serving(*regressor) as h:
        answer = await h.client.post("/v1/models/house-price:predict", json={"instances": rows})
        events = list(h.log.events)
        errors = h.sample(
            "modelwatch_serving_predictions_total",
            model="house-price",
            version="1",
            status="error",
        )
    body = answer.json()
    assert answer.status_code == 422
    assert (body["reason"], body["field"]) == ("non_finite_output", "instances[1]")
    assert "prediction" in body["error"]
    assert [e["status"] for e in events] == ["error", "error"]
    assert [e["prediction"] for e in events] == [None, None]
    assert events[0]["attributes"]["error"].startswith("instances[1]: ")
    assert errors == 2


@pytest.mark.anyio
async def test_non_finite_scores_fail_only_their_request_in_a_batch(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """NaN scores for one request of a batch make it 422; the others in the call get 200."""
    wrapped: list[NonFiniteScores] = []

    def wrap(model: OnnxModel) -> ServableModel:
        wrapped.append(NonFiniteScores(model))
        return wrapped[0]

    async with serving(*classifier, wrap=wrap, max_batch_size=3, max_wait_ms=1000.0) as h:
        rows = [{**ROW, "mean_radius": r} for r in (10.0, 777.0, 12.0)]
        answers = await asyncio.gather(
            *(h.client.post(PREDICT, json={"instances": [row]}) for row in rows)
        )
        events = list(h.log.events)
    assert wrapped[0].calls == 1
    assert [a.status_code for a in answers] == [200, 422, 200]
    assert answers[1].json()["field"] == "instances[0]"
    assert "scores" in answers[1].json()["error"]
    assert all(
        v is not None for a in (answers[0], answers[2]) for v in a.json()["scores"][0].values()
    )
    statuses = sorted((e["features"]["mean_radius"], e.get("status", "ok")) for e in events)
    assert statuses == [(10.0, "ok"), (12.0, "ok"), (777.0, "error")]


# --------------------------------------------------------------------------- metadata, metrics


@pytest.mark.anyio
async def test_model_metadata_route(classifier: tuple[Path, ModelMetadata]) -> None:
    """GET /v1/models/{name} shows the metadata, readiness and provider."""
    async with serving(*classifier) as h:
        body = (await h.client.get("/v1/models/tumour")).json()
        listing = (await h.client.get("/v1/models")).json()
    assert body["name"] == "tumour"
    assert body["version"] == "3"
    assert body["ready"] is True
    assert body["provider"] == "CPUExecutionProvider"
    assert [f["name"] for f in body["features"]] == ["mean_radius", "mean_texture", "size_class"]
    assert body["classes"] == [0, 1]
    assert listing == {"models": ["tumour"]}


@pytest.mark.anyio
async def test_metrics_pass_promtool_and_count_requests(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """/metrics passes promtool, labels requests by route template, and counts predictions."""
    async with serving(*classifier) as h:
        await h.client.post(PREDICT, json={"instances": [ROW, ROW]})
        await h.client.post(PREDICT, content=b"{")
        exposition = (await h.client.get("/metrics")).text
        ok = h.sample(
            "modelwatch_serving_request_duration_seconds_count",
            model="tumour",
            version="3",
            route="/v1/models/{name}:predict",
            method="POST",
            code="200",
        )
        bad = h.sample(
            "modelwatch_serving_request_duration_seconds_count",
            model="tumour",
            version="3",
            route="/v1/models/{name}:predict",
            method="POST",
            code="400",
        )
        predictions = h.sample(
            "modelwatch_serving_predictions_total", model="tumour", version="3", status="ok"
        )
        in_flight = h.sample("modelwatch_serving_requests_in_flight", model="tumour", version="3")
    check = promtool_check_metrics(exposition)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (ok, bad, predictions) == (1, 1, 2)
    # The scrape sees itself in flight; once it is answered nothing is.
    assert 'modelwatch_serving_requests_in_flight{model="tumour",version="3"} 1.0' in exposition
    assert in_flight == 0
    assert 'route="/v1/models/tumour:predict"' not in exposition


# --------------------------------------------------------------------------- feedback

FEEDBACK = "/v1/models/tumour:feedback"


@pytest.mark.anyio
async def test_feedback_is_forwarded_to_the_sidecar(
    classifier: tuple[Path, ModelMetadata],
) -> None:
    """Labels go to the sidecar's /v1/feedback with model, version and token; its answer returns."""
    labels = [{"id": "abc", "label": 1}, {"id": "def", "label": 0}]
    async with serving(*classifier) as h:
        answer = await h.client.post(FEEDBACK, json={"labels": labels})
        forwarded = h.sample(
            "modelwatch_serving_feedback_labels_total",
            model="tumour",
            version="3",
            outcome="forwarded",
        )
    assert answer.status_code == 202
    assert answer.json() == {"joined": 1, "unmatched": 0, "rejected": []}
    (request,) = h.sidecar_requests
    assert request.url.path == "/v1/feedback"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert orjson.loads(request.content) == {"model": "tumour", "version": "3", "labels": labels}
    assert forwarded == 2


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def _fail(request: httpx.Request) -> httpx.Response:
    error = {"status": 401, "reason": "unauthorised", "field": "Authorization", "message": "bad"}
    return httpx.Response(401, json={"error": error})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("sidecar", "status", "words"),
    [
        pytest.param(_refuse, 503, "unreachable", id="down"),
        pytest.param(_time_out, 503, "did not answer within", id="slow"),
        pytest.param(_fail, 502, "answered 401: Authorization: bad", id="error"),
    ],
)
async def test_sidecar_failures_become_502_or_503(
    classifier: tuple[Path, ModelMetadata],
    sidecar: Callable[[httpx.Request], httpx.Response],
    status: int,
    words: str,
) -> None:
    """A sidecar that is down, slow or failing gives 503/502 with the reason, and is counted."""
    async with serving(*classifier, sidecar=sidecar) as h:
        answer = await h.client.post(FEEDBACK, json={"labels": [{"id": "a", "label": 1}]})
        failed = h.sample(
            "modelwatch_serving_feedback_labels_total",
            model="tumour",
            version="3",
            outcome="failed",
        )
    assert answer.status_code == status
    assert words in answer.json()["error"]
    assert failed == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"labels": []}, "labels", id="empty"),
        pytest.param({"labels": [{"label": 1}]}, "labels[0].id", id="no id"),
        pytest.param({"labels": [{"id": "a"}]}, "labels[0].label", id="no label"),
        pytest.param({"labels": ["a"]}, "labels[0]", id="not an object"),
    ],
)
async def test_bad_feedback_is_a_4xx_and_never_forwarded(
    classifier: tuple[Path, ModelMetadata], body: Mapping[str, Any], field: str
) -> None:
    """A malformed feedback body is refused locally, naming the field."""
    async with serving(*classifier) as h:
        answer = await h.client.post(FEEDBACK, json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == field
    assert h.sidecar_requests == []


# --------------------------------------------------------------------------- feedback over a socket


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short private folder for a socket: a socket path holds at most 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="mw-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def unix_sidecar(path: Path, seen: list[Request]) -> AsyncIterator[None]:
    """A real HTTP server on the Unix socket ``path`` answering ``POST /v1/feedback`` with 202."""

    async def feedback(request: Request) -> Response:
        await request.body()
        seen.append(request)
        return JSONResponse({"joined": 2, "unmatched": 0, "rejected": []}, status_code=202)

    app = Starlette(routes=[Route("/v1/feedback", feedback, methods=["POST"])])
    config = uvicorn.Config(app, uds=str(path), lifespan="off", log_config=None, ws="none")
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # raises what stopped the server
        return server.started

    try:
        await _until(started)
        yield
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def serving_with_sidecar_url(
    classifier: tuple[Path, ModelMetadata], url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its feedback forwarder built from ``MODELWATCH_SIDECAR_URL`` (no stand-in)."""
    model_dir, metadata = classifier
    settings = ServingSettings.from_environ(
        {
            "MODELWATCH_MODEL_URI": str(model_dir),
            "MODELWATCH_SIDECAR_URL": url,
            "MODELWATCH_INGEST_TOKEN": TOKEN,
            "MODELWATCH_FEEDBACK_TIMEOUT_SECONDS": "5",
        }
    )
    app = create_app(
        settings,
        metadata,
        load_model=lambda: OnnxModel.load(model_dir / "model.onnx", metadata),
        prediction_log=RecordingLog(),
        registry=CollectorRegistry(),
        logger=structlog.get_logger(),
        process_metrics=False,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://serving") as client,
    ):
        await _until(lambda: _ready(client))
        yield client


@pytest.mark.anyio
async def test_feedback_reaches_a_sidecar_on_a_unix_socket(
    classifier: tuple[Path, ModelMetadata], socket_dir: Path
) -> None:
    """With a unix:// sidecar URL, labels travel over that socket with the token, Host localhost."""
    path = socket_dir / "ingest.sock"
    seen: list[Request] = []
    labels = [{"id": "abc", "label": 1}, {"id": "def", "label": 0}]
    async with (
        unix_sidecar(path, seen),
        serving_with_sidecar_url(classifier, f"unix://{path}") as client,
    ):
        answer = await client.post(FEEDBACK, json={"labels": labels})
    assert answer.status_code == 202
    assert answer.json() == {"joined": 2, "unmatched": 0, "rejected": []}
    (request,) = seen
    assert request.url.path == "/v1/feedback"
    assert request.headers["host"] == "localhost"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert orjson.loads(await request.body()) == {
        "model": "tumour",
        "version": "3",
        "labels": labels,
    }


@pytest.mark.anyio
async def test_a_missing_sidecar_socket_is_503_naming_the_socket(
    classifier: tuple[Path, ModelMetadata], socket_dir: Path
) -> None:
    """No socket file at the unix:// URL (sidecar not up yet): 503 naming the configured URL."""
    url = f"unix://{socket_dir / 'ingest.sock'}"
    async with serving_with_sidecar_url(classifier, url) as client:
        answer = await client.post(FEEDBACK, json={"labels": [{"id": "a", "label": 1}]})
    assert answer.status_code == 503
    assert f"the sidecar at {url} is unreachable" in answer.json()["error"]
