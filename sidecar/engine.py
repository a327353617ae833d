"""The streaming drift engine: one ``ModelMonitor`` per model version.

``observe`` takes a batch of events as columns and counts every column once, vectorised, into one
concatenated count vector (see ``sidecar._layout``) that goes into a sliding time window and a
cumulative total; latency, statuses and data-quality counts are accumulated beside it.
``drift`` turns the window into PSI, KS and chi-square statistics with a multiple-testing
correction, cached for a short time; ``counters`` reads the cumulative totals for Prometheus.
Memory is fixed by the profile and the window, never by traffic. Definitions are in
``docs/statistics.md``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from sidecar import stats
from sidecar._layout import CategoricalBinner, IndexArray, NumericBinner, build_layout
from sidecar.columns import PREDICTION_KEY, STATUSES, EventColumns
from sidecar.errors import ConfigError
from sidecar.profile import FeatureProfile, NumericProfile, Profile
from sidecar.snapshot import DriftSnapshot, FeatureCounters, FeatureDrift, MonitorCounters
from sidecar.window import MAX_SLOTS, SlidingWindow, slot_count

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

Correction = Literal["benjamini-hochberg", "bonferroni"]

DEFAULT_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings of the drift engine; invalid values raise ``ConfigError`` naming each key."""

    window_seconds: float = 3600.0
    slot_seconds: float = 60.0
    alpha: float = 0.05
    correction: Correction = "benjamini-hochberg"
    min_window_values: int = 100
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    snapshot_ttl_seconds: float = 1.0
    psi_eps: float = stats.PSI_EPS

    def __post_init__(self) -> None:
        problems: dict[str, str] = {}
        if not (math.isfinite(self.slot_seconds) and self.slot_seconds > 0):
            problems["slot_seconds"] = f"must be a positive number, got {self.slot_seconds}"
        elif not (math.isfinite(self.window_seconds) and self.window_seconds >= self.slot_seconds):
            problems["window_seconds"] = (
                f"must be at least slot_seconds ({self.slot_seconds}), got {self.window_seconds}"
            )
        elif (slots := slot_count(self.window_seconds, self.slot_seconds)) > MAX_SLOTS:
            problems["slot_seconds"] = (
                f"window_seconds / slot_seconds = {self.window_seconds} / {self.slot_seconds} "
                f"gives {slots} slots; at most {MAX_SLOTS} are allowed (memory is slots × bins "
                "× 8 bytes per model version)"
            )
        if not 0.0 < self.alpha < 1.0:
            problems["alpha"] = f"must lie strictly between 0 and 1, got {self.alpha}"
        if self.correction not in ("benjamini-hochberg", "bonferroni"):
            problems["correction"] = (
                f"must be 'benjamini-hochberg' or 'bonferroni', got {self.correction!r}"
            )
        if self.min_window_values < 1:
            problems["min_window_values"] = f"must be at least 1, got {self.min_window_values}"
        buckets = np.asarray(self.latency_buckets, dtype=np.float64)
        if buckets.size == 0 or not np.all(np.isfinite(buckets)) or np.any(np.diff(buckets) <= 0):
            problems["latency_buckets"] = "must be a non-empty, strictly increasing list of numbers"
        if not (math.isfinite(self.snapshot_ttl_seconds) and self.snapshot_ttl_seconds >= 0):
            problems["snapshot_ttl_seconds"] = (
                f"must be a non-negative number, got {self.snapshot_ttl_seconds}"
            )
        if not 0.0 < self.psi_eps < 1.0:
            problems["psi_eps"] = f"must lie strictly between 0 and 1, got {self.psi_eps}"
        if problems:
            raise ConfigError(problems)


