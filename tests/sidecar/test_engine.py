"""The drift engine end to end: observe batches, then check drift and counters against scipy."""

from __future__ import annotations

import dataclasses
import math
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest
from scipy import stats as sps

from sidecar import stats
from sidecar.columns import PREDICTION_KEY, EventColumns
from sidecar.engine import EngineConfig, ModelMonitor
from sidecar.errors import ConfigError
from sidecar.profile import OTHER, NumericProfile
from tests.support.profiles import make_profile


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_batch(
    numeric: Mapping[str, np.ndarray] | None = None,
    categorical: Mapping[str, Sequence[str | None]] | None = None,
    prediction: np.ndarray | Sequence[str | None] | None = None,
    latency: np.ndarray | None = None,
    status: Mapping[str, int] | None = None,
    missing: Mapping[str, int] | None = None,
    type_errors: Mapping[str, int] | None = None,
    unknown_features: int = 0,
) -> EventColumns:
    """An EventColumns batch; ``n`` is the length of the first column given."""
    numeric = {k: np.asarray(v, dtype=np.float64) for k, v in (numeric or {}).items()}
    categorical = dict(categorical or {})
    lengths = [len(v) for v in numeric.values()] + [len(v) for v in categorical.values()]
    if prediction is not None:
        lengths.append(len(prediction))
    n = lengths[0] if lengths else 0
    return EventColumns(
        n=n,
        ids=[str(i) for i in range(n)],
        latency_seconds=np.zeros(n) if latency is None else np.asarray(latency, dtype=np.float64),
        status_counts={"ok": n} if status is None else dict(status),
        numeric=numeric,
        categorical=categorical,
        prediction=prediction,
        missing=dict(missing or {}),
        type_errors=dict(type_errors or {}),
        unknown_features=unknown_features,
    )


def monitor_for(
    profile_kwargs: dict[str, object], **config: object
) -> tuple[ModelMonitor, FakeClock]:
    clock = FakeClock()
    profile = make_profile(**profile_kwargs)  # type: ignore[arg-type]
    return ModelMonitor(profile, EngineConfig(**config), clock), clock  # type: ignore[arg-type]


def exact_ks(reference: np.ndarray, window: np.ndarray) -> float:
    return float(sps.ks_2samp(reference, window, method="asymp").statistic)


# --------------------------------------------------------------------------- KS and PSI accuracy


_Draw = Callable[[np.random.Generator], np.ndarray]

_DISTRIBUTIONS: dict[str, tuple[_Draw, _Draw]] = {
    "normal-shifted": (lambda r: r.normal(0, 1, 3000), lambda r: r.normal(0.3, 1, 1500)),
    "lognormal-scaled": (
        lambda r: r.lognormal(0, 1, 3000),
        lambda r: 1.5 * r.lognormal(0, 1, 1500),
    ),
    "same-uniform": (lambda r: r.uniform(0, 1, 3000), lambda r: r.uniform(0, 1, 1500)),
    "poisson-ties": (lambda r: r.poisson(4.0, 3000), lambda r: r.poisson(4.5, 1500)),
    "point-mass-mixture": (
        lambda r: np.where(r.uniform(size=3000) < 0.3, 0.0, r.exponential(1, 3000)),
        lambda r: np.where(r.uniform(size=1500) < 0.5, 0.0, r.exponential(1, 1500)),
    ),
}


