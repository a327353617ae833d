"""The Prometheus collector: the metrics contract, born-at-zero series, error isolation, lint."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from sidecar.columns import PREDICTION_KEY, STATUSES, EventColumns
from sidecar.counters import (
    EVENT_REJECT_REASONS,
    FEEDBACK_OUTCOMES,
    REQUEST_REJECT_REASONS,
    IngestCounters,
)
from sidecar.engine import EngineConfig, ModelMonitor
from sidecar.feedback import FeedbackStore
from sidecar.metrics import (
    ERROR_SOURCES,
    METRICS,
    ModelwatchCollector,
    MonitorView,
    build_registry,
)
from sidecar.monitors import MonitorRegistry
from sidecar.profile import CategoricalProfile, FeatureProfile, NumericProfile, Profile
from sidecar.snapshot import DriftSnapshot, FeatureCounters, FeatureDrift, MonitorCounters
from tests.support.profiles import make_profile
from tests.support.tools import promtool_check_metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
BUCKETS = (0.01, 0.1, 1.0)
MV = {"model": "m", "version": "1"}


def _profile(model: str = "m", version: str = "1") -> Profile:
    rng = np.random.default_rng(7)
    return make_profile(
        model=model,
        version=version,
        numeric={"age": rng.normal(40, 10, 2000)},
        categorical={"colour": rng.choice(["red", "green", "blue"], 2000).tolist()},
        prediction=rng.choice(["0", "1"], 2000).tolist(),
        prediction_kind="categorical",
    )


def _bins(feat: FeatureProfile) -> tuple[tuple[str, ...], np.ndarray]:
    if isinstance(feat, NumericProfile):
        return tuple(str(i) for i in range(len(feat.psi_shares))), feat.psi_shares
    assert isinstance(feat, CategoricalProfile)
    return (*feat.categories, "__other__"), feat.shares


def _zero_counters(feat: FeatureProfile) -> FeatureCounters:
    names, shares = _bins(feat)
    return FeatureCounters(
        feature=feat.name,
        bins=names,
        bin_totals=np.zeros(len(names), dtype=np.int64),
        reference_ratios=shares,
        missing=0,
        type_errors=0,
        out_of_range=0,
        unseen=0,
    )


def _nan_drift(feat: FeatureProfile) -> FeatureDrift:
    return FeatureDrift(
        feature=feat.name,
        kind=feat.kind,
        window_values=0,
        psi=math.nan,
        test="ks" if feat.kind == "numeric" else "chi2",
        statistic=math.nan,
        pvalue=math.nan,
        pvalue_adjusted=math.nan,
        drifted=False,
        error_bound=0.0,
    )


class FakeMonitor:
    """A monitor whose counters and drift are set by the test (the engine is tested elsewhere)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.fail_drift = False
        self.fail_counters = False
        assert profile.prediction is not None
        self.counter_state = MonitorCounters(
            model=profile.model,
            version=profile.version,
            predictions={},
            latency_buckets=BUCKETS,
            latency_bucket_counts=np.zeros(len(BUCKETS) + 1, dtype=np.int64),
            latency_sum=0.0,
            latency_count=0,
            unknown_features=0,
            features=tuple(_zero_counters(f) for f in profile.features),
            prediction=_zero_counters(profile.prediction),
        )
        self.drift_state = DriftSnapshot(
            model=profile.model,
            version=profile.version,
            computed_at=0.0,
            window_seconds=3600.0,
            window_events=0,
            correction="benjamini-hochberg",
            alpha=0.05,
            features=tuple(_nan_drift(f) for f in profile.features),
            prediction=_nan_drift(profile.prediction),
        )

    def counters(self) -> MonitorCounters:
        if self.fail_counters:
            raise RuntimeError("counters broke")
        return self.counter_state

    def drift(self) -> DriftSnapshot:
        if self.fail_drift:
            raise RuntimeError("drift broke")
        return self.drift_state


class BrokenCollector:
    """An extra collector that always fails, standing in for a broken shipper collector."""

    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("shipper collector broke")


class SpoolCollector:
    """An extra collector that works, standing in for the shipper's future metrics."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("modelwatch_test_extra", "An extra collector's gauge.", value=3.0)


def _registry(
    monitors: list[FakeMonitor],
    ingest: IngestCounters | None = None,
    feedback: FeedbackStore | None = None,
    **kwargs: object,
) -> CollectorRegistry:
    views: list[MonitorView] = list(monitors)
    collector = ModelwatchCollector(
        views,
        ingest or IngestCounters(),
        feedback or FeedbackStore(),
        build_version="9.9.9",
        **kwargs,  # type: ignore[arg-type]
    )
    return build_registry(collector)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class Scrape:
    """The samples of exactly one collection, for tests where each scrape changes a counter."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self._samples.get((name, tuple(sorted(labels.items()))))


