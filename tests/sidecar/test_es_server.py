"""The Elasticsearch test server, seen only through the official ``elasticsearch`` client.

Each test pins one behaviour a real cluster shows to that client, so that tests of the shipper
and sinks built on this server would behave the same against Elasticsearch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from elasticsearch import (
    ApiError,
    BadRequestError,
    ConnectionError,
    ConnectionTimeout,
    Elasticsearch,
    NotFoundError,
    helpers,
)

from tests.support.es_server import BulkItem, EsServer, es_server_fixture

STREAM = "logs-modelwatch.predictions-default"
CREATED = datetime(2025, 3, 7, 12, 0, tzinfo=UTC).timestamp()
TIMESTAMP = "2025-03-07T12:00:00.000Z"

server = es_server_fixture(clock=lambda: CREATED)


@pytest.fixture
def es(server: EsServer) -> Iterator[Elasticsearch]:
    """A client with no transport retries, so each fault is seen as it is answered."""
    with Elasticsearch(server.url, max_retries=0) as client:
        yield client


def install_templates(es: Elasticsearch, **settings: Any) -> None:
    """Setup as modelwatch does it: a mappings component, a policy, a data stream template."""
    es.cluster.put_component_template(
        name="modelwatch-mappings",
        template={
            "mappings": {
                "dynamic_templates": [
                    {
                        "features_as_double": {
                            "path_match": "ml.features.*",
                            "match_mapping_type": ["long", "double"],
                            "mapping": {"type": "double"},
                        }
                    },
                    {
                        "strings_as_keyword": {
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword"},
                        }
                    },
                ],
                "properties": {
                    "@timestamp": {"type": "date"},
                    "event": {
                        "properties": {"id": {"type": "keyword"}, "duration": {"type": "long"}}
                    },
                    "ml": {
                        "properties": {
                            "model": {"properties": {"name": {"type": "keyword"}}},
                            "prediction": {"type": "double"},
                            "sampled": {"type": "boolean"},
                        }
                    },
                },
            }
        },
    )
    es.ilm.put_lifecycle(
        name="modelwatch",
        policy={
            "phases": {
                "hot": {"actions": {"rollover": {"max_age": "1d"}}},
                "delete": {"min_age": "30d", "actions": {"delete": {}}},
            }
        },
    )
    es.indices.put_index_template(
        name="modelwatch-predictions",
        index_patterns=["logs-modelwatch.predictions-*"],
        composed_of=["modelwatch-mappings"],
        data_stream={},
        priority=200,
        template={"settings": {"index.lifecycle.name": "modelwatch", **settings}},
    )


def create(doc_id: str, **fields: Any) -> list[dict[str, Any]]:
    """A bulk ``create`` of one prediction document into the predictions data stream."""
    return [{"create": {"_index": STREAM, "_id": doc_id}}, {"@timestamp": TIMESTAMP, **fields}]


def items(response: Any) -> list[dict[str, Any]]:
    """The per-item results of a bulk response, without the action name."""
    return [next(iter(item.values())) for item in response["items"]]


def test_info_passes_the_clients_product_check(es: Elasticsearch) -> None:
    """``info()`` returns the version number and tagline a real node returns."""
    info = es.info()
    assert info["version"]["number"] == "9.1.0"
    assert info["tagline"] == "You Know, for Search"
    assert info.meta.headers["x-elastic-product"] == "Elasticsearch"


def test_a_9x_node_answers_the_pinned_8x_client(es: Elasticsearch) -> None:
    """The pinned 8.x client asks compatible-with=8; a 9.x node accepts it and echoes that type."""
    content_type = es.info().meta.headers["content-type"]
    assert content_type == "application/vnd.elasticsearch+json;compatible-with=8"


def test_ping_uses_head(es: Elasticsearch) -> None:
    """``ping()`` (``HEAD /``) is true while the node is up."""
    assert es.ping() is True


def test_an_8x_node_answers_the_pinned_8x_client() -> None:
    """The pinned client reads an 8.x node too: the same compatible-with=8 requests succeed."""
    with EsServer(version="8.17.0") as old, Elasticsearch(old.url, max_retries=0) as client:
        info = client.info()
    assert info["version"]["number"] == "8.17.0"
    assert info.meta.headers["content-type"].endswith("compatible-with=8")


def test_an_8x_node_refuses_a_request_asking_for_compatibility_with_9() -> None:
    """Compatibility headers must name the node's major or the one before: 9 fails on 8.x.

    That is what a 9.x client sends, and why the client is pinned below 9.
    """
    media_type = "application/vnd.elasticsearch+json; compatible-with=9"
    with EsServer(version="8.17.0") as old:
        answer = httpx.get(old.url, headers={"Accept": media_type}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "media_type_header_exception"


def test_templates_and_policy_round_trip(es: Elasticsearch) -> None:
    """Component template, index template and lifecycle policy read back as written."""
    install_templates(es)
    component = es.cluster.get_component_template(name="modelwatch-mappings")
    mappings = component["component_templates"][0]["component_template"]["template"]["mappings"]
    assert mappings["properties"]["ml"]["properties"]["prediction"] == {"type": "double"}
    template = es.indices.get_index_template(name="modelwatch-predictions")["index_templates"][0]
    assert template["index_template"]["composed_of"] == ["modelwatch-mappings"]
    assert template["index_template"]["index_patterns"] == ["logs-modelwatch.predictions-*"]
    assert es.indices.exists_index_template(name="modelwatch-predictions")
    policy = es.ilm.get_lifecycle(name="modelwatch")["modelwatch"]
    assert policy["policy"]["phases"]["delete"]["min_age"] == "30d"
    assert policy["in_use_by"]["composable_templates"] == ["modelwatch-predictions"]


def test_missing_template_and_policy_are_404(es: Elasticsearch) -> None:
    """Reading an absent template or policy raises ``NotFoundError``; ``exists`` says False."""
    with pytest.raises(NotFoundError):
        es.indices.get_index_template(name="absent")
    with pytest.raises(NotFoundError):
        es.ilm.get_lifecycle(name="absent")
    assert not es.indices.exists_index_template(name="absent")


def test_template_naming_a_missing_component_is_refused(es: Elasticsearch) -> None:
    """``composed_of`` must name existing component templates."""
    with pytest.raises(BadRequestError) as raised:
        es.indices.put_index_template(name="broken", index_patterns=["x-*"], composed_of=["absent"])
    assert raised.value.error == "invalid_index_template_exception"


def test_overlapping_templates_of_equal_priority_are_refused(es: Elasticsearch) -> None:
    """A pattern overlapping the built-in ``logs-*-*`` at its priority 100 is refused."""
    with pytest.raises(BadRequestError) as raised:
        es.indices.put_index_template(
            name="clash", index_patterns=["logs-modelwatch.predictions-*"], priority=100
        )
    assert "same priority [100]" in str(raised.value.info)


def test_bulk_create_auto_creates_the_data_stream(es: Elasticsearch) -> None:
    """A create into a name matching a data stream template creates the stream and backing index."""
    install_templates(es)
    response = es.bulk(operations=create("e1", ml={"prediction": 0.5}))
    (item,) = items(response)
    assert response["errors"] is False
    assert (item["status"], item["result"], item["_id"]) == (201, "created", "e1")
    assert item["_index"] == f".ds-{STREAM}-2025.03.07-000001"
    (stream,) = es.indices.get_data_stream(name=STREAM)["data_streams"]
    assert (stream["template"], stream["ilm_policy"]) == ("modelwatch-predictions", "modelwatch")


def test_missing_data_stream_is_404(es: Elasticsearch) -> None:
    """``get_data_stream`` of an absent name raises ``NotFoundError``."""
    with pytest.raises(NotFoundError):
        es.indices.get_data_stream(name=STREAM)


def test_duplicate_create_is_a_409_item(es: Elasticsearch, server: EsServer) -> None:
    """A second ``create`` with an existing ``_id`` fails that item with 409 and keeps the first."""
    install_templates(es)
    es.bulk(operations=create("e1", ml={"prediction": 0.5}))
    response = es.bulk(operations=create("e1", ml={"prediction": 9.0}))
    (item,) = items(response)
    assert response["errors"] is True
    assert item["status"] == 409
    assert item["error"]["type"] == "version_conflict_engine_exception"
    assert server.documents(STREAM)["e1"]["ml"] == {"prediction": 0.5}


def test_index_action_into_a_data_stream_is_refused_per_item(es: Elasticsearch) -> None:
    """Data streams take only ``create``; an ``index`` action fails its item with 400."""
    install_templates(es)
    response = es.bulk(
        operations=[{"index": {"_index": STREAM, "_id": "e1"}}, {"@timestamp": TIMESTAMP}]
    )
    (item,) = items(response)
    assert item["status"] == 400
    assert "op_type of create" in item["error"]["reason"]


def test_data_stream_documents_need_a_timestamp(es: Elasticsearch) -> None:
    """A data stream document without ``@timestamp`` fails its item with 400."""
    install_templates(es)
    response = es.bulk(operations=[{"create": {"_index": STREAM, "_id": "e1"}}, {"x": 1}])
    (item,) = items(response)
    assert item["status"] == 400
    assert (
        item["error"]["caused_by"]["reason"]
        == "data stream timestamp field [@timestamp] is missing"
    )


def test_mapping_conflicts_fail_only_their_items(es: Elasticsearch, server: EsServer) -> None:
    """A string in an explicit double field fails its item only; the rest of the bulk lands."""
    install_templates(es)
    operations = create("good", ml={"prediction": 1.0}) + create("bad", ml={"prediction": "high"})
    response = es.bulk(operations=operations)
    good, bad = items(response)
    assert good["status"] == 201
    assert bad["status"] == 400
    assert bad["error"]["type"] == "document_parsing_exception"
    assert bad["error"]["caused_by"]["type"] == "number_format_exception"
    assert set(server.documents(STREAM)) == {"good"}


@pytest.mark.parametrize(
    ("first", "second", "second_status"),
    [
        (1.5, "not a number", 400),  # dynamic double via path_match, then a string
        (1.5, "2.5", 201),  # numeric strings are coerced
        (1.5, True, 400),  # booleans are not numbers
        ("red", 3, 201),  # numbers are accepted by keyword fields
        ("red", {"nested": 1}, 400),  # objects are not keyword values
    ],
)
def test_dynamic_fields_are_typed_by_their_first_value(
    es: Elasticsearch, first: Any, second: Any, second_status: int
) -> None:
    """A dynamic feature field keeps the type of its first value, with Elasticsearch's coercion."""
    install_templates(es)
    es.bulk(operations=create("e1", ml={"features": {"f": first}}))
    (item,) = items(es.bulk(operations=create("e2", ml={"features": {"f": second}})))
    assert item["status"] == second_status


