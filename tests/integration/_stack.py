"""The running alerting stack of the end-to-end tests: what it is made of and how it starts.

``running_stack`` starts two sidecars scraped as pods ``shop-0`` and ``shop-1`` of namespace
``shop``, the demo model server in pod ``shop-0``, a fake cAdvisor/DCGM exporter, Prometheus
with the repository's rules at 1/60 scale and Alertmanager with the repository's route tree,
every receiver replaced by a webhook into the test; it stops every process it started on exit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from alerts.config import DEFAULT
from serving import train
from serving._alerting import AlertingStack, Grouping, ScrapeTarget, start_repository_alerting
from serving._demo_processes import ManagedProcess, start_model_server, start_sidecar
from sidecar.profile import Profile, dump_profile
from tests.integration._traffic import Events, credit_profile
from tests.support.alerting_stack import (
    AlertmanagerApi,
    PrometheusApi,
    WebhookReceiver,
    poll,
)
from tests.support.fake_exporters import FakeContainer, serve_fake_exporters
from tests.support.profiles import make_profile

SCALE = 1 / 60
CONFIG = DEFAULT.scaled(SCALE)
WINDOW_SECONDS = CONFIG.psi_window.seconds
"""The sidecars' drift window matches the rules' PSI window (60 s), as in production (1 h)."""
NAMESPACE = "shop"
PODS = ("shop-0", "shop-1")
GROUPING = Grouping(group_wait="1s", group_interval="2s", repeat_interval="1h")
ROOT = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Stack:
    """The running stack and what the tests record."""

    folder: Path
    prom: PrometheusApi
    am: AlertmanagerApi
    webhook: WebhookReceiver
    ingest: Mapping[str, str]
    """Sidecar ingest URL by pod."""
    serving: str
    model_dir: Path
    profiles: Mapping[str, Profile]
    http: httpx.Client
    timings: dict[str, Any] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(10**9)))

    def send(self, pod: str, model: str, events: Events) -> None:
        """POST ``events`` of ``model`` (version 1) to the sidecar of ``pod``; all accepted."""
        for event in events:
            event.setdefault("id", f"{model}-{next(self._ids)}")
            event.setdefault("timestamp", time.time())
            event.setdefault("status", "ok")
        body = {"model": model, "version": "1", "events": events}
        answer = self.http.post(f"{self.ingest[pod]}/v1/events", json=body)
        assert answer.status_code == 202, answer.text
        assert not answer.json().get("rejected"), answer.text

    def save_timings(self) -> Path:
        """Write what was measured so far to ``timings.json``; returns its path."""
        path = self.folder / "timings.json"
        path.write_text(json.dumps(self.timings, indent=2, sort_keys=True) + "\n")
        return path


@contextmanager
def running_stack(folder: Path) -> Iterator[Stack]:
    """Start the whole stack with its files under ``folder``; stop it all on exit."""
    rng = np.random.default_rng(20261125)
    profiles = {
        "credit": credit_profile(rng),
        "pricing": make_profile(model="pricing", numeric={"amount": rng.normal(0, 1, 5000)}),
        "fleet": make_profile(
            model="fleet", numeric={f: rng.normal(0, 1, 20_000) for f in ("f0", "f1")}
        ),
    }
    paths = []
    for name, profile in profiles.items():
        paths.append(folder / f"{name}.json")
        dump_profile(profile, paths[-1])
    model_dir = train.build(folder / "model").directory
    processes: list[ManagedProcess] = []
    alerting: AlertingStack | None = None
    prom: PrometheusApi | None = None
    webhook = WebhookReceiver()
    containers = [
        FakeContainer(NAMESPACE, PODS[0], "model-server", gpu=True),
        FakeContainer(NAMESPACE, PODS[0], "modelwatch-sidecar"),
    ]
    with (
        webhook.serving(),
        serve_fake_exporters(containers) as exporter,
        httpx.Client(timeout=10.0) as http,
    ):
        try:
            ingest: dict[str, str] = {}
            targets = []
            for pod, pod_profiles in zip(
                PODS,
                ([*paths, model_dir / train.PROFILE_FILE], [folder / "fleet.json"]),
                strict=True,
            ):
                sidecar, in_port, metrics_port = start_sidecar(
                    pod_profiles,
                    folder / f"sidecar-{pod}.log",
                    spool_dir=folder / pod / "spool",
                    predictions_dir=folder / pod / "predictions",
                    window_seconds=WINDOW_SECONDS,
                    slot_seconds=1.0,
                )
                processes.append(sidecar)
                ingest[pod] = f"http://127.0.0.1:{in_port}"
                labels = {"namespace": NAMESPACE, "pod": pod}
                targets.append(
                    ScrapeTarget("modelwatch-sidecar", f"127.0.0.1:{metrics_port}", labels)
                )
            server, port = start_model_server(
                model_dir, folder / "serving.log", sidecar_url=ingest[PODS[0]]
            )
            processes.append(server)
            pod0 = {"namespace": NAMESPACE, "pod": PODS[0]}
            targets += [
                ScrapeTarget("modelwatch-serving", f"127.0.0.1:{port}", pod0),
                ScrapeTarget("kubernetes-cadvisor", exporter, honor_labels=True),
            ]
            alerting, config = start_repository_alerting(
                folder / "monitoring",
                ROOT / "alerts",
                targets,
                drift_window_seconds=WINDOW_SECONDS,
                webhook_url=webhook.url,
                grouping=GROUPING,
            )
            assert config == CONFIG
            prom = PrometheusApi(alerting.prometheus_url)
            # Prometheus 2.42 scrapes a new static target only after a few seconds.
            poll(prom.targets_up, lambda up: len(up) == 4 and all(up.values()), 60, "targets up")
            yield Stack(
                folder, prom, AlertmanagerApi(alerting.alertmanager_url), webhook, ingest,
                f"http://127.0.0.1:{port}", model_dir, profiles, http,
            )  # fmt: skip
        finally:
            if prom is not None:
                prom.close()
            if (folder / "timings.json").exists():
                print(f"\nalerting e2e timings ({folder / 'timings.json'}):")
                print((folder / "timings.json").read_text())
            if alerting is not None:
                alerting.stop()
            for process in reversed(processes):
                process.stop()