def test_model_series_exist_at_zero_before_traffic() -> None:
    """Every per-model counter, bin, ratio and data-quality series is exported at 0 at start-up."""
    profile = _profile()
    registry = _registry([FakeMonitor(profile)])
    for status in STATUSES:
        assert _value(registry, "modelwatch_predictions_total", **MV, status=status) == 0
    assert _value(registry, "modelwatch_prediction_latency_seconds_count", **MV) == 0
    assert _value(registry, "modelwatch_prediction_latency_seconds_bucket", **MV, le="+Inf") == 0
    assert _value(registry, "modelwatch_unknown_features_total", **MV) == 0
    assert _value(registry, "modelwatch_drift_window_events", **MV) == 0
    for feat in profile.features:
        names, shares = _bins(feat)
        for name, share in zip(names, shares, strict=True):
            labels = {**MV, "feature": feat.name, "bin": name}
            assert _value(registry, "modelwatch_feature_bin_total", **labels) == 0
            assert _value(registry, "modelwatch_feature_reference_ratio", **labels) == share
        for metric in ("missing", "type_errors"):
            labels = {**MV, "feature": feat.name}
            assert _value(registry, f"modelwatch_feature_{metric}_total", **labels) == 0
    assert profile.prediction is not None
    pred_names, pred_shares = _bins(profile.prediction)
    for name, share in zip(pred_names, pred_shares, strict=True):
        assert _value(registry, "modelwatch_prediction_bin_total", **MV, bin=name) == 0
        assert _value(registry, "modelwatch_prediction_reference_ratio", **MV, bin=name) == share
    pred = {**MV, "feature": PREDICTION_KEY}
    assert _value(registry, "modelwatch_feature_missing_total", **pred) == 0
    assert _value(registry, "modelwatch_feature_unseen_categories_total", **pred) == 0


def test_reference_missing_ratio_is_exported_per_feature_and_output() -> None:
    """Each feature's and the output's share of missing reference values is exported as a gauge."""
    rng = np.random.default_rng(11)
    age = rng.normal(40, 10, 2000)
    age[:100] = np.nan  # 100 of 2000 reference rows missing
    colour: list[str | None] = rng.choice(["red", "green"], 2000).tolist()
    colour[:400] = [None] * 400  # 400 of 2000
    prediction: list[str | None] = rng.choice(["0", "1"], 2000).tolist()
    profile = make_profile(
        numeric={"age": age},
        categorical={"colour": colour},
        prediction=prediction,
        prediction_kind="categorical",
    )
    registry = _registry([FakeMonitor(profile)])
    name = "modelwatch_feature_reference_missing_ratio"
    assert _value(registry, name, **MV, feature="age") == pytest.approx(0.05)
    assert _value(registry, name, **MV, feature="colour") == pytest.approx(0.2)
    assert _value(registry, name, **MV, feature=PREDICTION_KEY) == 0.0


def test_range_and_unseen_counters_follow_the_feature_kind() -> None:
    """Out-of-range is exported for numeric features only, unseen categories for categoricals."""
    registry = _registry([FakeMonitor(_profile())])
    age, colour = {**MV, "feature": "age"}, {**MV, "feature": "colour"}
    assert _value(registry, "modelwatch_feature_out_of_range_total", **age) == 0
    assert _value(registry, "modelwatch_feature_unseen_categories_total", **age) is None
    assert _value(registry, "modelwatch_feature_unseen_categories_total", **colour) == 0
    assert _value(registry, "modelwatch_feature_out_of_range_total", **colour) is None


def test_undefined_statistics_are_exported_as_nan() -> None:
    """With too few window values PSI and test statistics are NaN and drift_detected is 0."""
    registry = _registry([FakeMonitor(_profile())])
    age, colour = {**MV, "feature": "age"}, {**MV, "feature": "colour"}
    for name in ("modelwatch_feature_psi", "modelwatch_feature_ks_statistic"):
        value = _value(registry, name, **age)
        assert value is not None
        assert math.isnan(value)
    chi2 = _value(registry, "modelwatch_feature_chi2_pvalue", **colour)
    assert chi2 is not None
    assert math.isnan(chi2)
    assert _value(registry, "modelwatch_feature_ks_pvalue", **colour) is None
    assert _value(registry, "modelwatch_feature_chi2_pvalue", **age) is None
    assert _value(registry, "modelwatch_feature_drift_detected", **age) == 0
    assert _value(registry, "modelwatch_prediction_drift_detected", **MV) == 0
    pred_psi = _value(registry, "modelwatch_prediction_psi", **MV)
    assert pred_psi is not None
    assert math.isnan(pred_psi)


