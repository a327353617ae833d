"""A real Alertmanager under test: the repository's configuration rewritten, and a webhook.

``with_webhook_receivers`` and ``with_short_group_wait`` rewrite ``alerts/alertmanager.yaml`` so
that a test observes its notifications within seconds; ``Recorder`` is the webhook server they
reach; ``poll`` waits for a condition with a deadline, never a fixed time.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yaml"
_T = TypeVar("_T")


def load_config() -> dict[str, Any]:
    """The repository's Alertmanager configuration, parsed."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


def with_webhook_receivers(config: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A copy of ``config`` whose receivers all post to ``base_url/<receiver name>``.

    Receiver names, the route tree and the inhibit rules are kept as they are, so the copy routes
    and inhibits exactly like the original while its notifications can be observed.
    """
    result = copy.deepcopy(config)
    result["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [{"url": f"{base_url}/{receiver['name']}", "send_resolved": True}],
        }
        for receiver in config["receivers"]
    ]
    return result


def with_short_group_wait(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose routes wait 1 s before a group's first notification.

    Only the timing changes (not what these tests pin): a group's first notification then comes
    within seconds instead of after the production wait of up to a minute.
    """
    result = copy.deepcopy(config)
    routes = [result["route"]]
    while routes:
        route = routes.pop()
        if "group_wait" in route:
            route["group_wait"] = "1s"
        routes.extend(route.get("routes", []))
    return result


def poll(probe: Callable[[], _T | None], what: str, timeout: float = 30.0) -> _T:
    """Call ``probe`` until it returns something other than None; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class Recorder(ThreadingHTTPServer):
    """Webhook server remembering each notification as (receiver path, payload)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.lock = threading.Lock()
        self.notifications: list[tuple[str, dict[str, Any]]] = []

    def find(self, receiver: str, group: dict[str, str]) -> dict[str, Any] | None:
        """The first notification to ``receiver`` of the group ``group``, if any came yet."""
        with self.lock:
            for path, payload in self.notifications:
                if path == receiver and payload["groupLabels"] == group:
                    return payload
        return None


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.notifications.append((self.path.strip("/"), payload))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(url: str) -> tuple[int, bytes]:
    """GET ``url``: its status and body, or ``(0, b"")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local test URL)
            return response.status, response.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""
