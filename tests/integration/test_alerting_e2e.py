"""The alerting stack end to end: real sidecars, model server, Prometheus and Alertmanager.

One module-scoped stack serves every test: two sidecars (``python -m sidecar serve``) scraped as
pods ``shop-0`` and ``shop-1`` of namespace ``shop``, the demo model server in pod ``shop-0``,
a fake cAdvisor/DCGM exporter, Prometheus 2.42 with the repository's rules rendered by
``alerts.generate`` at 1/60 scale (1h windows become 1m, ``for: 15m`` becomes 15s) and
Alertmanager 0.25 with the repository's route tree and inhibition rules, every receiver
replaced by a webhook into the test. Events go straight to the sidecars' ingest API
(``POST /v1/events``), one model per concern so the tests do not disturb each other:
``credit`` (drift), ``pricing`` (latency), ``fleet`` (fleet PSI across two pods) and the demo
model ``breast-cancer`` (dashboard queries, through the model server).

Nothing waits a fixed time: every wait polls a condition with a deadline. Durations are never
asserted; the drift-onset-to-notification time is printed and written to ``timings.json`` in
the stack's folder.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from alerts.config import DEFAULT
from dashboards.grafana.queries import all_queries, substitute_variables
from serving import train
from serving._alerting import AlertingStack, Grouping, ScrapeTarget, start_repository_alerting
from serving._demo_processes import ManagedProcess, start_model_server, start_sidecar
from serving.loadgen import LoadConfig, TrafficPlan, load_rows, run_load
from sidecar.profile import Profile, dump_profile
from tests.support.alerting_stack import (
    AlertmanagerApi,
    PrometheusApi,
    WebhookReceiver,
    poll,
)
from tests.support.fake_exporters import FakeContainer, serve_fake_exporters
from tests.support.profiles import make_profile
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow

SCALE = 1 / 60
CONFIG = DEFAULT.scaled(SCALE)
WINDOW_SECONDS = CONFIG.psi_window.seconds
"""The sidecars' drift window matches the rules' PSI window (60 s), as in production (1 h)."""
NAMESPACE = "shop"
PODS = ("shop-0", "shop-1")
GROUPING = Grouping(group_wait="1s", group_interval="2s", repeat_interval="1h")
BATCH = 25
BATCH_SECONDS = 0.5
"""50 events/s per fed model: 3 000 per 1-minute window, six times the 500-event guard."""
EPSILON = 1e-4
DRIFT_ALERTS = ("ModelwatchFeatureDrift", "ModelwatchFeatureDriftKS", "ModelwatchPredictionDrift")
CREDIT_NUMERIC = ("income", "debt_ratio", "age", "tenure")
SHIFTED = frozenset({"debt_ratio", "tenure"})
SHIFT = 1.5
"""Shift of the drifted features, in standard deviations of the reference."""
SEGMENTS = ("retail", "business", "premium")
SEGMENT_P = (0.6, 0.3, 0.1)
ROOT = Path(__file__).resolve().parents[2]

Events = list[dict[str, Any]]


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


class Pacer:
    """Sends one batch per call, then waits out the rest of its period (the traffic's rate)."""

    def __init__(self, send: Callable[[], None], period: float = BATCH_SECONDS) -> None:
        self._send = send
        self._period = period
        self._next = time.monotonic()

    def __call__(self) -> None:
        self._send()
        self._next += self._period
        time.sleep(max(0.0, self._next - time.monotonic()))


def _credit_profile(rng: np.random.Generator) -> Profile:
    n = 20_000
    return make_profile(
        model="credit",
        numeric={name: rng.normal(0.0, 1.0, n) for name in CREDIT_NUMERIC},
        categorical={"segment": list(rng.choice(SEGMENTS, n, p=SEGMENT_P))},
        prediction=list(rng.choice(["approve", "reject"], n, p=(0.7, 0.3))),
        prediction_kind="categorical",
    )


def _credit_events(rng: np.random.Generator, n: int, shifted: frozenset[str]) -> Events:
    columns = {
        name: rng.normal(SHIFT if name in shifted else 0.0, 1.0, n) for name in CREDIT_NUMERIC
    }
    segments = rng.choice(SEGMENTS, n, p=SEGMENT_P)
    predictions = rng.choice(["approve", "reject"], n, p=(0.7, 0.3))
    return [
        {
            "latency_seconds": 0.01,
            "features": {
                **{name: float(col[i]) for name, col in columns.items()},
                "segment": str(segments[i]),
            },
            "prediction": str(predictions[i]),
        }
        for i in range(n)
    ]


def _simple_events(columns: Mapping[str, NDArray[np.float64]], latency: float) -> Events:
    n = len(next(iter(columns.values())))
    return [
        {
            "latency_seconds": latency,
            "features": {name: float(col[i]) for name, col in columns.items()},
            "prediction": None,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two sidecars, the model server, a fake exporter, Prometheus and Alertmanager, all running."""
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    folder = tmp_path_factory.mktemp("alerting")
    rng = np.random.default_rng(20261125)
    profiles = {
        "credit": _credit_profile(rng),
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


def _prom_drift_alerts(stack: Stack, model: str) -> list[dict[str, Any]]:
    return [
        a
        for a in stack.prom.alerts()
        if a["labels"]["alertname"] in DRIFT_ALERTS and a["labels"].get("model") == model
    ]


def test_no_drift_alert_while_traffic_matches_the_reference(stack: Stack) -> None:
    """Reference-like traffic keeps every drift alert silent once the guard and ``for:`` are met."""
    rng = np.random.default_rng(1)
    started = time.time()
    seen: list[dict[str, Any]] = []

    def feed_and_watch() -> None:
        stack.send(PODS[0], "credit", _credit_events(rng, BATCH, frozenset()))
        seen.extend(_prom_drift_alerts(stack, "credit"))

    guard = "namespace_model_version_feature:modelwatch_feature_bin_total:increase1h"
    # Every feature's fleet window held >= 500 values for the last 25 s: longer than the
    # 15 s ``for:`` plus an evaluation, so a drift alert would have had time to fire.
    held = f'count_over_time(({guard}{{model="credit"}} >= 500)[25s:1s])'
    features = {*CREDIT_NUMERIC, "segment"}
    poll(
        lambda: stack.prom.values(held, "feature"),
        lambda got: set(got) == features and min(got.values()) >= 20,
        120,
        "credit's drift guard met for 25 s",
        between=Pacer(feed_and_watch),
    )
    psi = stack.prom.values(
        'namespace_model_version_feature:modelwatch_feature_psi:fleet1h{model="credit"}', "feature"
    )
    assert set(psi) == features
    assert max(psi.values()) < CONFIG.psi_warning, psi
    phase = f"{int(time.time() - started) + 2}s"
    ever = stack.prom.query(
        f'max_over_time(ALERTS{{alertname=~"{"|".join(DRIFT_ALERTS)}", model="credit"}}[{phase}])'
    )
    assert ever == [], ever
    assert seen == []
    assert not any(stack.webhook.alerts(name, model="credit") for name in DRIFT_ALERTS)
    window = stack.prom.values(f'{guard}{{model="credit", feature="income"}}', "feature")
    stack.timings["no_drift"] = {
        "phase_seconds": round(time.time() - started, 1),
        "fleet_window_values_at_end": round(window["income"]),
        "max_fleet_psi": round(max(psi.values()), 4),
    }


def test_drift_alert_names_exactly_the_shifted_features(stack: Stack) -> None:
    """Two shifted features fire the fleet-PSI (paging, inhibiting KS) and KS alerts, no others."""
    rng = np.random.default_rng(2)
    onset_wall = time.time()
    onset = time.monotonic()
    pacer = Pacer(lambda: stack.send(PODS[0], "credit", _credit_events(rng, BATCH, SHIFTED)))

    def state() -> tuple[set[str], set[str]]:
        psi = {
            a["labels"]["feature"]
            for _, a in stack.webhook.alerts("ModelwatchFeatureDrift", "firing", model="credit")
        }
        ks = {
            a["labels"]["feature"]
            for a in _prom_drift_alerts(stack, "credit")
            if a["labels"]["alertname"] == "ModelwatchFeatureDriftKS" and a["state"] == "firing"
        }
        return psi, ks

    psi, ks = poll(
        state,
        lambda s: s[0] >= SHIFTED and s[1] >= SHIFTED,
        150,
        "drift alerts for the shifted features",
        between=pacer,
    )
    assert psi == SHIFTED
    assert ks == SHIFTED
    notified = stack.webhook.alerts("ModelwatchFeatureDrift", "firing", model="credit")
    firsts = {
        f: min(t for t, a in notified if a["labels"]["feature"] == f) - onset for f in SHIFTED
    }
    # Pending or firing drift alerts of credit name shifted features only.
    active = _prom_drift_alerts(stack, "credit")
    assert {a["labels"].get("feature") for a in active} <= SHIFTED, active
    assert not stack.webhook.alerts("ModelwatchPredictionDrift", model="credit")

    # Once the fleet PSI is critical, the per-pod KS warnings of those features are inhibited.
    def inhibited() -> set[str]:
        return {
            a["labels"]["feature"]
            for a in stack.am.alerts()
            if a["labels"]["alertname"] == "ModelwatchFeatureDriftKS"
            and a["labels"].get("model") == "credit"
            and a["status"]["inhibitedBy"]
        }

    assert poll(inhibited, lambda got: got >= SHIFTED, 60, "KS inhibited", between=pacer) == SHIFTED
    # Routing by severity: warnings go to chat, criticals page.
    routes = {"warning": "chat", "critical": "pager"}
    for note in stack.webhook.notifications():
        for alert in note.alerts():
            if alert["labels"].get("model") == "credit":
                assert note.body["receiver"] == routes[alert["labels"]["severity"]], note.body
    # When each warning rule turned pending: the window filled to PSI > 0.2 (plus a scrape
    # and an evaluation); it fires ``for:`` later, and Alertmanager waits ``group_wait``.
    pending = {
        a["labels"]["feature"]: round(_unix(a["activeAt"]) - onset_wall, 1)
        for a in active
        if a["labels"]["alertname"] == "ModelwatchFeatureDrift"
        and a["labels"]["severity"] == "warning"
    }
    stack.timings["drift"] = {
        "onset_unix": round(onset_wall, 3),
        "first_notification_seconds": round(min(firsts.values()), 1),
        "all_shifted_notified_seconds": round(max(firsts.values()), 1),
        "per_feature_seconds": {f: round(s, 1) for f, s in sorted(firsts.items())},
        "pending_after_seconds": pending,
        "config": {"window": str(CONFIG.psi_window), "for": str(CONFIG.drift_for), **_grouping()},
    }
    path = stack.save_timings()
    print(f"\ndrift onset -> webhook: {stack.timings['drift']} (written to {path})")


def test_latency_burn_fires_and_resolves(stack: Stack) -> None:
    """Slow predictions fire the fast latency budget burn; normal latency then resolves it."""
    rng = np.random.default_rng(3)
    latency = {"seconds": 0.01}
    pacer = Pacer(
        lambda: stack.send(
            PODS[0],
            "pricing",
            _simple_events({"amount": rng.normal(0, 1, BATCH)}, latency["seconds"]),
        )
    )
    fast = {"alertname": "ModelwatchLatencyBudgetBurn", "long_window": "1h", "short_window": "5m"}
    ratio = (
        'namespace_model_version:modelwatch_prediction_latency_slow:ratio_rate5m{model="pricing"}'
    )
    poll(
        lambda: stack.prom.values(ratio, "model"),
        lambda got: got.get("pricing") == 0.0,
        60,
        "pricing's slow ratio computed and 0",
        between=pacer,
    )
    assert not stack.webhook.alerts(**fast, model="pricing")
    latency["seconds"] = 1.0
    slow_from = time.monotonic()
    poll(
        lambda: stack.webhook.alerts(**fast, status="firing", model="pricing"),
        bool,
        90,
        "latency burn notification",
        between=pacer,
    )
    fired = time.monotonic()
    latency["seconds"] = 0.01
    resolved = poll(
        lambda: stack.webhook.alerts(**fast, status="resolved", model="pricing"),
        bool,
        90,
        "latency burn resolved notification",
        between=pacer,
    )
    assert resolved[0][1]["labels"]["severity"] == "critical"
    stack.timings["latency"] = {
        "slow_to_firing_notification_seconds": round(fired - slow_from, 1),
        "normal_to_resolved_notification_seconds": round(resolved[0][0] - fired, 1),
    }
    stack.save_timings()


def test_every_dashboard_query_returns_data(stack: Stack) -> None:
    """Each panel query of each dashboard returns at least one series from this Prometheus."""
    rows = load_rows("holdout", stack.model_dir)
    config = LoadConfig(url=stack.serving, model=train.MODEL_NAME, rate=20, duration=4.0)
    result = asyncio.run(run_load(config, rows, TrafficPlan("steady", seed=4)))
    assert result.ok == result.requests > 0
    # Labels for credit predictions turn the model-quality panels on.
    rng = np.random.default_rng(4)
    events = _credit_events(rng, 50, frozenset())
    stack.send(PODS[0], "credit", events)
    labels = [{"id": e["id"], "label": e["prediction"]} for e in events]
    answer = stack.http.post(
        f"{stack.ingest[PODS[0]]}/v1/feedback",
        json={"model": "credit", "version": "1", "labels": labels},
    )
    assert answer.status_code == 202, answer.text
    queries = [(uid, title, substitute_variables(expr)) for uid, title, expr in all_queries()]

    def empty() -> list[tuple[str, str, str]]:
        return [q for q in queries if not stack.prom.query(q[2])]

    missing = poll(empty, lambda left: not left, 60, "every panel query non-empty")
    assert missing == []
    # Non-empty, but every sample NaN (0/0: nothing happened that the panel counts).
    stack.timings["panel_queries_all_nan"] = [
        f"{uid} / {title}: {expr}"
        for uid, title, expr in queries
        if all(s["value"][1] == "NaN" for s in stack.prom.query(expr))
    ]
    stack.save_timings()


def _pooled_psi(profile: Profile, feature: str, columns: Sequence[NDArray[np.float64]]) -> float:
    """PSI of the pooled raw values against the profile (docs/statistics.md), computed here."""
    spec = next(f for f in profile.features if f.name == feature)
    edges = np.asarray(spec.psi_edges)  # type: ignore[union-attr]
    reference = np.asarray(spec.psi_shares)  # type: ignore[union-attr]
    pooled = np.concatenate(columns)
    counts = np.bincount(np.searchsorted(edges, pooled, side="left"), minlength=len(reference))
    return _psi(counts / counts.sum(), reference)


def _psi(current: NDArray[np.float64], reference: NDArray[np.float64]) -> float:
    c = np.where(current > 0, current, EPSILON)
    r = np.where(reference > 0, reference, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def test_fleet_psi_pools_the_pods_events(stack: Stack) -> None:
    """Fleet PSI over two pods fed different data equals the PSI of their pooled events."""
    rng = np.random.default_rng(5)
    sent = {
        PODS[0]: {"f0": rng.normal(0.0, 1.0, 3000), "f1": rng.normal(0.0, 1.0, 3000)},
        PODS[1]: {"f0": rng.normal(1.0, 1.0, 1000), "f1": rng.normal(-0.7, 1.3, 1000)},
    }
    for pod, columns in sent.items():
        stack.send(pod, "fleet", _simple_events(columns, 0.01))
    total = sum(len(c["f0"]) for c in sent.values())
    guard = 'namespace_model_version_feature:modelwatch_feature_bin_total:increase1h{model="fleet"}'
    poll(
        lambda: stack.prom.values(guard, "feature"),
        lambda got: len(got) == 2 and min(got.values()) >= total,
        60,
        "both pods' events inside the fleet window",
    )
    at = time.time()
    fleet = stack.prom.values(
        'namespace_model_version_feature:modelwatch_feature_psi:fleet1h{model="fleet"}',
        "feature",
        at,
    )
    profile = stack.profiles["fleet"]
    report = {}
    for feature in ("f0", "f1"):
        columns = [sent[pod][feature] for pod in PODS]
        expected = _pooled_psi(profile, feature, columns)
        tolerance = _extrapolation_tolerance(profile, feature, columns)
        per_pod = stack.prom.values(
            f'modelwatch_feature_psi{{model="fleet", feature="{feature}"}}', "pod", at
        )
        report[feature] = {
            "fleet": fleet[feature], "pooled": expected, "tolerance": tolerance, "pods": per_pod,
        }  # fmt: skip
        assert fleet[feature] == pytest.approx(expected, abs=tolerance), report
        for pod in PODS:
            # Each pod's own gauge is the PSI of its own events (same oracle, one pod).
            assert per_pod[pod] == pytest.approx(
                _pooled_psi(profile, feature, [sent[pod][feature]])
            )
            assert abs(fleet[feature] - per_pod[pod]) > 10 * tolerance, report
        assert abs(fleet[feature] - np.mean(list(per_pod.values()))) > 10 * tolerance, report
    stack.timings["fleet_psi"] = report
    stack.save_timings()


def _extrapolation_tolerance(
    profile: Profile, feature: str, columns: Sequence[NDArray[np.float64]]
) -> float:
    """How far the fleet PSI may sit from the pooled PSI, derived from how ``increase()`` works.

    ``increase(c[W])`` multiplies each series' sampled rise by (sampled span + extrapolated
    span) / sampled span. All series of one pod come from the same scrapes, so one factor
    ``k_p`` scales every bin of that pod alike; and because each counter's first sample in the
    window is 0 (the events arrived inside it), Prometheus extrapolates only towards the end,
    by less than 1.1 scrape intervals Δ: ``1 <= k_p < 1 + 1.1Δ / (W - 2.2Δ)`` (the sampled span
    is at least W minus an interval at each end). Shares pool the pods with weights ``k_p``, so
    the fleet share vector is the pooled one with the pods' relative weight ρ = k_1/k_0 off by at
    most that factor either way; the bound is the largest PSI change over such ρ.

    ``clamp_min(share, ε)`` differs from the sidecar's "replace empty shares by ε" only for
    shares in (0, ε): with fewer than 1/ε = 10 000 events every non-empty share is at least
    1/n > ε (checked here), and the reference shares are deciles, so the floor adds nothing.
    """
    delta, window = 1.0, float(WINDOW_SECONDS)
    k_max = 1 + 1.1 * delta / (window - 2.2 * delta)
    spec = next(f for f in profile.features if f.name == feature)
    edges = np.asarray(spec.psi_edges)  # type: ignore[union-attr]
    reference = np.asarray(spec.psi_shares)  # type: ignore[union-attr]
    counts = [
        np.bincount(np.searchsorted(edges, c, side="left"), minlength=len(reference))
        for c in columns
    ]
    assert sum(len(c) for c in columns) < 1 / EPSILON
    assert reference.min() > EPSILON
    base = _psi((counts[0] + counts[1]) / (len(columns[0]) + len(columns[1])), reference)
    worst = 0.0
    for rho in np.linspace(1 / k_max, k_max, 201):
        mixed = counts[0] + rho * counts[1]
        worst = max(worst, abs(_psi(mixed / mixed.sum(), reference) - base))
    return worst + 1e-9


def _unix(rfc3339: str) -> float:
    """Prometheus' nanosecond RFC 3339 time as Unix seconds (microsecond precision)."""
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}+00:00").timestamp()


def _grouping() -> dict[str, str]:
    return {"group_wait": GROUPING.group_wait, "group_interval": GROUPING.group_interval}