def test_ingest_and_self_series_exist_at_zero() -> None:
    """Every ingest reason/outcome, every collector error source and build_info exist from start."""
    registry = _registry([])
    assert _value(registry, "modelwatch_events_received_total") == 0
    assert _value(registry, "modelwatch_events_accepted_total") == 0
    for reason in EVENT_REJECT_REASONS:
        assert _value(registry, "modelwatch_events_rejected_total", reason=reason) == 0
    for reason in REQUEST_REJECT_REASONS:
        assert _value(registry, "modelwatch_ingest_requests_rejected_total", reason=reason) == 0
    for outcome in FEEDBACK_OUTCOMES:
        assert _value(registry, "modelwatch_feedback_labels_total", outcome=outcome) == 0
    for source in ERROR_SOURCES:
        assert _value(registry, "modelwatch_collector_errors_total", source=source) == 0
    assert _value(registry, "modelwatch_build_info", version="9.9.9") == 1
    assert _value(registry, "modelwatch_collector_duration_seconds") is not None


def test_values_follow_the_monitor_counters() -> None:
    """Counters, bins, latency buckets and drift gauges carry the monitor's numbers unchanged."""
    monitor = FakeMonitor(_profile())
    c = monitor.counter_state
    age = replace(c.features[0], bin_totals=np.arange(len(c.features[0].bins)), out_of_range=4)
    monitor.counter_state = replace(
        c,
        predictions={"ok": 7, "error": 2},
        latency_bucket_counts=np.array([1, 5, 8, 9]),
        latency_sum=3.5,
        latency_count=9,
        unknown_features=11,
        features=(age, replace(c.features[1], missing=3, unseen=6)),
    )
    d = monitor.drift_state
    ks = replace(d.features[0], psi=0.3, statistic=0.25, pvalue=0.001, drifted=True)
    monitor.drift_state = replace(d, window_events=9, features=(ks, d.features[1]))
    registry = _registry([monitor])
    assert _value(registry, "modelwatch_predictions_total", **MV, status="ok") == 7
    assert _value(registry, "modelwatch_predictions_total", **MV, status="error") == 2
    expected_buckets = {"0.01": 1, "0.1": 5, "1.0": 8, "+Inf": 9}
    for le, count in expected_buckets.items():
        assert (
            _value(registry, "modelwatch_prediction_latency_seconds_bucket", **MV, le=le) == count
        )
    assert _value(registry, "modelwatch_prediction_latency_seconds_sum", **MV) == 3.5
    assert _value(registry, "modelwatch_prediction_latency_seconds_count", **MV) == 9
    assert _value(registry, "modelwatch_unknown_features_total", **MV) == 11
    assert _value(registry, "modelwatch_feature_bin_total", **MV, feature="age", bin="3") == 3
    assert _value(registry, "modelwatch_feature_out_of_range_total", **MV, feature="age") == 4
    assert _value(registry, "modelwatch_feature_missing_total", **MV, feature="colour") == 3
    assert (
        _value(registry, "modelwatch_feature_unseen_categories_total", **MV, feature="colour") == 6
    )
    assert _value(registry, "modelwatch_feature_psi", **MV, feature="age") == 0.3
    assert _value(registry, "modelwatch_feature_ks_statistic", **MV, feature="age") == 0.25
    assert _value(registry, "modelwatch_feature_ks_pvalue", **MV, feature="age") == 0.001
    assert _value(registry, "modelwatch_feature_drift_detected", **MV, feature="age") == 1
    assert _value(registry, "modelwatch_drift_window_events", **MV) == 9


def test_latency_buckets_listing_inf_explicitly_are_not_doubled() -> None:
    """An engine that lists +Inf among its bounds gets exactly one +Inf bucket."""
    monitor = FakeMonitor(_profile())
    monitor.counter_state = replace(
        monitor.counter_state,
        latency_buckets=(*BUCKETS, math.inf),
        latency_bucket_counts=np.array([0, 1, 2, 2]),
        latency_count=2,
    )
    registry = _registry([monitor])
    samples = [
        s
        for family in registry.collect()
        for s in family.samples
        if s.name == "modelwatch_prediction_latency_seconds_bucket"
    ]
    assert [s.labels["le"] for s in samples] == ["0.01", "0.1", "1.0", "+Inf"]