def test_dotted_keys_and_nested_objects_share_one_mapping(es: Elasticsearch) -> None:
    """A dotted key ``ml.prediction`` is checked against the same field as a nested object."""
    install_templates(es)
    (item,) = items(es.bulk(operations=create("e1", **{"ml.prediction": "high"})))
    assert item["error"]["reason"].startswith(
        "failed to parse field [ml.prediction] of type [double]"
    )


def test_non_finite_numbers_are_rejected_per_item(es: Elasticsearch) -> None:
    """A source line with a bare ``NaN`` token is not JSON a node accepts: its item fails."""
    install_templates(es)
    body = (
        f'{{"create": {{"_index": "{STREAM}", "_id": "e1"}}}}\n'
        f'{{"@timestamp": "{TIMESTAMP}", "ml": {{"prediction": NaN}}}}\n'
    )
    # The client sends a str body as it is: the only way to put a bare NaN on the wire.
    (item,) = items(es.bulk(operations=cast(Any, body)))
    assert (item["status"], item["error"]["type"]) == (400, "document_parsing_exception")


def test_strict_mapping_refuses_unknown_fields(es: Elasticsearch) -> None:
    """Under ``dynamic: strict`` an unmapped field fails the item with 400."""
    es.indices.put_index_template(
        name="strict",
        index_patterns=["strict-*"],
        template={"mappings": {"dynamic": "strict", "properties": {"a": {"type": "long"}}}},
    )
    ops: list[dict[str, Any]] = [{"index": {"_index": "strict-1", "_id": "1"}}, {"a": 1, "b": 2}]
    (item,) = items(es.bulk(operations=ops))
    assert item["error"]["type"] == "strict_dynamic_mapping_exception"


