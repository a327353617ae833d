"""Where shipped documents go: one small interface, an Elasticsearch sink and an NDJSON file sink.

A sink takes a batch of ``Document`` objects and answers one ``ItemResult`` per document, in
order. It never raises for transport trouble (a refused connection, a timeout, a 503): that is
``Outcome.RETRY`` for every document, and the shipper owns backoff and retries. A sink never
retries by itself and never drops a document silently: what it cannot deliver comes back as
``RETRY`` (try again later) or ``DEAD`` (will never be accepted; goes to the dead-letter file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sidecar._file_sink import NdjsonFileSink
from sidecar._sink_types import (
    DELIVERED,
    DUPLICATE,
    ItemResult,
    Outcome,
    Sink,
    dead_all,
    retry_all,
)
from sidecar.documents import Document

if TYPE_CHECKING:
    from sidecar._es_sink import ElasticsearchSink

__all__ = [
    "DELIVERED",
    "DUPLICATE",
    "Document",
    "ElasticsearchSink",
    "ItemResult",
    "NdjsonFileSink",
    "Outcome",
    "Sink",
    "dead_all",
    "retry_all",
]


def __getattr__(name: str) -> object:
    # ElasticsearchSink is loaded on first use: the client package costs about 36 MiB of
    # resident memory, which a sidecar writing to local files never needs.
    if name == "ElasticsearchSink":
        from sidecar._es_sink import ElasticsearchSink

        return ElasticsearchSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
