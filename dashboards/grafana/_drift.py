"""Layout of "Drift" (modelwatch-drift): feature and prediction drift, data quality, accuracy.

For SREs deciding whether a drift alert is real and for data scientists deciding whether to
retrain: statistics per pod and for the fleet, the evidence behind them (window size), the data
quality that often explains them, and accuracy once labels arrive.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as model

from dashboards.grafana import _alerting as alerting
from dashboards.grafana import _common as c
from dashboards.grafana import queries as q
from dashboards.grafana._grid import Grid

# PSI rule of thumb: < 0.1 stable, 0.1-0.2 moderate; above that the drift alert's levels.
_PSI_STEPS = ((0.1, "yellow"), (alerting.PSI_WARNING, "orange"), (alerting.PSI_CRITICAL, "red"))
_NAN = "NaN (a gap) means fewer than MODELWATCH_MIN_WINDOW_VALUES values in the window."


def build() -> model.Dashboard:
    """The drift dashboard."""
    grid = Grid()
    grid.row("Feature drift")
    grid.add(
        c.single_stat(
            q.DRIFTED_FEATURES,
            description="Features whose drift test is significant after the multiple-testing "
            "correction on at least one pod (modelwatch_feature_drift_detected).",
            unit=c.COUNT,
            thresholds=((1, "red"),),
        ),
        width=6,
    )
    grid.add(
        c.time_series(
            q.FLEET_PSI,
            description="PSI of each feature over all pods in the last hour, from the recording "
            "rule namespace_model_version_feature:modelwatch_feature_psi:fleet1h; what the "
            "ModelwatchFeatureDrift alert reads.",
            unit=c.UNITLESS,
            thresholds=_PSI_STEPS,
            min_value=0,
        ),
        width=18,
    )
    grid.add(
        c.state_timeline(
            q.PSI_TIMELINE,
            description="Worst per-pod PSI of each feature over time (feature × time): green "
            f"below 0.1, yellow to {alerting.PSI_WARNING:g}, orange to "
            f"{alerting.PSI_CRITICAL:g}, red above. {_NAN}",
            unit=c.UNITLESS,
            thresholds=_PSI_STEPS,
        ),
        width=24,
        height=10,
    )
    grid.add(
        c.time_series(
            q.FEATURE_PSI,
            description="Population stability index of each feature in each pod's sliding "
            f"window against the reference profile (modelwatch_feature_psi). {_NAN}",
            unit=c.UNITLESS,
            thresholds=_PSI_STEPS,
            min_value=0,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.KS_STATISTIC,
            description="Kolmogorov–Smirnov D of each numeric feature, window vs reference "
            f"(modelwatch_feature_ks_statistic); the KS alert needs it above "
            f"{alerting.KS_THRESHOLD:g}. {_NAN}",
            unit=c.UNITLESS,
            thresholds=((alerting.KS_THRESHOLD, "red"),),
            min_value=0,
            max_value=1,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.DRIFT_PVALUES,
            description="KS p-values of numeric features and chi-square p-values of categorical "
            "features, before the multiple-testing correction (log scale; small means drift). "
            f"{_NAN}",
            unit=c.UNITLESS,
            log_scale=True,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.WINDOW_EVENTS,
            description="Events in each pod's drift window (modelwatch_drift_window_events). "
            "Read it next to every statistic: a handful of events is noise.",
            unit=c.COUNT,
            min_value=0,
        ),
        width=12,
    )
    grid.row("Prediction drift and model quality")
    grid.add(
        c.time_series(
            q.PREDICTION_DRIFT,
            description="PSI of the model output per pod (modelwatch_prediction_psi) and for "
            "the fleet over the last hour (namespace_model_version:modelwatch_prediction_psi:"
            f"fleet1h). {_NAN}",
            unit=c.UNITLESS,
            thresholds=_PSI_STEPS,
            min_value=0,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.ACCURACY,
            description="Share of labelled predictions equal to their label, per pod "
            "(modelwatch_model_accuracy) and weighted by labels over pods (recording rule). "
            "Appears after the first joined feedback label; classifiers only. The alert fires "
            f"below {alerting.ACCURACY_FLOOR:g}.",
            unit=c.RATIO,
            min_value=0,
            max_value=1,
        ),
        width=6,
    )
    grid.add(
        c.time_series(
            q.LABELLED,
            description="Labelled predictions the accuracy is computed over "
            "(modelwatch_model_labelled_predictions); the accuracy alert waits for "
            f"{alerting.MIN_LABELLED}.",
            unit=c.COUNT,
            min_value=0,
        ),
        width=6,
    )
    grid.row("Data quality")
    grid.add(
        c.time_series(
            q.MISSING_RATIO,
            description="Share of events with the feature absent or null over 15 minutes "
            "(recording rule …modelwatch_feature_missing:ratio_rate15m), with the reference "
            "profile's missing ratio for comparison.",
            unit=c.RATIO,
            min_value=0,
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.OUT_OF_RANGE_RATIO,
            description="Share of a numeric feature's values outside the reference min–max "
            "over 15 minutes (…modelwatch_feature_out_of_range:ratio_rate15m).",
            unit=c.RATIO,
            min_value=0,
            thresholds=((alerting.OUT_OF_RANGE_RATIO, "red"),),
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.TYPE_ERROR_RATIO,
            description="Share of values of a type the profile does not allow over 15 minutes "
            "(…modelwatch_feature_type_errors:ratio_rate15m); treated as missing for drift.",
            unit=c.RATIO,
            min_value=0,
            thresholds=((alerting.TYPE_ERROR_RATIO, "red"),),
        ),
        width=12,
    )
    grid.add(
        c.time_series(
            q.UNSEEN_VALUES,
            description="Categorical values outside the reference categories per second "
            "(modelwatch_feature_unseen_categories_total) and values of features the profile "
            "does not know (modelwatch_unknown_features_total).",
            unit=c.PER_SECOND,
            min_value=0,
        ),
        width=12,
    )
    return c.dashboard(
        q.DRIFT,
        "Drift",
        "Feature and prediction drift against the reference profile, data quality and accuracy.",
        ("drift",),
        grid,
    )