def test_ingest_counters_are_exported() -> None:
    """Ingest totals and per-reason counts come straight from IngestCounters."""
    ingest = IngestCounters(events_received=10, events_accepted=8)
    ingest.reject_event("invalid_type", 2)
    ingest.reject_request("too_large")
    ingest.feedback("joined", 5)
    registry = _registry([], ingest=ingest)
    assert _value(registry, "modelwatch_events_received_total") == 10
    assert _value(registry, "modelwatch_events_accepted_total") == 8
    assert _value(registry, "modelwatch_events_rejected_total", reason="invalid_type") == 2
    assert _value(registry, "modelwatch_ingest_requests_rejected_total", reason="too_large") == 1
    assert _value(registry, "modelwatch_feedback_labels_total", outcome="joined") == 5


def test_quality_gauges_come_from_feedback() -> None:
    """Accuracy and the labelled count appear once feedback labels are joined, not before."""
    feedback = FeedbackStore()
    registry = _registry([], feedback=feedback)
    assert _value(registry, "modelwatch_model_accuracy", **MV) is None
    feedback.remember("m", "1", ["a", "b", "c", "d"], ["1", "0", "1", "1"])
    feedback.label("m", "1", [("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")])
    assert _value(registry, "modelwatch_model_accuracy", **MV) == 0.75
    assert _value(registry, "modelwatch_model_labelled_predictions", **MV) == 4
    assert _value(registry, "modelwatch_model_mean_absolute_error", **MV) is None


def test_regression_quality_is_mean_absolute_error() -> None:
    """A numeric prediction's quality is exported as modelwatch_model_mean_absolute_error."""
    feedback = FeedbackStore()
    feedback.remember("m", "1", ["a", "b"], np.array([1.0, 3.0]))
    feedback.label("m", "1", [("a", 2.0), ("b", 2.0)])
    registry = _registry([], feedback=feedback)
    assert _value(registry, "modelwatch_model_mean_absolute_error", **MV) == 1.0
    assert _value(registry, "modelwatch_model_accuracy", **MV) is None


def test_failing_drift_drops_only_that_monitors_drift() -> None:
    """A monitor whose drift() raises loses its drift gauges, counts an error; the scrape works."""
    broken, healthy = FakeMonitor(_profile("a")), FakeMonitor(_profile("b"))
    broken.fail_drift = True
    registry = _registry([broken, healthy])
    scrape = Scrape(registry)
    assert scrape.value("modelwatch_drift_window_events", model="a", version="1") is None
    assert scrape.value("modelwatch_drift_window_events", model="b", version="1") == 0
    assert scrape.value("modelwatch_predictions_total", model="a", version="1", status="ok") == 0
    assert scrape.value("modelwatch_collector_errors_total", source="drift") == 1
    assert scrape.value("modelwatch_collector_errors_total", source="counters") == 0
    assert Scrape(registry).value("modelwatch_collector_errors_total", source="drift") == 2


def test_failing_counters_leave_no_partial_series() -> None:
    """Counters that fail half-way add none of that monitor's counter series."""
    monitor = FakeMonitor(_profile())
    bad_feature = replace(monitor.counter_state.features[0], bins=("only-one",))
    monitor.counter_state = replace(
        monitor.counter_state, features=(bad_feature, *monitor.counter_state.features[1:])
    )
    scrape = Scrape(_registry([monitor]))
    assert scrape.value("modelwatch_predictions_total", **MV, status="ok") is None
    assert scrape.value("modelwatch_prediction_latency_seconds_count", **MV) is None
    assert scrape.value("modelwatch_collector_errors_total", source="counters") == 1
    assert scrape.value("modelwatch_drift_window_events", **MV) == 0


def test_extra_collectors_are_exported_and_guarded() -> None:
    """Extra collectors' families are exposed; a failing one only bumps the error counter."""
    registry = _registry([], extra=[BrokenCollector(), SpoolCollector()])
    scrape = Scrape(registry)
    assert scrape.value("modelwatch_test_extra") == 3
    assert scrape.value("modelwatch_collector_errors_total", source="extra") == 1
    assert b"modelwatch_test_extra 3.0" in generate_latest(registry)


def test_describe_lists_every_contract_metric() -> None:
    """describe() names every metric of the contract, so registries can detect clashes."""
    collector = ModelwatchCollector([], IngestCounters(), FeedbackStore(), build_version="x")
    assert [family.name for family in collector.describe()] == [
        spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
        for spec in METRICS
    ]


def test_labels_are_bounded_names() -> None:
    """Every label name of the contract is one of the bounded label names of the design."""
    allowed = {"model", "version", "feature", "bin", "status", "reason", "outcome", "source"}
    for spec in METRICS:
        assert set(spec.labels) <= allowed, spec.name
        assert spec.name.startswith("modelwatch_"), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name