class ModelMonitor:
    """Drift window, cumulative counters and latency histogram of one model version.

    Thread-safe: ``observe`` bins outside the lock and only merges under it, so a scrape or a
    ``drift`` call never waits for binning, and statistics are computed outside the lock too.
    """

    def __init__(
        self,
        profile: Profile,
        config: EngineConfig = EngineConfig(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = profile
        self.config = config
        self._clock = clock
        columns: tuple[FeatureProfile, ...] = profile.features
        if profile.prediction is not None:
            columns = (*columns, profile.prediction)
        self._layout = build_layout(columns)
        self._features = len(profile.features)
        binners = self._layout.binners
        self._numeric = tuple(b for b in binners[: self._features] if isinstance(b, NumericBinner))
        self._categorical = tuple(
            b for b in binners[: self._features] if isinstance(b, CategoricalBinner)
        )
        self._prediction = binners[self._features] if profile.prediction is not None else None
        self._column_of = {f.name: i for i, f in enumerate(profile.features)}
        if profile.prediction is not None:
            self._column_of[PREDICTION_KEY] = self._features
        self._latency_edges = np.asarray(config.latency_buckets, dtype=np.float64)

        self._lock = threading.Lock()
        self._window = SlidingWindow(
            self._layout.width, config.window_seconds, config.slot_seconds, clock
        )
        self._cumulative = np.zeros(self._layout.width, dtype=np.int64)
        self._missing = np.zeros(len(columns), dtype=np.int64)
        self._type_errors = np.zeros(len(columns), dtype=np.int64)
        self._latency_counts = np.zeros(self._latency_edges.size + 1, dtype=np.int64)
        self._latency_sum = 0.0
        self._latency_count = 0
        self._predictions = dict.fromkeys(STATUSES, 0)
        self._unknown_features = 0
        self._snapshot: DriftSnapshot | None = None
        # Bumped by every observe(): a cached snapshot never hides events already accepted.
        self._generation = 0
        self._snapshot_generation = -1

    # ----------------------------------------------------------------------- writing

    def observe(self, batch: EventColumns) -> None:
        """Count one batch of events into the window and the cumulative counters."""
        unknown_status = set(batch.status_counts) - set(STATUSES)
        if unknown_status:
            raise ValueError(f"status_counts: unknown status {sorted(unknown_status)[0]!r}")
        counts = self._bin(batch)
        latency = np.asarray(batch.latency_seconds, dtype=np.float64)
        latency_sum = float(latency.sum())
        if not math.isfinite(latency_sum):
            latency = latency[np.isfinite(latency)]
            latency_sum = float(latency.sum())
        buckets = np.bincount(
            np.searchsorted(self._latency_edges, latency, side="left"),
            minlength=self._latency_counts.size,
        )
        with self._lock:
            self._generation += 1
            self._window.add(counts, batch.n)
            self._cumulative += counts
            self._latency_counts += buckets
            self._latency_sum += latency_sum
            self._latency_count += int(latency.size)
            for status, n in batch.status_counts.items():
                self._predictions[status] += n
            self._unknown_features += batch.unknown_features
            self._add_by_column(self._missing, batch.missing)
            self._add_by_column(self._type_errors, batch.type_errors)

    def _bin(self, batch: EventColumns) -> IntArray:
        counts = self._count_categorical(batch)
        for numeric in self._numeric:
            values = batch.numeric.get(numeric.name)
            if values is not None:
                numeric.fill(values, counts)
        if isinstance(self._prediction, NumericBinner) and batch.prediction is not None:
            self._prediction.fill(np.asarray(batch.prediction, dtype=np.float64), counts)
        return counts

    def _count_categorical(self, batch: EventColumns) -> IntArray:
        """The count vector with the categorical columns counted and every other position 0.

        Numeric columns then write their own positions (``NumericBinner.fill``), which no
        categorical key ever reaches.
        """
        positions: list[IndexArray] = []
        for categorical in self._categorical:
            keys = batch.categorical.get(categorical.name)
            if keys is not None:
                categorical.positions(keys, positions)
        prediction = batch.prediction
        if isinstance(self._prediction, CategoricalBinner) and prediction is not None:
            if isinstance(prediction, np.ndarray):
                raise ValueError("prediction: the profile's prediction is categorical, got numbers")
            self._prediction.positions(prediction, positions)
        if not positions:
            return np.zeros(self._layout.width, dtype=np.int64)
        flat = np.concatenate(positions) if len(positions) > 1 else positions[0]
        return np.bincount(flat, minlength=self._layout.width).astype(np.int64, copy=False)

    def _add_by_column(self, target: IntArray, by_name: Mapping[str, int]) -> None:
        # Names the profile does not know are the parser's unknown_features, counted apart.
        for name, n in by_name.items():
            column = self._column_of.get(name)
            if column is not None:
                target[column] += n

    # ----------------------------------------------------------------------- reading

    def drift(self) -> DriftSnapshot:
        """Drift statistics of the current window.

        A snapshot is reused for ``snapshot_ttl_seconds`` only while no batch has been observed
        since it was computed, so repeated scrapes are cheap and a read after a write is fresh.
        """
        now = self._clock()
        with self._lock:
            cached = self._snapshot
            if (
                cached is not None
                and self._snapshot_generation == self._generation
                and now - cached.computed_at < self.config.snapshot_ttl_seconds
            ):
                return cached
            generation = self._generation
            totals = self._window.totals()
            events = self._window.events()
        snapshot = self._compute(totals, events, now)
        with self._lock:
            if generation >= self._snapshot_generation:
                self._snapshot = snapshot
                self._snapshot_generation = generation
        return snapshot

    def _compute(self, totals: IntArray, events: int, now: float) -> DriftSnapshot:
        lay, cfg = self._layout, self.config
        running = np.concatenate(([0], np.cumsum(totals)))
        psi_counts = lay.regroup(running, lay.psi_starts, lay.psi_ends)
        values = np.add.reduceat(psi_counts, lay.psi_offsets)
        testable = (values >= cfg.min_window_values) & (lay.reference_counts > 0)
        psi = stats.psi_segments(psi_counts, lay.psi_reference, lay.psi_offsets, cfg.psi_eps)
        statistic = np.full(values.size, np.nan)
        pvalue = np.full(values.size, np.nan)
        bound = np.array([0.0 if c.kind == "categorical" else np.nan for c in lay.columns])
        if lay.ks_columns.size:
            cols = lay.ks_columns
            fine = lay.regroup(running, lay.ks_starts, lay.ks_ends)
            d = stats.ks_statistic_segments(fine, lay.ks_offsets, lay.ks_cdf, lay.ks_cdf_offsets)
            d[~testable[cols]] = np.nan
            statistic[cols] = d
            pvalue[cols] = stats.ks_pvalue(d, values[cols], lay.reference_counts[cols])
            bound[cols] = lay.ks_error_bounds
        if lay.chi_columns.size:
            cols = lay.chi_columns
            chi, p = stats.chi_square_segments(
                psi_counts[lay.chi_bins], lay.chi_reference, lay.chi_offsets, cfg.psi_eps
            )
            statistic[cols] = chi
            pvalue[cols] = p
        psi[~testable] = np.nan
        statistic[~testable] = np.nan
        pvalue[~testable] = np.nan
        adjusted = pvalue.copy()
        correct = (
            stats.benjamini_hochberg if cfg.correction == "benjamini-hochberg" else stats.bonferroni
        )
        adjusted[: self._features] = correct(pvalue[: self._features])
        drifts = [
            FeatureDrift(
                feature=col.name,
                kind=col.kind,
                window_values=int(values[i]),
                psi=float(psi[i]),
                test="ks" if isinstance(col, NumericProfile) else "chi2",
                statistic=float(statistic[i]),
                pvalue=float(pvalue[i]),
                pvalue_adjusted=float(adjusted[i]),
                drifted=bool(adjusted[i] < cfg.alpha),
                error_bound=float(bound[i]),
            )
            for i, col in enumerate(lay.columns)
        ]
        return DriftSnapshot(
            model=self.profile.model,
            version=self.profile.version,
            computed_at=now,
            window_seconds=cfg.window_seconds,
            window_events=events,
            correction=cfg.correction,
            alpha=cfg.alpha,
            features=tuple(drifts[: self._features]),
            prediction=drifts[self._features] if len(drifts) > self._features else None,
        )

    def counters(self) -> MonitorCounters:
        """Cumulative counters since start (copies, safe to keep)."""
        with self._lock:
            cumulative = self._cumulative.copy()
            missing = self._missing.copy()
            type_errors = self._type_errors.copy()
            latency_counts = self._latency_counts.copy()
            latency_sum, latency_count = self._latency_sum, self._latency_count
            predictions = dict(self._predictions)
            unknown = self._unknown_features
        lay = self._layout
        running = np.concatenate(([0], np.cumsum(cumulative)))
        bins = np.split(lay.regroup(running, lay.psi_starts, lay.psi_ends), lay.psi_offsets[1:])
        shares = np.split(lay.psi_reference, lay.psi_offsets[1:])
        out_of_range = lay.regroup(running, *lay.low) + lay.regroup(running, *lay.high)
        unseen = lay.regroup(running, *lay.other)
        columns = [
            FeatureCounters(
                feature=col.name,
                bins=lay.psi_labels[i],
                bin_totals=bins[i],
                reference_ratios=shares[i].copy(),
                missing=int(missing[i]),
                type_errors=int(type_errors[i]),
                out_of_range=int(out_of_range[i]),
                unseen=int(unseen[i]),
            )
            for i, col in enumerate(lay.columns)
        ]
        return MonitorCounters(
            model=self.profile.model,
            version=self.profile.version,
            predictions=predictions,
            latency_buckets=(*self.config.latency_buckets, math.inf),
            latency_bucket_counts=np.cumsum(latency_counts),
            latency_sum=latency_sum,
            latency_count=latency_count,
            unknown_features=unknown,
            features=tuple(columns[: self._features]),
            prediction=columns[self._features] if len(columns) > self._features else None,
        )