def test_total_fields_limit_is_enforced(es: Elasticsearch) -> None:
    """A document adding fields beyond ``index.mapping.total_fields.limit`` fails its item."""
    es.indices.put_index_template(
        name="small",
        index_patterns=["small-*"],
        template={"settings": {"index.mapping.total_fields.limit": 3}},
    )
    ops: list[dict[str, Any]] = [
        {"index": {"_index": "small-1", "_id": "1"}},
        {f"f{i}": i for i in range(4)},
    ]
    (item,) = items(es.bulk(operations=ops))
    assert "Limit of total fields [3]" in item["error"]["reason"]


def test_count_and_search_by_ids(es: Elasticsearch) -> None:
    """``count`` and ``search`` by ``ids`` over the stream name and a ``logs-*`` pattern."""
    install_templates(es)
    es.bulk(operations=create("e1") + create("e2") + create("e3"), refresh=True)
    assert es.count(index=STREAM)["count"] == 3
    hits = es.search(index="logs-*", query={"ids": {"values": ["e1", "e3", "nope"]}})["hits"]
    assert hits["total"] == {"value": 2, "relation": "eq"}
    assert sorted(h["_id"] for h in hits["hits"]) == ["e1", "e3"]
    assert hits["hits"][0]["_source"]["@timestamp"] == TIMESTAMP