def test_every_metric_is_documented() -> None:
    """docs/metrics.md has a section for every metric of the contract."""
    text = DOCS.read_text(encoding="utf-8")
    missing = [spec.name for spec in METRICS if f"`{spec.name}`" not in text]
    assert missing == []


def test_exposition_passes_promtool() -> None:
    """The full exposition, with traffic and quality, passes promtool check metrics cleanly."""
    monitor = FakeMonitor(_profile())
    monitor.counter_state = replace(monitor.counter_state, predictions={"ok": 3})
    feedback = FeedbackStore()
    feedback.remember("m", "1", ["a"], ["1"])
    feedback.label("m", "1", [("a", "1")])
    registry = _registry([monitor], feedback=feedback)
    result = promtool_check_metrics(generate_latest(registry))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("source", ["counters", "drift"])
def test_scrape_never_fails(source: str) -> None:
    """A broken monitor source still yields a complete, parseable exposition."""
    monitor = FakeMonitor(_profile())
    setattr(monitor, f"fail_{source}", True)
    registry = _registry([monitor])
    text = generate_latest(registry).decode()
    assert "modelwatch_build_info" in text
    assert f'modelwatch_collector_errors_total{{source="{source}"}} 1.0' in text


# --------------------------------------------------------------------------- real drift engine


def _batch(ages: np.ndarray, colours: list[str], predictions: list[str]) -> EventColumns:
    n = len(ages)
    return EventColumns(
        n=n,
        ids=[f"e{i}" for i in range(n)],
        latency_seconds=np.full(n, 0.02),
        status_counts={"ok": n},
        numeric={"age": ages},
        categorical={"colour": list(colours)},
        prediction=list(predictions),
        missing={},
        type_errors={},
    )


def _real_registry(profile: Profile) -> tuple[ModelMonitor, CollectorRegistry]:
    config = EngineConfig(min_window_values=50, snapshot_ttl_seconds=0.0)
    monitor = ModelMonitor(profile, config, clock=lambda: 1_000.0)
    collector = ModelwatchCollector(
        MonitorRegistry([monitor]), IngestCounters(), FeedbackStore(), build_version="t"
    )
    return monitor, build_registry(collector)


def test_real_monitor_batch_reaches_the_exposition() -> None:
    """A batch observed by the real engine shows up as counts, bins and an independent PSI."""
    profile = _profile()
    monitor, registry = _real_registry(profile)
    rng = np.random.default_rng(11)
    ages = rng.normal(55, 10, 400)
    colours = rng.choice(["red", "green", "blue", "purple"], 400).tolist()
    monitor.observe(_batch(ages, colours, rng.choice(["0", "1"], 400).tolist()))
    scrape = Scrape(registry)
    assert scrape.value("modelwatch_predictions_total", **MV, status="ok") == 400
    assert scrape.value("modelwatch_prediction_latency_seconds_count", **MV) == 400
    assert scrape.value("modelwatch_drift_window_events", **MV) == 400
    age = profile.feature("age")
    assert isinstance(age, NumericProfile)
    expected = np.bincount(
        np.searchsorted(age.psi_edges, ages, side="left"), minlength=len(age.psi_shares)
    )
    exported = [
        scrape.value("modelwatch_feature_bin_total", **MV, feature="age", bin=str(i))
        for i in range(len(age.psi_shares))
    ]
    assert exported == expected.tolist()
    current = np.where(expected == 0, 1e-4, expected / expected.sum())
    reference = np.where(age.psi_shares == 0, 1e-4, age.psi_shares)
    psi = float(np.sum((current - reference) * np.log(current / reference)))
    assert scrape.value("modelwatch_feature_psi", **MV, feature="age") == pytest.approx(psi)
    unseen = scrape.value("modelwatch_feature_unseen_categories_total", **MV, feature="colour")
    assert unseen == colours.count("purple")
    assert scrape.value("modelwatch_feature_drift_detected", **MV, feature="age") == 1


def test_many_distinct_categories_add_no_series() -> None:
    """A batch of 10 000 distinct unseen categories changes values, never the set of series."""
    profile = _profile()
    monitor, registry = _real_registry(profile)

    def series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        return {
            (s.name, tuple(sorted(s.labels.items())))
            for family in registry.collect()
            for s in family.samples
        }

    before = series()
    n = 10_000
    colours = [f"colour-{i}" for i in range(n)]
    monitor.observe(_batch(np.full(n, 40.0), colours, ["1"] * n))
    assert series() == before
    unseen = _value(registry, "modelwatch_feature_unseen_categories_total", **MV, feature="colour")
    assert unseen == n