@pytest.mark.parametrize("name", sorted(_DISTRIBUTIONS))
def test_ks_from_engine_is_within_documented_bound_of_scipy(name: str) -> None:
    """Engine D lies in [D_exact − error_bound, D_exact] and its p-value is ks_pvalue of that D."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    make_ref, make_win = _DISTRIBUTIONS[name]
    reference, window = make_ref(rng).astype(float), make_win(rng).astype(float)
    monitor, _ = monitor_for({"numeric": {"x": reference}})
    monitor.observe(make_batch(numeric={"x": window}))
    drift = monitor.drift().features[0]
    exact = exact_ks(reference, window)
    assert drift.test == "ks"
    assert drift.statistic <= exact + 1e-12
    assert exact <= drift.statistic + drift.error_bound + 1e-12
    ref_profile = monitor.profile.features[0]
    assert isinstance(ref_profile, NumericProfile)
    assert drift.error_bound == pytest.approx(float(np.max(ref_profile.ks_shares)))
    expected_p = stats.ks_pvalue(drift.statistic, window.size, reference.size)
    assert drift.pvalue == pytest.approx(float(expected_p), rel=1e-12)


def test_ks_is_exact_when_every_value_is_a_fine_edge() -> None:
    """With fewer distinct reference values than fine bins, D equals scipy's D exactly."""
    rng = np.random.default_rng(4)
    reference = rng.integers(0, 10, 3000).astype(float)
    window = rng.integers(0, 12, 1500).astype(float)  # 10 and 11 lie above the reference max
    monitor, _ = monitor_for({"numeric": {"x": reference}})
    monitor.observe(make_batch(numeric={"x": window}))
    drift = monitor.drift().features[0]
    result = sps.ks_2samp(reference, window, method="asymp")
    assert drift.statistic == pytest.approx(result.statistic, abs=1e-12)
    assert drift.pvalue == pytest.approx(result.pvalue, rel=1e-12)


def test_psi_from_engine_equals_numpy_on_profile_bins() -> None:
    """Engine PSI equals the direct formula on the window's PSI-bin counts, to 1e-9."""
    rng = np.random.default_rng(8)
    reference = rng.gamma(2.0, 1.0, 5000)
    window = rng.gamma(2.4, 1.1, 800)
    monitor, _ = monitor_for({"numeric": {"x": reference}})
    monitor.observe(make_batch(numeric={"x": window}))
    feat = monitor.profile.features[0]
    assert isinstance(feat, NumericProfile)
    counts = np.bincount(np.searchsorted(feat.psi_edges, window), minlength=len(feat.psi_shares))
    shares = counts / counts.sum()
    c = np.where(shares == 0, 1e-4, shares)
    r = np.where(feat.psi_shares == 0, 1e-4, feat.psi_shares)
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert monitor.drift().features[0].psi == pytest.approx(expected, abs=1e-9)


def test_psi_falls_back_when_psi_edges_are_not_fine_edges() -> None:
    """A hand-edited profile whose PSI edges are not KS edges still gets exact PSI-bin counts."""
    rng = np.random.default_rng(9)
    reference = rng.normal(size=2000)
    profile = make_profile(numeric={"x": reference})
    feat = profile.features[0]
    assert isinstance(feat, NumericProfile)
    moved = dataclasses.replace(feat, psi_edges=feat.psi_edges + 1e-3)
    monitor = ModelMonitor(dataclasses.replace(profile, features=(moved,)), EngineConfig())
    window = rng.normal(size=500)
    monitor.observe(make_batch(numeric={"x": window}))
    expected = np.bincount(np.searchsorted(moved.psi_edges, window), minlength=10)
    assert np.array_equal(monitor.counters().features[0].bin_totals, expected)
    assert monitor.drift().features[0].psi == pytest.approx(
        stats.psi(expected, moved.psi_shares), abs=1e-12
    )


# --------------------------------------------------------------------------- drift decisions


def _six_features(
    rng: np.random.Generator, shifts: Mapping[str, float], n: int
) -> dict[str, np.ndarray]:
    return {f"f{i}": rng.normal(shifts.get(f"f{i}", 0.0), 1, n) for i in range(6)}


def test_same_distribution_is_not_drifted() -> None:
    """A window drawn from the reference distribution flags no feature."""
    rng = np.random.default_rng(12)
    monitor, _ = monitor_for({"numeric": _six_features(rng, {}, 5000)})
    monitor.observe(make_batch(numeric=_six_features(rng, {}, 2000)))
    snapshot = monitor.drift()
    assert not any(f.drifted for f in snapshot.features)
    assert all(f.psi < 0.02 for f in snapshot.features)


