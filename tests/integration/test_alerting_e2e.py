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

The stack is built by ``_stack``, the traffic by ``_traffic`` and the fleet PSI oracle lives in
``_psi_oracle``. Nothing waits a fixed time: every wait polls a condition with a deadline.
Durations are never asserted; the drift-onset-to-notification time is printed and written to
``timings.json`` in the stack's folder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import numpy as np
import pytest

from dashboards.grafana.queries import all_queries, substitute_variables
from serving import train
from serving.loadgen import LoadConfig, TrafficPlan, load_rows, run_load
from tests.integration._psi_oracle import extrapolation_tolerance, pooled_psi
from tests.integration._stack import CONFIG, GROUPING, PODS, WINDOW_SECONDS, Stack, running_stack
from tests.integration._traffic import (
    BATCH,
    CREDIT_NUMERIC,
    Pacer,
    credit_events,
    simple_events,
)
from tests.support.alerting_stack import poll
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow

DRIFT_ALERTS = ("ModelwatchFeatureDrift", "ModelwatchFeatureDriftKS", "ModelwatchPredictionDrift")
SHIFTED = frozenset({"debt_ratio", "tenure"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two sidecars, the model server, a fake exporter, Prometheus and Alertmanager, all running."""
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    with running_stack(tmp_path_factory.mktemp("alerting")) as running:
        yield running


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
        stack.send(PODS[0], "credit", credit_events(rng, BATCH, frozenset()))
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
    pacer = Pacer(lambda: stack.send(PODS[0], "credit", credit_events(rng, BATCH, SHIFTED)))

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
            simple_events({"amount": rng.normal(0, 1, BATCH)}, latency["seconds"]),
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
    events = credit_events(rng, 50, frozenset())
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


def test_fleet_psi_pools_the_pods_events(stack: Stack) -> None:
    """Fleet PSI over two pods fed different data equals the PSI of their pooled events."""
    rng = np.random.default_rng(5)
    sent = {
        PODS[0]: {"f0": rng.normal(0.0, 1.0, 3000), "f1": rng.normal(0.0, 1.0, 3000)},
        PODS[1]: {"f0": rng.normal(1.0, 1.0, 1000), "f1": rng.normal(-0.7, 1.3, 1000)},
    }
    for pod, columns in sent.items():
        stack.send(pod, "fleet", simple_events(columns, 0.01))
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
        expected = pooled_psi(profile, feature, columns)
        tolerance = extrapolation_tolerance(profile, feature, columns, float(WINDOW_SECONDS))
        per_pod = stack.prom.values(
            f'modelwatch_feature_psi{{model="fleet", feature="{feature}"}}', "pod", at
        )
        report[feature] = {
            "fleet": fleet[feature], "pooled": expected, "tolerance": tolerance, "pods": per_pod,
        }  # fmt: skip
        assert fleet[feature] == pytest.approx(expected, abs=tolerance), report
        for pod in PODS:
            # Each pod's own gauge is the PSI of its own events (same oracle, one pod).
            assert per_pod[pod] == pytest.approx(pooled_psi(profile, feature, [sent[pod][feature]]))
            assert abs(fleet[feature] - per_pod[pod]) > 10 * tolerance, report
        assert abs(fleet[feature] - np.mean(list(per_pod.values()))) > 10 * tolerance, report
    stack.timings["fleet_psi"] = report
    stack.save_timings()


def _unix(rfc3339: str) -> float:
    """Prometheus' nanosecond RFC 3339 time as Unix seconds (microsecond precision)."""
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}+00:00").timestamp()


def _grouping() -> dict[str, str]:
    return {"group_wait": GROUPING.group_wait, "group_interval": GROUPING.group_interval}
