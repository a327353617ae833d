"""The repository's Alertmanager configuration for the tests, and a tolerant HTTP GET.

The live tests rewrite it with ``serving._alerting.local_alertmanager_config`` and collect its
notifications with ``tests.support.alerting_stack.WebhookReceiver``.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yaml"


def load_config() -> dict[str, Any]:
    """The repository's Alertmanager configuration, parsed."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


def get(url: str) -> tuple[int, bytes]:
    """GET ``url``: its status and body, or ``(0, b"")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local test URL)
            return response.status, response.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""