@pytest.mark.parametrize("correction", ["benjamini-hochberg", "bonferroni"])
def test_only_shifted_features_are_flagged_after_correction(correction: str) -> None:
    """Shifted features are flagged, others not, and adjusted p-values are the chosen correction."""
    rng = np.random.default_rng(13)
    monitor, _ = monitor_for({"numeric": _six_features(rng, {}, 5000)}, correction=correction)
    monitor.observe(make_batch(numeric=_six_features(rng, {"f1": 0.5, "f4": -0.4}, 1000)))
    snapshot = monitor.drift()
    assert snapshot.correction == correction
    assert [f.feature for f in snapshot.features if f.drifted] == ["f1", "f4"]
    raw = np.array([f.pvalue for f in snapshot.features])
    adjusted = np.array([f.pvalue_adjusted for f in snapshot.features])
    if correction == "bonferroni":
        assert np.allclose(adjusted, np.minimum(raw * 6, 1.0))
    else:
        assert np.allclose(adjusted, sps.false_discovery_control(raw))


def test_correction_changes_the_decision_near_alpha() -> None:
    """A p-value just under alpha is not flagged once corrected across several features."""
    rng = np.random.default_rng(14)
    monitor, _ = monitor_for({"numeric": _six_features(rng, {}, 5000)}, correction="bonferroni")
    for shift in np.linspace(0.0, 0.3, 61):
        monitor = ModelMonitor(monitor.profile, monitor.config, FakeClock())
        monitor.observe(
            make_batch(numeric=_six_features(np.random.default_rng(1), {"f0": shift}, 800))
        )
        f0 = monitor.drift().features[0]
        if 0.01 < f0.pvalue < 0.05:
            assert f0.pvalue_adjusted == pytest.approx(min(1.0, 6 * f0.pvalue))
            assert not f0.drifted
            return
    pytest.fail("no shift gave a p-value between 0.01 and 0.05")


def test_prediction_is_tested_on_its_own() -> None:
    """A drifted categorical prediction is flagged with its raw p-value, uncorrected."""
    rng = np.random.default_rng(15)
    reference = {"x": rng.normal(size=3000)}
    labels = list(rng.choice(["0", "1"], size=3000, p=[0.7, 0.3]))
    monitor, _ = monitor_for(
        {"numeric": reference, "prediction": labels, "prediction_kind": "categorical"}
    )
    window_labels = list(rng.choice(["0", "1"], size=600, p=[0.5, 0.5]))
    monitor.observe(make_batch(numeric={"x": rng.normal(size=600)}, prediction=window_labels))
    snapshot = monitor.drift()
    assert snapshot.prediction is not None
    assert snapshot.prediction.test == "chi2"
    assert snapshot.prediction.drifted
    assert snapshot.prediction.pvalue_adjusted == snapshot.prediction.pvalue
    assert not snapshot.features[0].drifted
    assert snapshot.features[0].pvalue_adjusted == snapshot.features[0].pvalue


def test_numeric_prediction_drift_uses_ks() -> None:
    """A shifted numeric prediction is tested with KS and flagged."""
    rng = np.random.default_rng(16)
    monitor, _ = monitor_for(
        {"numeric": {"x": rng.normal(size=2000)}, "prediction": rng.normal(size=2000)}
    )
    monitor.observe(
        make_batch(numeric={"x": rng.normal(size=500)}, prediction=rng.normal(1, 1, 500))
    )
    prediction = monitor.drift().prediction
    assert prediction is not None
    assert prediction.test == "ks"
    assert prediction.drifted


def test_min_window_values_gates_the_statistics() -> None:
    """Below the minimum the statistics are NaN and nothing is flagged; at it they appear."""
    rng = np.random.default_rng(17)
    monitor, _ = monitor_for(
        {"numeric": {"x": rng.normal(size=2000)}}, min_window_values=100, snapshot_ttl_seconds=0.0
    )
    monitor.observe(make_batch(numeric={"x": rng.normal(5, 1, 99)}))
    few = monitor.drift().features[0]
    assert few.window_values == 99
    assert math.isnan(few.psi)
    assert math.isnan(few.statistic)
    assert math.isnan(few.pvalue)
    assert math.isnan(few.pvalue_adjusted)
    assert not few.drifted
    monitor.observe(make_batch(numeric={"x": rng.normal(5, 1, 1)}))
    enough = monitor.drift().features[0]
    assert enough.window_values == 100
    assert enough.drifted