def test_term_and_terms_on_keyword_fields(es: Elasticsearch) -> None:
    """``term``/``terms`` match keyword values exactly; ``size`` and ``from`` page the hits."""
    install_templates(es)
    docs = [create(f"e{i}", ml={"model": {"name": f"m{i % 3}"}}) for i in range(9)]
    es.bulk(operations=[line for doc in docs for line in doc], refresh=True)
    term = es.search(index=STREAM, query={"term": {"ml.model.name": "m1"}})
    assert term["hits"]["total"]["value"] == 3
    terms = es.search(
        index=STREAM, query={"terms": {"ml.model.name": ["m0", "m2"]}}, size=4, from_=4
    )
    assert terms["hits"]["total"]["value"] == 6
    assert len(terms["hits"]["hits"]) == 2


def test_writes_are_searchable_after_a_refresh(es: Elasticsearch, server: EsServer) -> None:
    """With automatic refresh off, ``count`` sees a write only after ``refresh``, as in a node."""
    install_templates(es, **{"index.refresh_interval": "-1"})
    es.bulk(operations=create("e1"))
    assert es.count(index=STREAM)["count"] == 0
    assert set(server.documents(STREAM)) == {"e1"}
    es.indices.refresh(index=STREAM)
    assert es.count(index=STREAM)["count"] == 1


def test_counting_a_missing_index_is_404(es: Elasticsearch) -> None:
    """``count`` of a concrete name that does not exist raises ``NotFoundError``; a pattern is 0."""
    with pytest.raises(NotFoundError):
        es.count(index="absent")
    assert es.count(index="absent-*")["count"] == 0


