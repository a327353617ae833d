"""The demo's alerting: Prometheus and Alertmanager started beside it, and what it reads back.

The rules come from ``alerts.generate`` scaled to the demo's drift window; Alertmanager's
receivers notify no one, so the live view reads the alerts Alertmanager holds and the summary
reads Prometheus' ``ALERTS`` series. Without the binaries or an ``alerts/`` folder the demo runs
on without alerting; nothing here may stop it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from serving._alerting import (
    AlertingStack,
    AlertingUnavailableError,
    ScrapeTarget,
    start_repository_alerting,
)
from serving._demo_view import AlertView, parse_alertmanager, parse_fired

ALERTING_DIR = "alerting"
"""Sub-folder of the demo's output folder with Prometheus' and Alertmanager's files."""
NAMESPACE, POD = "demo", "demo-0"
"""The target labels the demo's scrape jobs carry, as a PodMonitor would set them."""

Say = Callable[[str], None]


async def active_alerts(
    client: httpx.AsyncClient, alertmanager: str | None
) -> tuple[AlertView, ...] | None:
    """The alerts Alertmanager would notify now (not silenced or inhibited); None without it."""
    if alertmanager is None:
        return None
    answer = await client.get(
        f"{alertmanager}/api/v2/alerts",
        params={"active": "true", "silenced": "false", "inhibited": "false"},
    )
    return parse_alertmanager(answer.json())


async def fired_alerts(
    client: httpx.AsyncClient, prometheus: str | None, seconds: float
) -> list[AlertView] | None:
    """Every alert that fired during the run, from Prometheus' ``ALERTS`` series."""
    if prometheus is None:
        return None
    query = f'max_over_time(ALERTS{{alertstate="firing"}}[{max(1, int(seconds) + 1)}s])'
    answer = await client.get(f"{prometheus}/api/v1/query", params={"query": query})
    return parse_fired(answer.json())


def start_alerting(
    alerts: Path,
    out: Path,
    *,
    window_seconds: float,
    rate: float,
    targets: tuple[str, str],
    say: Say,
) -> AlertingStack | None:
    """Prometheus and Alertmanager with the repository's rules scaled to the drift window.

    ``targets`` are the sidecar's metrics and the model server's ``host:port``. Without the
    binaries or an ``alerts/`` folder the demo runs on without alerting.
    """
    if not (alerts / "alertmanager.yaml").is_file():
        say(f"alerting: no {alerts}/alertmanager.yaml, so Prometheus and Alertmanager are off")
        return None
    labels = {"namespace": NAMESPACE, "pod": POD}
    sidecar, server = targets
    try:
        stack, config = start_repository_alerting(
            out / ALERTING_DIR,
            alerts,
            [
                ScrapeTarget("modelwatch-sidecar", sidecar, labels),
                ScrapeTarget("modelwatch-serving", server, labels),
            ],
            drift_window_seconds=window_seconds,
        )
    except AlertingUnavailableError as exc:
        say(f"alerting: off ({exc}; scripts/setup.sh installs them)")
        return None
    say(
        f"prometheus up (pid {stack.prometheus.pid}): {stack.prometheus_url}, rules scaled to a "
        f"{config.psi_window} drift window, for: {config.drift_for}, 1 s scrape and evaluation"
    )
    say(
        f"alertmanager up (pid {stack.alertmanager.pid}): {stack.alertmanager_url} "
        "(routes and inhibition of alerts/alertmanager.yaml, receivers notify no one)"
    )
    # The drift alerts need min_window_events values in the window (at one event per request).
    per_window = rate * config.psi_window.seconds
    if per_window < config.min_window_events:
        say(
            f"alerting: {per_window:g} events per {config.psi_window} window is below the drift "
            f"alerts' guard of {config.min_window_events}: they cannot fire at this rate"
        )
    return stack


def alerting_summary(
    fired: list[AlertView] | None, shifts: Sequence[Any], out: Path, say: Say
) -> None:
    """The summary's lines about alerting: what fired, and where Prometheus' data is."""
    if fired is None:
        return
    say("  alerts that fired (Prometheus ALERTS, whole run):")
    for alert in fired:
        say(f"    {alert}")
    if not fired:
        say("    none")
    shifted = {str(s.feature) for s in shifts}
    drift = {a.subject for a in fired if a.name == "ModelwatchFeatureDrift"}
    say(
        "  fleet PSI alert (ModelwatchFeatureDrift) fired for the shifted features: "
        f"{', '.join(sorted(drift & shifted)) or 'none'}; for others: "
        f"{', '.join(sorted(drift - shifted)) or 'none'}"
    )
    folder = out / ALERTING_DIR
    say(
        f"  Prometheus data: {folder / 'prometheus-data'} (rules in {folder / 'rules'}/); "
        f"browse it with prometheus --config.file={folder / 'prometheus.yml'} "
        f"--storage.tsdb.path={folder / 'prometheus-data'}"
    )