def test_untested_features_do_not_count_in_the_correction() -> None:
    """A feature with too few values is left out of the Benjamini–Hochberg family."""
    rng = np.random.default_rng(18)
    monitor, _ = monitor_for({"numeric": {"a": rng.normal(size=2000), "b": rng.normal(size=2000)}})
    monitor.observe(make_batch(numeric={"a": rng.normal(0.2, 1, 500), "b": np.full(500, np.nan)}))
    a, b = monitor.drift().features
    assert b.window_values == 0
    assert a.pvalue_adjusted == a.pvalue


# --------------------------------------------------------------------------- categorical


def test_categorical_chi_square_and_unseen_values() -> None:
    """Unlisted categories go to __other__ and count as unseen; chi-square matches scipy."""
    rng = np.random.default_rng(19)
    reference = list(rng.choice(["a", "b", "c"], size=3000, p=[0.5, 0.3, 0.2]))
    window = list(rng.choice(["a", "b", "c", "new"], size=400, p=[0.45, 0.3, 0.2, 0.05]))
    window[:5] = [None] * 5
    monitor, _ = monitor_for({"categorical": {"c": reference}})
    monitor.observe(make_batch(categorical={"c": window}, missing={"c": 5}))
    counters = monitor.counters().features[0]
    assert counters.bins == ("a", "b", "c", OTHER)
    expected = [window.count(k) for k in ("a", "b", "c")] + [window.count("new")]
    assert counters.bin_totals.tolist() == expected
    assert counters.unseen == window.count("new")
    assert counters.missing == 5
    drift = monitor.drift().features[0]
    shares = np.where(counters.reference_ratios == 0, 1e-4, counters.reference_ratios)
    shares /= shares.sum()
    oracle = sps.chisquare(expected, np.sum(expected) * shares)
    assert drift.test == "chi2"
    assert drift.error_bound == 0.0
    assert drift.window_values == 395
    assert drift.statistic == pytest.approx(oracle.statistic, rel=1e-12)
    assert drift.pvalue == pytest.approx(oracle.pvalue, rel=1e-9, abs=1e-300)
    assert drift.drifted


# --------------------------------------------------------------------------- counters


def test_missing_type_errors_and_out_of_range_are_counted() -> None:
    """Missing and type errors come from the batch; out-of-range means below min or above max."""
    rng = np.random.default_rng(20)
    reference = rng.uniform(0, 10, 1000)
    monitor, _ = monitor_for(
        {
            "numeric": {"x": reference},
            "categorical": {"c": ["p", "q"] * 50},
            "prediction": reference,
        }
    )
    feat = monitor.profile.features[0]
    assert isinstance(feat, NumericProfile)
    values = np.array(
        [feat.min, feat.max, feat.min - 1e-9, feat.max + 1, -np.inf, np.inf, np.nan, 5.0]
    )
    for _ in range(2):
        monitor.observe(
            make_batch(
                numeric={"x": values},
                categorical={"c": ["p"] * 8},
                prediction=values,
                missing={"x": 1, "c": 2, PREDICTION_KEY: 3, "not-a-feature": 9},
                type_errors={"x": 4, PREDICTION_KEY: 1},
                unknown_features=2,
            )
        )
    counters = monitor.counters()
    x, c = counters.features
    assert (x.missing, x.type_errors, x.out_of_range) == (2, 8, 8)
    assert (c.missing, c.type_errors, c.out_of_range) == (4, 0, 0)
    assert counters.prediction is not None
    assert (counters.prediction.missing, counters.prediction.type_errors) == (6, 2)
    assert counters.prediction.out_of_range == 8
    assert counters.unknown_features == 4
    assert int(x.bin_totals.sum()) == 14  # NaN is never binned
    assert monitor.drift().features[0].window_values == 14


