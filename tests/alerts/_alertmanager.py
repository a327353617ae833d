"""A real Alertmanager under test: the repository's configuration, and a webhook.

``serving._alerting.local_alertmanager_config`` rewrites ``alerts/alertmanager.yaml`` so that a
test observes its notifications within seconds; ``Recorder`` is the webhook server they reach,
keeping each notification under the receiver Alertmanager routed it to. Waiting uses
``tests.support.alerting_stack.poll``, with a deadline, never a fixed time.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yaml"


def load_config() -> dict[str, Any]:
    """The repository's Alertmanager configuration, parsed."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


class Recorder(ThreadingHTTPServer):
    """Webhook server remembering each notification as (receiver name, payload)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.lock = threading.Lock()
        self.notifications: list[tuple[str, dict[str, Any]]] = []

    def find(self, receiver: str, group: dict[str, str]) -> dict[str, Any] | None:
        """The first notification to ``receiver`` of the group ``group``, if any came yet."""
        with self.lock:
            for name, payload in self.notifications:
                if name == receiver and payload["groupLabels"] == group:
                    return payload
        return None


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.notifications.append((str(payload["receiver"]), payload))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


def get(url: str) -> tuple[int, bytes]:
    """GET ``url``: its status and body, or ``(0, b"")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local test URL)
            return response.status, response.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""