def test_filter_path_trims_the_bulk_response(es: Elasticsearch) -> None:
    """``filter_path=items.*.error`` keeps only the failed items' errors."""
    install_templates(es)
    ops = create("e1") + create("e1")
    response = es.bulk(operations=ops, filter_path="errors,items.*.error.type")
    assert response.body == {
        "errors": True,
        "items": [{"create": {"error": {"type": "version_conflict_engine_exception"}}}],
    }


def test_gzip_compressed_requests_work(server: EsServer) -> None:
    """A client with ``http_compress=True`` sends gzip bodies and reads gzip answers."""
    with Elasticsearch(server.url, http_compress=True) as client:
        install_templates(client)
        assert items(client.bulk(operations=create("e1")))[0]["status"] == 201


def test_refused_connections_are_a_connection_error(es: Elasticsearch, server: EsServer) -> None:
    """While refusing, the client raises ``ConnectionError``; afterwards the data is still there."""
    install_templates(es)
    es.bulk(operations=create("e1"))
    server.refuse_connections(True)
    with pytest.raises(ConnectionError):
        es.info()
    server.refuse_connections(False)
    es.bulk(operations=create("e2"))
    assert set(server.documents(STREAM)) == {"e1", "e2"}


def test_failed_requests_are_api_errors_with_the_status(
    es: Elasticsearch, server: EsServer
) -> None:
    """``fail_requests(503, count=1)`` fails exactly one request with 503, then serves normally."""
    server.fail_requests(503, count=1)
    with pytest.raises(ApiError) as raised:
        es.bulk(operations=create("e1"))
    assert raised.value.meta.status == 503
    assert raised.value.error == "cluster_block_exception"
    assert es.info()["tagline"] == "You Know, for Search"
    assert server.stats().failed_requests == 1


def test_the_clients_own_retries_absorb_a_single_503(server: EsServer) -> None:
    """With default ``max_retries`` the client retries a 503 itself, so the fault is invisible."""
    server.fail_requests(503, count=1)
    with Elasticsearch(server.url) as client:
        assert client.info()["tagline"] == "You Know, for Search"
    assert server.stats().requests == 2


def test_failures_can_be_limited_to_bulk_requests(es: Elasticsearch, server: EsServer) -> None:
    """``matching="_bulk"`` fails bulk requests only, until cleared."""
    server.fail_requests(429, matching="_bulk")
    assert es.ping()
    with pytest.raises(ApiError) as raised:
        es.bulk(operations=create("e1"))
    assert raised.value.meta.status == 429
    server.fail_requests(None)
    install_templates(es)
    assert not es.bulk(operations=create("e1"))["errors"]


def test_a_proxy_502_has_no_elasticsearch_body(es: Elasticsearch, server: EsServer) -> None:
    """502 comes as a gateway would send it: plain text, still an ``ApiError`` with the status."""
    server.fail_requests(502, count=1)
    with pytest.raises(ApiError) as raised:
        es.info()
    assert raised.value.meta.status == 502
    assert "x-elastic-product" not in raised.value.meta.headers


def test_throttled_items_are_429_per_item(es: Elasticsearch, server: EsServer) -> None:
    """``throttle_items(0.5)`` refuses every second item with 429 and stores the others."""
    install_templates(es)
    server.throttle_items(0.5)
    response = es.bulk(operations=[line for i in range(6) for line in create(f"e{i}")])
    statuses = [item["status"] for item in items(response)]
    assert statuses == [201, 429, 201, 429, 201, 429]
    assert items(response)[1]["error"]["type"] == "es_rejected_execution_exception"
    assert set(server.documents(STREAM)) == {"e0", "e2", "e4"}
    assert server.stats().throttled_items == 3