def test_latency_histogram_matches_numpy() -> None:
    """Cumulative bucket counts, sum and count equal a direct numpy count with ``le`` semantics."""
    rng = np.random.default_rng(21)
    monitor, _ = monitor_for({"numeric": {"x": rng.normal(size=100)}})
    buckets = np.asarray(monitor.config.latency_buckets)
    batches = [np.concatenate((rng.exponential(0.05, 300), buckets[:4], [20.0])) for _ in range(3)]
    for latency in batches:
        monitor.observe(make_batch(numeric={"x": np.zeros(latency.size)}, latency=latency))
    everything = np.concatenate(batches)
    counters = monitor.counters()
    expected = [int(np.sum(everything <= b)) for b in buckets] + [everything.size]
    assert counters.latency_buckets == (*monitor.config.latency_buckets, math.inf)
    assert counters.latency_bucket_counts.tolist() == expected
    assert counters.latency_count == everything.size
    assert counters.latency_sum == pytest.approx(float(everything.sum()))


def test_predictions_are_counted_per_status() -> None:
    """Status counts accumulate, every known status starts at zero, unknown ones are refused."""
    monitor, _ = monitor_for({"numeric": {"x": np.arange(10.0)}})
    assert monitor.counters().predictions == {"ok": 0, "error": 0}
    monitor.observe(make_batch(numeric={"x": np.zeros(4)}, status={"ok": 3, "error": 1}))
    monitor.observe(make_batch(numeric={"x": np.zeros(2)}, status={"ok": 2}))
    assert monitor.counters().predictions == {"ok": 5, "error": 1}
    with pytest.raises(ValueError, match="status_counts: unknown status 'timeout'"):
        monitor.observe(make_batch(numeric={"x": np.zeros(1)}, status={"timeout": 1}))
    assert monitor.counters().predictions == {"ok": 5, "error": 1}


def test_bin_totals_are_cumulative_beyond_the_window() -> None:
    """Counters keep counting after the window has forgotten a batch."""
    rng = np.random.default_rng(22)
    monitor, clock = monitor_for(
        {"numeric": {"x": rng.normal(size=1000)}}, snapshot_ttl_seconds=0.0
    )
    window = rng.normal(size=300)
    monitor.observe(make_batch(numeric={"x": window}))
    clock.now += 3600 + 60
    monitor.observe(make_batch(numeric={"x": window}))
    feat = monitor.profile.features[0]
    assert isinstance(feat, NumericProfile)
    expected = 2 * np.bincount(np.searchsorted(feat.psi_edges, window), minlength=10)
    counters = monitor.counters().features[0]
    assert counters.bins == tuple(str(i) for i in range(10))
    assert np.array_equal(counters.bin_totals, expected)
    assert np.array_equal(counters.reference_ratios, feat.psi_shares)
    snapshot = monitor.drift()
    assert snapshot.window_events == 300
    assert snapshot.features[0].window_values == 300


def test_window_forgets_old_events() -> None:
    """Once the window has passed, the snapshot reports no events and NaN statistics."""
    rng = np.random.default_rng(23)
    monitor, clock = monitor_for(
        {"numeric": {"x": rng.normal(size=1000)}},
        window_seconds=600.0,
        slot_seconds=60.0,
        snapshot_ttl_seconds=0.0,
    )
    monitor.observe(make_batch(numeric={"x": rng.normal(size=200)}))
    assert monitor.drift().window_events == 200
    clock.now += 600.0
    snapshot = monitor.drift()
    assert snapshot.window_events == 0
    assert snapshot.window_seconds == 600.0
    assert math.isnan(snapshot.features[0].statistic)


# --------------------------------------------------------------------------- cache, threads, config


