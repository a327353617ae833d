"""Ground-truth labels: checked here, forwarded to the sidecar's ``POST /v1/feedback``.

A client sends ``{"labels": [{"id": <prediction id>, "label": <truth>}]}`` to
``POST /v1/models/{name}:feedback``; the ids are the ``ids`` the predict answer returned. The
envelope is validated locally (a 4xx naming the field); per-label problems are the sidecar's to
report in its answer, which is passed back as is. The sidecar being down, slow or failing is
never the client's fault and never hangs the request: a bounded timeout, then 503 (unreachable
or timed out) or 502 (it answered with an error), each naming the sidecar's reason.

The sidecar is reached at the model server's ``MODELWATCH_SIDECAR_URL``: ``http(s)://host:port``
over TCP, or ``unix:///path/to/ingest.sock`` over the Unix socket the pod's two containers share.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from serving.errors import RequestError
from sidecar.client import parse_url

FEEDBACK_PATH = "/v1/feedback"
UNIX_BASE_URL = "http://localhost"
"""The base URL of requests sent over a Unix socket: the ``Host`` the sidecar sees."""


def parse_labels(body: bytes, *, max_labels: int) -> list[dict[str, Any]]:
    """The ``labels`` of a feedback body; ``RequestError`` naming the bad field."""
    try:
        obj = orjson.loads(body) if body else None
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid_json", "", f"the body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestError(400, "invalid_body", "", "the body must be a JSON object with 'labels'")
    unknown = sorted(set(obj) - {"labels"})
    if unknown:
        raise RequestError(400, "unknown_field", unknown[0], "unknown field; expected 'labels'")
    labels = obj.get("labels")
    if not isinstance(labels, list) or not labels:
        raise RequestError(422, "invalid_type", "labels", "must be a non-empty array")
    if len(labels) > max_labels:
        raise RequestError(
            413, "too_many_labels", "labels", f"holds {len(labels)}; at most {max_labels}"
        )
    for index, item in enumerate(labels):
        if not isinstance(item, dict):
            raise RequestError(422, "invalid_type", f"labels[{index}]", "must be an object")
        if not isinstance(item.get("id"), str) or not item["id"]:
            raise RequestError(
                422,
                "invalid_type",
                f"labels[{index}].id",
                "must be the prediction id (a non-empty string)",
            )
        if item.get("label") is None:
            raise RequestError(422, "missing_field", f"labels[{index}].label", "is required")
    return labels


class FeedbackForwarder:
    """Posts labels to the sidecar over one pooled async HTTP client with a timeout."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        version: str,
        token: str | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._url = base_url + FEEDBACK_PATH
        socket_path = parse_url(base_url).socket_path
        if socket_path is not None:
            # One connection pool over the socket the pod's containers share; HTTP still
            # wants a host, which the sidecar ignores.
            if transport is None:
                transport = httpx.AsyncHTTPTransport(uds=socket_path)
            self._url = base_url  # the socket, as configured, in error messages
            base_url = UNIX_BASE_URL
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._model = model
        self._version = version
        self._timeout = timeout

    async def forward(self, labels: list[dict[str, Any]]) -> tuple[int, bytes]:
        """The sidecar's status and JSON answer; ``RequestError`` 502/503 when it fails."""
        body = orjson.dumps({"model": self._model, "version": self._version, "labels": labels})
        try:
            response = await self._client.post(FEEDBACK_PATH, content=body)
        except httpx.TimeoutException:
            raise RequestError(
                503,
                "sidecar_unavailable",
                "",
                f"the sidecar at {self._url} did not answer within {self._timeout:g} s",
            ) from None
        except httpx.HTTPError as exc:
            raise RequestError(
                503,
                "sidecar_unavailable",
                "",
                f"the sidecar at {self._url} is unreachable: {type(exc).__name__}: {exc}",
            ) from None
        if response.status_code >= 300:
            raise RequestError(
                502,
                "sidecar_error",
                "",
                f"the sidecar answered {response.status_code}: {_reason(response.content)}",
            )
        return response.status_code, response.content

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _reason(content: bytes) -> str:
    try:
        answer = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:300].decode(errors="replace") or "(empty body)"
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        field = error.get("field")
        return f"{field}: {error['message']}" if field else str(error["message"])
    return content[:300].decode(errors="replace")
