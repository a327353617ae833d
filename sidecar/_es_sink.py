"""The Elasticsearch sink: one ``_bulk`` request of ``create`` actions per batch.

Documents are encoded here with orjson (faster than the client's serializer) and handed to the
official client as ready NDJSON bytes, which it forwards unchanged. The client must be built
with ``max_retries=0`` (``sidecar.es_settings.build_client`` does): the shipper owns retries,
and retries hidden inside the client would stretch a batch past the shipper's backoff.

Outcome rules (``docs/elasticsearch.md``): per item, 2xx delivered, 409 duplicate, 429 and 5xx
retry, any other status dead with the error's ``type: reason``. For the whole request,
connection trouble, timeouts, 408, 429 and 5xx retry every item. So do 401, 403 and 404: they
say nothing about the documents but that the sidecar is misconfigured (credentials, privileges,
URL), and an operator's fix must not find the stream already dead-lettered; the reason carries a
hint, and the shipper logs it once per retry episode. Any other 4xx (bad request, body too
large) marks every item dead, since sending the same request again cannot help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from elasticsearch import ApiError, Elasticsearch, TransportError

from sidecar._sink_types import (
    DELIVERED,
    DUPLICATE,
    ItemResult,
    Outcome,
    dead_all,
    retry_all,
)
from sidecar.documents import Document
from sidecar.es_settings import API_KEY_KEY, PASSWORD_KEY, URL_KEY, USERNAME_KEY

MAX_REASON_CHARS = 1000
_RETRY_STATUSES = frozenset({408, 429})
_CONFIGURATION_HINTS = {
    401: f"check the credentials: {API_KEY_KEY}, or {USERNAME_KEY} and {PASSWORD_KEY}",
    403: (
        "the API key or user needs the create_doc and auto_configure privileges on "
        "logs-modelwatch.predictions-* and metrics-modelwatch.drift-*"
    ),
    404: f"{URL_KEY} does not lead to Elasticsearch's bulk API",
}
"""Whole-request answers that mean a configuration mistake: retried, with what to fix."""


class ElasticsearchSink:
    """Sends documents with ``client.bulk``; ``refresh=True`` makes them searchable at once."""

    def __init__(self, client: Elasticsearch, *, refresh: bool = False) -> None:
        self._client = client
        self._refresh = refresh

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        """One result per document, in order; transport trouble is ``RETRY``, never an exception."""
        if not documents:
            return []
        results: list[ItemResult | None] = [None] * len(documents)
        body = bytearray()
        sent: list[int] = []
        for position, document in enumerate(documents):
            try:
                body += document.bulk_lines()
            except TypeError as exc:
                results[position] = ItemResult(Outcome.DEAD, _clip(f"not JSON: {exc}"))
                continue
            sent.append(position)
        if sent:
            for position, result in zip(sent, self._bulk(bytes(body), len(sent)), strict=True):
                results[position] = result
        return [result for result in results if result is not None]

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

    def _bulk(self, body: bytes, count: int) -> list[ItemResult]:
        extra: dict[str, Any] = {"refresh": True} if self._refresh else {}
        try:
            # The client forwards pre-encoded NDJSON bytes as they are; its type hints only
            # know about lists of dicts.
            response = self._client.bulk(
                operations=cast("Sequence[Mapping[str, Any]]", body), **extra
            )
        except ApiError as exc:
            return _request_failed(exc, count)
        except TransportError as exc:
            return retry_all(count, _clip(f"{type(exc).__name__}: {exc.message}"))
        items = response.body.get("items") if isinstance(response.body, dict) else None
        if not isinstance(items, list) or len(items) != count:
            got = len(items) if isinstance(items, list) else "no"
            return retry_all(count, f"bulk answer has {got} items for {count} documents")
        return [_item_result(item) for item in items]


def _item_result(item: object) -> ItemResult:
    action = next(iter(item.values()), None) if isinstance(item, dict) else None
    if not isinstance(action, dict) or not isinstance(action.get("status"), int):
        return ItemResult(Outcome.RETRY, _clip(f"unreadable bulk item: {item!r}"))
    status: int = action["status"]
    if 200 <= status < 300:
        return DELIVERED
    if status == 409:
        return DUPLICATE
    reason = f"{status} {_error_text(action.get('error'))}"
    if status in _RETRY_STATUSES or status >= 500:
        return ItemResult(Outcome.RETRY, _clip(reason))
    return ItemResult(Outcome.DEAD, _clip(reason))


def _request_failed(exc: ApiError, count: int) -> list[ItemResult]:
    status = exc.meta.status
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else body
    hint = _CONFIGURATION_HINTS.get(status)
    # The hint goes before Elasticsearch's text, which can be long enough to be clipped.
    failed = f"bulk request failed with HTTP {status}" + ("" if hint is None else f" ({hint})")
    reason = _clip(f"{failed}: {_error_text(error)}")
    # Below 400 means an answer that could not be read (e.g. not from Elasticsearch): no
    # verdict on the documents, so keep them.
    if hint is not None or status < 400 or status in _RETRY_STATUSES or status >= 500:
        return retry_all(count, reason)
    return dead_all(count, reason)


def _error_text(error: object) -> str:
    """``type: reason`` of an Elasticsearch error object, with its first cause."""
    if not isinstance(error, dict):
        return str(error) if error else "no error details"
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
    return text


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