def test_streaming_bulk_retries_throttled_items_to_completion(
    es: Elasticsearch, server: EsServer
) -> None:
    """``helpers.streaming_bulk`` retries per-item 429s until every document is stored once.

    (The helper only retries with ``raise_on_error=False``: otherwise the first 429 of a chunk
    raises ``BulkIndexError``.)
    """
    install_templates(es)
    server.throttle_items(0.5)
    actions = (
        {"_op_type": "create", "_index": STREAM, "_id": f"e{i}", "@timestamp": TIMESTAMP}
        for i in range(20)
    )
    results = list(
        helpers.streaming_bulk(
            es, actions, chunk_size=5, max_retries=10, initial_backoff=0, raise_on_error=False
        )
    )
    assert all(ok for ok, _ in results)
    assert set(server.documents(STREAM)) == {f"e{i}" for i in range(20)}


def test_rejected_items_fail_as_picked(es: Elasticsearch, server: EsServer) -> None:
    """``reject_bulk_items`` fails just the items it picks; ``helpers.bulk`` reports them."""
    install_templates(es)
    server.reject_bulk_items(lambda item: item.id == "e2")
    actions = [
        {"_op_type": "create", "_index": STREAM, "_id": f"e{i}", "@timestamp": TIMESTAMP}
        for i in range(4)
    ]
    stored, errors = helpers.bulk(es, actions, raise_on_error=False)
    assert stored == 3
    assert isinstance(errors, list)
    assert [next(iter(e.values()))["_id"] for e in errors] == ["e2"]
    assert set(server.documents(STREAM)) == {"e0", "e1", "e3"}


def test_predicates_see_the_item(es: Elasticsearch, server: EsServer) -> None:
    """The predicate receives the action, target name, id and parsed source."""
    install_templates(es)
    seen: list[BulkItem] = []

    def record(item: BulkItem) -> bool:
        seen.append(item)
        return False

    server.reject_bulk_items(record)
    es.bulk(operations=create("e1", ml={"prediction": 2.0}))
    assert seen == [
        BulkItem("create", STREAM, "e1", {"@timestamp": TIMESTAMP, "ml": {"prediction": 2.0}})
    ]


def test_delay_makes_the_client_time_out(server: EsServer) -> None:
    """A delayed answer surfaces as ``ConnectionTimeout`` in a client with a shorter timeout."""
    server.delay(5.0)
    with (
        Elasticsearch(server.url, request_timeout=0.2, max_retries=0) as client,
        pytest.raises(ConnectionTimeout),
    ):
        client.info()
    server.clear_faults()


def test_concurrent_bulk_requests_lose_nothing(server: EsServer) -> None:
    """Bulk requests from several threads at once are all applied, each document exactly once."""
    with Elasticsearch(server.url) as client:
        install_templates(client)

        def send(worker: int) -> None:
            for batch in range(5):
                ops = [
                    line
                    for i in range(100)
                    for line in create(f"w{worker}-b{batch}-{i}", ml={"prediction": float(i)})
                ]
                assert not client.bulk(operations=ops)["errors"]

        threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(server.documents(STREAM)) == 2000
    assert (server.bulk_requests, server.bulk_items) == (20, 2000)


def test_unknown_query_parameters_are_refused(es: Elasticsearch) -> None:
    """A parameter the endpoint does not know is a 400, as a real node answers."""
    with pytest.raises(BadRequestError) as raised:
        es.perform_request(
            "GET", "/_count", params={"bogus": "1"}, headers={"accept": "application/json"}
        )
    assert "unrecognized parameter: [bogus]" in str(raised.value.info)


def test_data_streams_are_created_and_deleted_explicitly(
    es: Elasticsearch, server: EsServer
) -> None:
    """``create_data_stream`` needs a data stream template; ``delete_data_stream`` removes it."""
    with pytest.raises(BadRequestError):
        es.indices.create_data_stream(name="nomatch-stream")
    install_templates(es)
    es.indices.create_data_stream(name=STREAM)
    assert server.data_streams() == [STREAM]
    es.indices.delete_data_stream(name=STREAM)
    assert server.data_streams() == []
