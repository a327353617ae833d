"""Helpers for tests that run the real Prometheus and Alertmanager (``serving._alerting``).

- ``WebhookReceiver``: an HTTP server that stores every Alertmanager webhook notification with
  the monotonic time it arrived, so a test can ask "has this alert reached a receiver yet?" and
  measure how long it took.
- ``PrometheusApi``: instant queries and the rule-evaluated alerts (``/api/v1/alerts``) of a
  running Prometheus, and ``AlertmanagerApi``: the active alerts (``/api/v2/alerts``).
- ``poll``: call a function until its answer is acceptable or a deadline passes; the failure
  message shows the last answer. Tests wait with it, never with a fixed sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
POLL_INTERVAL = 0.25


class PollTimeoutError(AssertionError):
    """A polled condition did not hold before its deadline."""


def poll(
    fetch: Callable[[], T],
    accept: Callable[[T], bool],
    timeout: float,
    what: str,
    *,
    between: Callable[[], None] | None = None,
) -> T:
    """``fetch()`` until ``accept`` holds for its answer; ``between`` runs after each miss.

    ``between`` lets a caller keep traffic flowing while it waits (it is then the pacing);
    without it the loop pauses ``POLL_INTERVAL`` between attempts.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fetch()
        if accept(last):
            return last
        if time.monotonic() > deadline:
            raise PollTimeoutError(f"{what}: not reached in {timeout:.0f} s; last answer: {last!r}")
        if between is not None:
            between()
        else:
            time.sleep(POLL_INTERVAL)


@dataclass(frozen=True, slots=True)
class Notification:
    """One webhook notification and when it arrived (``time.monotonic()``)."""

    received: float
    body: Mapping[str, Any]

    def alerts(self) -> list[Mapping[str, Any]]:
        """The alerts the notification carries (firing and resolved)."""
        return list(self.body.get("alerts", []))


class WebhookReceiver:
    """Collects Alertmanager webhook notifications posted to its ``url``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: list[Notification] = []
        self.url = ""

    def notifications(self) -> list[Notification]:
        """Every notification received so far, oldest first."""
        with self._lock:
            return list(self._notifications)

    def alerts(
        self, alertname: str, status: str | None = None, **labels: str
    ) -> list[tuple[float, Mapping[str, Any]]]:
        """``(arrival, alert)`` for each received alert of ``alertname`` with those labels."""
        found = []
        for note in self.notifications():
            for alert in note.alerts():
                alert_labels = alert.get("labels", {})
                if alert_labels.get("alertname") != alertname:
                    continue
                if status is not None and alert.get("status") != status:
                    continue
                if all(alert_labels.get(k) == v for k, v in labels.items()):
                    found.append((note.received, alert))
        return found

    def find(self, receiver: str, group: Mapping[str, str]) -> Mapping[str, Any] | None:
        """The first notification routed to ``receiver`` for the group ``group``, if any yet."""
        for note in self.notifications():
            if note.body.get("receiver") == receiver and note.body.get("groupLabels") == group:
                return note.body
        return None

    def _add(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            self._notifications.append(Notification(time.monotonic(), body))

    @contextmanager
    def serving(self) -> Iterator[WebhookReceiver]:
        """Listen on a free loopback port while the block runs."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver._add(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


class PrometheusApi:
    """The parts of Prometheus' HTTP API the tests read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client = httpx.Client(base_url=url, timeout=10.0)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant-vector (or scalar, as one sample) result of ``expr``, now or at ``at``."""
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        answer = self._client.get("/api/v1/query", params=params)
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}\n{body}")
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def values(self, expr: str, by: str, at: float | None = None) -> dict[str, float]:
        """``{label value: sample value}`` of ``expr``, keyed by the label ``by``."""
        return {s["metric"].get(by, ""): float(s["value"][1]) for s in self.query(expr, at)}

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts of the rule evaluation (``/api/v1/alerts``)."""
        return list(self._client.get("/api/v1/alerts").json()["data"]["alerts"])

    def targets_up(self) -> dict[str, float]:
        """``up`` of every target, keyed by ``job/namespace/pod``."""
        return {
            "/".join(s["metric"].get(k, "") for k in ("job", "namespace", "pod")): float(
                s["value"][1]
            )
            for s in self.query("up")
        }


class AlertmanagerApi:
    """Alertmanager's active alerts."""

    def __init__(self, url: str) -> None:
        self.url = url

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds now (active, silenced and inhibited ones alike)."""
        return list(httpx.get(f"{self.url}/api/v2/alerts", timeout=10.0).json())
