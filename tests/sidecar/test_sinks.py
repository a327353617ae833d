"""Sinks: the NDJSON file sink (rotation, retention, disk errors) and the Elasticsearch sink."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from elasticsearch import Elasticsearch

from sidecar.documents import Document, DocumentBuilder
from sidecar.es_settings import EsSettings, build_client
from sidecar.sinks import ElasticsearchSink, ItemResult, NdjsonFileSink, Outcome
from sidecar.snapshot import DriftSnapshot
from tests.support.es_server import EsServer, es_server_fixture

BUILDER = DocumentBuilder()


def _events(n: int, *, start: int = 0, **changes: Any) -> list[dict[str, Any]]:
    events = []
    for i in range(start, start + n):
        event: dict[str, Any] = {
            "id": f"ev-{i}",
            "timestamp": "2026-11-25T09:00:00.123Z",
            "latency_seconds": 0.004,
            "status": "ok",
            "features": {"mean_radius": 14.0 + i, "size_class": "large"},
            "prediction": 1,
        }
        event.update(changes)
        events.append(event)
    return events


def _documents(n: int, *, start: int = 0, **changes: Any) -> list[Document]:
    return BUILDER.predictions("breast-cancer", "3", _events(n, start=start, **changes))


class _Clock:
    def __init__(self, now: float = 1_764_061_200.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _files(directory: Path, stem: str = "predictions") -> list[Path]:
    return sorted(directory.glob(f"{stem}-*.ndjson"))


def _ids_in(paths: list[Path]) -> list[str]:
    ids = []
    for path in paths:
        lines = path.read_bytes().splitlines()
        ids.extend(orjson.loads(action)["create"]["_id"] for action in lines[::2])
    return ids


# --------------------------------------------------------------------------- file sink


def test_file_sink_writes_bulk_ready_lines(tmp_path: Path) -> None:
    """Every document is a create action line then its source line, flushed on return."""
    sink = NdjsonFileSink(tmp_path, clock=_Clock())
    documents = _documents(3)
    assert sink.send(documents) == [ItemResult(Outcome.DELIVERED)] * 3
    [path] = _files(tmp_path)
    assert path.name == "predictions-20251125-090000-0.ndjson"
    lines = path.read_bytes().splitlines()
    assert len(lines) == 6
    for document, action, source in zip(documents, lines[::2], lines[1::2], strict=True):
        assert orjson.loads(action) == {"create": {"_index": document.index, "_id": document.id}}
        assert orjson.loads(source) == document.source
    sink.close()


def test_file_sink_keeps_streams_in_separate_files(tmp_path: Path) -> None:
    """Drift documents go to drift-*.ndjson, predictions to predictions-*.ndjson."""
    snapshot = DriftSnapshot("m", "1", 0.0, 60.0, 0, "bonferroni", 0.05, (), None)
    sink = NdjsonFileSink(tmp_path, clock=_Clock())
    sink.send([*_documents(1), *BUILDER.drift(snapshot, 1.0)])
    sink.close()
    assert len(_files(tmp_path, "predictions")) == 1
    assert len(_files(tmp_path, "drift")) == 1


def test_file_sink_rotates_by_bytes_without_splitting_documents(tmp_path: Path) -> None:
    """Past max_file_bytes a new file starts; no file exceeds it and no document is split."""
    one = len(_documents(1)[0].bulk_lines())
    sink = NdjsonFileSink(tmp_path, max_file_bytes=3 * one + 10, max_files=100, clock=_Clock())
    for batch in range(4):
        sink.send(_documents(5, start=batch * 5))
    sink.close()
    paths = _files(tmp_path)
    assert len(paths) == 7  # 20 documents, 3 per file
    assert all(path.stat().st_size <= 3 * one + 10 for path in paths)
    assert sorted(_ids_in(paths)) == sorted(f"ev-{i}" for i in range(20))


def test_file_sink_gives_an_oversized_document_a_file_of_its_own(tmp_path: Path) -> None:
    """A document larger than max_file_bytes is still written, alone in its file."""
    sink = NdjsonFileSink(tmp_path, max_file_bytes=10, clock=_Clock())
    assert sink.send(_documents(2)) == [ItemResult(Outcome.DELIVERED)] * 2
    sink.close()
    assert [len(_ids_in([path])) for path in _files(tmp_path)] == [1, 1]


def test_file_sink_keeps_at_most_max_files_and_counts_deletions(tmp_path: Path) -> None:
    """Only the newest max_files files remain; each deleted one is counted."""
    clock = _Clock()
    sink = NdjsonFileSink(tmp_path, max_file_bytes=1, max_files=3, clock=clock)
    for i in range(8):
        clock.now += 1
        sink.send(_documents(1, start=i))
    sink.close()
    paths = _files(tmp_path)
    assert len(paths) == 3
    assert sink.files_deleted == 5
    assert _ids_in(paths) == ["ev-5", "ev-6", "ev-7"]


def test_file_sink_orders_files_of_one_second_by_number(tmp_path: Path) -> None:
    """Files opened in the same second are told apart by N and pruned oldest first, 10 after 9."""
    sink = NdjsonFileSink(tmp_path, max_file_bytes=1, max_files=2, clock=_Clock())
    for i in range(12):
        sink.send(_documents(1, start=i))
    sink.close()
    names = sorted(path.name for path in _files(tmp_path))
    assert names == [
        "predictions-20251125-090000-10.ndjson",
        "predictions-20251125-090000-11.ndjson",
    ]


def test_file_sink_does_not_overwrite_files_of_an_earlier_run(tmp_path: Path) -> None:
    """A restarted sink opens a new file rather than appending to or truncating an old one."""
    first = NdjsonFileSink(tmp_path, clock=_Clock())
    first.send(_documents(1))
    first.close()
    second = NdjsonFileSink(tmp_path, clock=_Clock())
    second.send(_documents(1, start=1))
    second.close()
    assert [_ids_in([path]) for path in _files(tmp_path)] == [["ev-0"], ["ev-1"]]


def test_file_sink_disk_errors_are_retry(tmp_path: Path) -> None:
    """When the directory cannot be written, every document comes back RETRY with the reason."""
    target = tmp_path / "out"
    sink = NdjsonFileSink(target, clock=_Clock())
    target.rmdir()
    target.write_text("a file where the directory was")
    results = sink.send(_documents(2))
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY]
    assert results[0].reason is not None
    assert "cannot write" in results[0].reason
    sink.close()


def test_file_sink_recovers_after_a_disk_error(tmp_path: Path) -> None:
    """After a failed write the next batch opens a fresh file and succeeds."""
    target = tmp_path / "out"
    sink = NdjsonFileSink(target, clock=_Clock())
    target.rmdir()
    target.write_text("blocked")
    assert sink.send(_documents(1))[0].outcome is Outcome.RETRY
    target.unlink()
    target.mkdir()
    assert sink.send(_documents(1))[0].outcome is Outcome.DELIVERED
    sink.close()
    assert _ids_in(_files(target)) == ["ev-0"]


def test_file_sink_marks_unencodable_documents_dead(tmp_path: Path) -> None:
    """A document JSON cannot carry is DEAD with the reason; the others are written."""
    good = _documents(1)[0]
    bad = Document(good.index, "bad", {"value": object()})
    sink = NdjsonFileSink(tmp_path, clock=_Clock())
    results = sink.send([good, bad])
    sink.close()
    assert results[0].outcome is Outcome.DELIVERED
    assert results[1].outcome is Outcome.DEAD
    assert results[1].reason is not None
    assert "not JSON" in results[1].reason
    assert _ids_in(_files(tmp_path)) == [good.id]


@pytest.mark.parametrize("bad", [{"max_file_bytes": 0}, {"max_files": 0}])
def test_file_sink_refuses_nonsense_limits(tmp_path: Path, bad: dict[str, int]) -> None:
    """Limits below 1 are a ValueError naming the parameter."""
    with pytest.raises(ValueError, match=next(iter(bad))):
        NdjsonFileSink(tmp_path, **bad)


# --------------------------------------------------------------------------- ES sink, no server


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_es_sink_connection_refused_is_retry(closed_port: int) -> None:
    """A refused connection gives RETRY for every document, without raising."""
    client = Elasticsearch(f"http://127.0.0.1:{closed_port}", max_retries=0)
    sink = ElasticsearchSink(client)
    results = sink.send(_documents(3))
    sink.close()
    assert [r.outcome for r in results] == [Outcome.RETRY] * 3
    assert results[0].reason is not None
    assert "ConnectionError" in results[0].reason


def test_es_sink_empty_batch_sends_nothing(closed_port: int) -> None:
    """An empty batch gives an empty result list without a request."""
    sink = ElasticsearchSink(Elasticsearch(f"http://127.0.0.1:{closed_port}", max_retries=0))
    assert sink.send([]) == []
    sink.close()


# --------------------------------------------------------------------------- ES sink, test server

es_server = es_server_fixture()
PREDICTIONS = "logs-modelwatch.predictions-default"


@pytest.fixture
def client(es_server: EsServer) -> Iterator[Elasticsearch]:
    """The official client as the sidecar builds it, pointed at the test server."""
    client = build_client(EsSettings(urls=(es_server.url,), request_timeout_seconds=5.0))
    yield client
    client.close()


def _outcomes(results: list[ItemResult]) -> list[Outcome]:
    return [result.outcome for result in results]


def test_es_sink_creates_documents_under_their_ids(es_server: EsServer, client: Any) -> None:
    """A batch is created in the data stream, each document under its event id, all DELIVERED."""
    documents = _documents(3)
    results = ElasticsearchSink(client, refresh=True).send(documents)
    assert _outcomes(results) == [Outcome.DELIVERED] * 3
    stored = es_server.documents(PREDICTIONS)
    assert stored == {d.id: d.source for d in documents}
    assert client.count(index=PREDICTIONS)["count"] == 3


def test_es_sink_replay_is_duplicate(es_server: EsServer, client: Any) -> None:
    """Sending the same documents again gives DUPLICATE (409) and stores nothing twice."""
    sink = ElasticsearchSink(client, refresh=True)
    sink.send(_documents(2))
    results = sink.send(_documents(3))
    assert _outcomes(results) == [Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.DELIVERED]
    assert len(es_server.documents(PREDICTIONS)) == 3


def test_es_sink_item_rejection_is_dead_with_reason(es_server: EsServer, client: Any) -> None:
    """A 4xx item (mapping/validation) is DEAD with "status type: reason"; the rest is stored."""
    es_server.reject_bulk_items(lambda item: item.id == "ev-1")
    results = ElasticsearchSink(client).send(_documents(3))
    assert _outcomes(results) == [Outcome.DELIVERED, Outcome.DEAD, Outcome.DELIVERED]
    assert results[1].reason == (
        "400 document_parsing_exception: failed to parse: rejected by fault injection"
    )
    assert set(es_server.documents(PREDICTIONS)) == {"ev-0", "ev-2"}


@pytest.mark.parametrize("status", [429, 503])
def test_es_sink_item_throttling_is_retry(es_server: EsServer, client: Any, status: int) -> None:
    """Items refused with 429 or 503 are RETRY and succeed when sent again."""
    es_server.throttle_items(0.5, status=status)
    sink = ElasticsearchSink(client)
    documents = _documents(4)
    results = sink.send(documents)
    retry = [d for d, r in zip(documents, results, strict=True) if r.outcome is Outcome.RETRY]
    assert len(retry) == 2
    assert all(str(status) in (r.reason or "") for r in results if r.outcome is Outcome.RETRY)
    es_server.clear_faults()
    assert _outcomes(sink.send(retry)) == [Outcome.DELIVERED] * 2
    assert len(es_server.documents(PREDICTIONS)) == 4


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_es_sink_request_failure_is_retry(es_server: EsServer, client: Any, status: int) -> None:
    """A whole bulk answered 429/5xx gives RETRY for every document, without raising."""
    es_server.fail_requests(status, matching="_bulk")
    results = ElasticsearchSink(client).send(_documents(3))
    assert _outcomes(results) == [Outcome.RETRY] * 3
    assert f"HTTP {status}" in (results[0].reason or "")
    assert es_server.stats().requests == 1  # the client did not retry behind the shipper's back


def test_es_sink_bad_request_is_dead_for_all(es_server: EsServer, client: Any) -> None:
    """A whole bulk refused with 400 gives DEAD for every document, with the reason."""
    es_server.fail_requests(400, matching="_bulk")
    results = ElasticsearchSink(client).send(_documents(2))
    assert _outcomes(results) == [Outcome.DEAD] * 2
    assert "HTTP 400: illegal_argument_exception" in (results[0].reason or "")


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "check the credentials: MODELWATCH_ES_API_KEY"),
        (403, "the API key or user needs the create_doc and auto_configure privileges"),
        (404, "MODELWATCH_ES_URL does not lead to Elasticsearch's bulk API"),
    ],
)
def test_es_sink_configuration_mistakes_are_retry_not_dead(
    es_server: EsServer, status: int, hint: str
) -> None:
    """A whole bulk refused 401/403/404 is RETRY with a hint and no secret, then goes through."""
    secret = "key-id:do-not-log-this-secret"  # noqa: S105 - a made-up key to check masking
    client = build_client(
        EsSettings.from_environ(
            {"MODELWATCH_ES_URL": es_server.url, "MODELWATCH_ES_API_KEY": secret}
        )
    )
    sink = ElasticsearchSink(client)
    es_server.fail_requests(status, matching="_bulk")
    results = sink.send(_documents(3))
    assert _outcomes(results) == [Outcome.RETRY] * 3
    reason = results[0].reason or ""
    assert f"HTTP {status} ({hint}" in reason
    assert "do-not-log-this-secret" not in reason
    es_server.clear_faults()
    assert _outcomes(sink.send(_documents(3))) == [Outcome.DELIVERED] * 3
    sink.close()


def test_es_sink_authentication_reason_keeps_elasticsearchs_words(
    es_server: EsServer, client: Any
) -> None:
    """A 401's reason carries Elasticsearch's error type and reason after the hint."""
    es_server.fail_requests(401, matching="_bulk")
    (result,) = ElasticsearchSink(client).send(_documents(1))
    assert "security_exception: unable to authenticate" in (result.reason or "")


def test_es_sink_refused_connections_are_retry(es_server: EsServer, client: Any) -> None:
    """While the node refuses connections every document is RETRY; afterwards they go through."""
    sink = ElasticsearchSink(client)
    es_server.refuse_connections(True)
    assert _outcomes(sink.send(_documents(2))) == [Outcome.RETRY] * 2
    es_server.refuse_connections(False)
    assert _outcomes(sink.send(_documents(2))) == [Outcome.DELIVERED] * 2


def test_es_sink_timeout_is_retry(es_server: EsServer) -> None:
    """A bulk that outlives the request timeout is RETRY with ConnectionTimeout as the reason."""
    client = build_client(EsSettings(urls=(es_server.url,), request_timeout_seconds=0.1))
    es_server.delay(1.0)
    results = ElasticsearchSink(client).send(_documents(1))
    client.close()
    assert _outcomes(results) == [Outcome.RETRY]
    assert "ConnectionTimeout" in (results[0].reason or "")


def test_file_sink_output_loads_through_bulk_unchanged(
    tmp_path: Path, es_server: EsServer, client: Any
) -> None:
    """A file the file sink wrote, sent as it is to _bulk, stores every document once."""
    snapshot = DriftSnapshot("m", "1", 0.0, 60.0, 0, "bonferroni", 0.05, (), None)
    predictions = _documents(50, attributes={"region": "eu"}, trace_id="t")
    drift = BUILDER.drift(snapshot, 1_764_061_200.0)
    sink = NdjsonFileSink(tmp_path, clock=_Clock())
    sink.send([*predictions, *drift])
    sink.close()
    for path in sorted(tmp_path.glob("*.ndjson")):
        response = client.bulk(operations=path.read_bytes(), refresh=True)
        assert response["errors"] is False
    assert es_server.documents(PREDICTIONS) == {d.id: d.source for d in predictions}
    assert es_server.documents("metrics-modelwatch.drift-default") == {
        d.id: d.source for d in drift
    }
