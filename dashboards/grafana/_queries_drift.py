"""The queries of the drift dashboard: PSI, KS and χ² tests, data quality and accuracy.

Panels the layout module ``_drift`` places, each under its title. Per-pod gauges come straight
from the sidecar; fleet and data-quality series come from the recording rules.
"""

from __future__ import annotations

from typing import Final

from dashboards.grafana._queries_common import (
    BY_MV,
    DRIFT,
    L_MV,
    L_POD,
    MV,
    RI,
    Board,
    Query,
)

__all__ = [
    "ACCURACY",
    "DRIFTED_FEATURES",
    "DRIFT_PVALUES",
    "FEATURE_PSI",
    "FLEET_PSI",
    "KS_STATISTIC",
    "LABELLED",
    "MISSING_RATIO",
    "OUT_OF_RANGE_RATIO",
    "PANELS",
    "PREDICTION_DRIFT",
    "PSI_TIMELINE",
    "TYPE_ERROR_RATIO",
    "UNSEEN_VALUES",
    "WINDOW_EVENTS",
]

_BOARD = Board(DRIFT)
_panel = _BOARD.panel

_FEATURE = "{{model}} {{version}} {{feature}}"
_POD_FEATURE = "{{pod}} {{model}} {{version}} {{feature}}"
_DQ = "namespace_model_version_feature:modelwatch_feature_{}:ratio_rate15m{{" + MV + "}}"

FEATURE_PSI = _panel(
    "PSI per feature (per pod)", Query(f"modelwatch_feature_psi{{{MV}}}", _POD_FEATURE)
)
FLEET_PSI = _panel(
    "Fleet PSI per feature (1h)",
    Query(f"namespace_model_version_feature:modelwatch_feature_psi:fleet1h{{{MV}}}", _FEATURE),
)
PSI_TIMELINE = _panel(
    "PSI by feature over time",
    Query(f"max by ({BY_MV}, feature) (modelwatch_feature_psi{{{MV}}})", _FEATURE),
)
DRIFTED_FEATURES = _panel(
    "Drifted features",
    # A feature counts once when it drifts on any pod of the model version.
    Query(
        f"sum by ({BY_MV}) (max by ({BY_MV}, feature) (modelwatch_feature_drift_detected{{{MV}}}))",
        L_MV,
    ),
)
KS_STATISTIC = _panel(
    "KS statistic per feature",
    Query(f"modelwatch_feature_ks_statistic{{{MV}}}", _POD_FEATURE),
)
DRIFT_PVALUES = _panel(
    "Drift test p-values (before correction)",
    Query(f"modelwatch_feature_ks_pvalue{{{MV}}}", f"KS {_POD_FEATURE}"),
    Query(f"modelwatch_feature_chi2_pvalue{{{MV}}}", f"χ² {_POD_FEATURE}"),
)
PREDICTION_DRIFT = _panel(
    "Prediction drift (PSI)",
    Query(f"modelwatch_prediction_psi{{{MV}}}", f"{L_POD} {{{{model}}}} {{{{version}}}}"),
    Query(
        f"namespace_model_version:modelwatch_prediction_psi:fleet1h{{{MV}}}",
        f"fleet 1h {L_MV}",
    ),
)
WINDOW_EVENTS = _panel(
    "Events in the drift window",
    Query(f"modelwatch_drift_window_events{{{MV}}}", f"{L_POD} {{{{model}}}} {{{{version}}}}"),
)
MISSING_RATIO = _panel(
    "Missing values ratio",
    Query(_DQ.format("missing"), _FEATURE),
    Query(
        f"max by ({BY_MV}, feature) (modelwatch_feature_reference_missing_ratio{{{MV}}})",
        f"reference {_FEATURE}",
    ),
)
OUT_OF_RANGE_RATIO = _panel("Out-of-range ratio", Query(_DQ.format("out_of_range"), _FEATURE))
TYPE_ERROR_RATIO = _panel("Type-error ratio", Query(_DQ.format("type_errors"), _FEATURE))
UNSEEN_VALUES = _panel(
    "Unseen categories and unknown features",
    Query(
        f"sum by ({BY_MV}, feature) (rate(modelwatch_feature_unseen_categories_total{{{MV}}}{RI}))",
        f"unseen {_FEATURE}",
    ),
    Query(
        f"sum by ({BY_MV}) (rate(modelwatch_unknown_features_total{{{MV}}}{RI}))",
        f"unknown features {L_MV}",
    ),
)
ACCURACY = _panel(
    "Accuracy (labelled predictions)",
    Query(
        f"namespace_model_version:modelwatch_model_accuracy:weighted{{{MV}}}",
        f"weighted {L_MV}",
        needs="feedback",
    ),
    Query(
        f"modelwatch_model_accuracy{{{MV}}}",
        f"{L_POD} {{{{model}}}} {{{{version}}}}",
        needs="feedback",
    ),
)
LABELLED = _panel(
    "Labelled predictions",
    Query(
        f"sum by ({BY_MV}) (modelwatch_model_labelled_predictions{{{MV}}})",
        L_MV,
        needs="feedback",
    ),
)

PANELS: Final = _BOARD.panels()
"""This dashboard's panels, in declaration order."""