def test_drift_is_cached_for_the_ttl_while_nothing_is_observed() -> None:
    """With no new batch, drift() reuses its snapshot within the TTL and recomputes at the TTL."""
    rng = np.random.default_rng(24)
    monitor, clock = monitor_for(
        {"numeric": {"x": rng.normal(size=1000)}}, snapshot_ttl_seconds=4.0
    )
    monitor.observe(make_batch(numeric={"x": rng.normal(size=200)}))
    first = monitor.drift()
    clock.now += 3.5
    assert monitor.drift() is first
    clock.now += 0.5  # exactly the TTL: stale
    fresh = monitor.drift()
    assert fresh is not first
    assert fresh.window_events == 200
    assert fresh.computed_at == clock.now


def test_drift_after_observe_is_never_served_from_the_cache() -> None:
    """A batch observed after a snapshot makes the next drift() recompute, even within the TTL."""
    rng = np.random.default_rng(26)
    monitor, clock = monitor_for(
        {"numeric": {"x": rng.normal(size=1000)}}, snapshot_ttl_seconds=60.0
    )
    monitor.observe(make_batch(numeric={"x": rng.normal(size=200)}))
    first = monitor.drift()
    monitor.observe(make_batch(numeric={"x": rng.normal(size=200)}))
    clock.now += 0.5
    fresh = monitor.drift()
    assert fresh is not first
    assert fresh.window_events == 400
    assert monitor.drift() is fresh


def test_concurrent_observe_loses_nothing() -> None:
    """Batches observed from several threads at once all end up in the counters."""
    rng = np.random.default_rng(25)
    monitor, _ = monitor_for(
        {"numeric": {"x": rng.normal(size=1000)}, "categorical": {"c": ["a", "b"] * 10}}
    )
    batch = make_batch(
        numeric={"x": rng.normal(size=100)}, categorical={"c": ["a", "b", "z", None] * 25}
    )

    def work() -> None:
        for _ in range(50):
            monitor.observe(batch)
            monitor.drift()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counters = monitor.counters()
    assert int(counters.features[0].bin_totals.sum()) == 4 * 50 * 100
    assert counters.features[1].unseen == 4 * 50 * 25
    assert counters.predictions["ok"] == 4 * 50 * 100


def test_columns_absent_from_a_batch_are_skipped() -> None:
    """A batch without some feature's column counts nothing for it."""
    rng = np.random.default_rng(26)
    monitor, _ = monitor_for({"numeric": {"x": rng.normal(size=100), "y": rng.normal(size=100)}})
    monitor.observe(make_batch(numeric={"x": rng.normal(size=10)}))
    x, y = monitor.counters().features
    assert int(x.bin_totals.sum()) == 10
    assert int(y.bin_totals.sum()) == 0


def test_numbers_for_a_categorical_prediction_are_refused() -> None:
    """A numeric prediction column for a categorical profile is a caller bug, named as such."""
    monitor, _ = monitor_for(
        {
            "numeric": {"x": np.arange(10.0)},
            "prediction": ["a", "b"],
            "prediction_kind": "categorical",
        }
    )
    with pytest.raises(ValueError, match="prediction"):
        monitor.observe(make_batch(numeric={"x": np.zeros(2)}, prediction=np.zeros(2)))


def test_invalid_config_names_every_bad_key() -> None:
    """EngineConfig refuses bad values with one ConfigError naming each key."""
    with pytest.raises(ConfigError) as info:
        EngineConfig(alpha=1.5, slot_seconds=0.0, min_window_values=0, latency_buckets=(1.0, 0.5))
    assert set(info.value.problems) == {
        "alpha",
        "slot_seconds",
        "min_window_values",
        "latency_buckets",
    }


def test_config_refuses_more_window_slots_than_the_cap() -> None:
    """EngineConfig refuses a window/slot pair giving more than 1 000 slots, naming the count."""
    with pytest.raises(ConfigError) as info:
        EngineConfig(window_seconds=100_000.0, slot_seconds=0.001)
    assert set(info.value.problems) == {"slot_seconds"}
    assert "100000000 slots" in info.value.problems["slot_seconds"]
    assert EngineConfig(window_seconds=3600.0, slot_seconds=3.6).slot_seconds == 3.6
