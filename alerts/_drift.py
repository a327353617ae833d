"""Drift and model-quality rules: fleet-wide PSI from the bin counters, per-pod KS, accuracy.

The fleet PSI pools the bin counters of every pod of a model version (per namespace) over the
PSI window, floors both shares at ε like the sidecar does, and alerts only when the window held
enough values. NaN never fires: a feature without values in the window has a 0/0 share and so
no PSI at all, and every comparison with NaN is false.
"""

from __future__ import annotations

from alerts._rule import (
    FEATURE,
    MODEL,
    VALUE_3F,
    VALUE_PERCENT,
    Group,
    Rule,
    alert,
    group,
    num,
    percent,
    promql,
    record,
)
from alerts.config import RulesConfig

__all__ = ["accuracy_weighted", "fleet_psi", "groups"]

_MODEL_LABELS = ("namespace", "model", "version")
_FEATURE_LABELS = (*_MODEL_LABELS, "feature")


def fleet_psi(config: RulesConfig, subject: str) -> str:
    """The name of the fleet PSI recording rule of ``subject`` (``feature`` or ``prediction``)."""
    level = "_".join(_FEATURE_LABELS if subject == "feature" else _MODEL_LABELS)
    return f"{level}:modelwatch_{subject}_psi:fleet{config.psi_window.label}"


def fleet_events(config: RulesConfig, subject: str) -> str:
    """The name of the rule counting ``subject`` values binned in the fleet's PSI window."""
    level = "_".join(_FEATURE_LABELS if subject == "feature" else _MODEL_LABELS)
    return f"{level}:modelwatch_{subject}_bin_total:increase{config.psi_window.label}"


def accuracy_weighted() -> str:
    """The name of the labelled-count-weighted accuracy of a model version over its pods."""
    return "namespace_model_version:modelwatch_model_accuracy:weighted"


def _fleet_psi_rules(config: RulesConfig, subject: str) -> list[Rule]:
    labels = _FEATURE_LABELS if subject == "feature" else _MODEL_LABELS
    level = "_".join(labels)
    by = ", ".join(labels)
    by_bin = f"{by}, bin"
    window = config.psi_window.label
    metric = f"modelwatch_{subject}"
    increase_bin = f"{level}_bin:{metric}_bin_total:increase{window}"
    share = f"{level}_bin:{metric}_bin:share{window}"
    reference = f"{level}_bin:{metric}_reference_ratio:max"
    eps = num(config.psi_epsilon)
    return [
        record(
            increase_bin,
            promql(f"""
                sum by ({by_bin}) (
                  increase({metric}_bin_total{{{config.sidecar_selector}}}[{config.psi_window}])
                )
            """),
        ),
        record(fleet_events(config, subject), f"sum by ({by}) ({increase_bin})"),
        record(
            share,
            promql(f"""
                {increase_bin}
                  / on ({by}) group_left
                {fleet_events(config, subject)}
            """),
        ),
        # The reference share is the same on every pod; max() only drops the pod labels.
        record(
            reference,
            f"max by ({by_bin}) ({metric}_reference_ratio{{{config.sidecar_selector}}})",
        ),
        # PSI = Σ (c − r)·ln(c / r) over the bins, both shares floored at ε.
        record(
            fleet_psi(config, subject),
            promql(f"""
                sum by ({by}) (
                  (
                      clamp_min({share}, {eps})
                    - on ({by_bin})
                      clamp_min({reference}, {eps})
                  )
                  * on ({by_bin})
                  ln(
                      clamp_min({share}, {eps})
                    / on ({by_bin})
                      clamp_min({reference}, {eps})
                  )
                )
            """),
        ),
    ]


def _accuracy_rules(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    return [
        record(
            accuracy_weighted(),
            promql(f"""
                sum by (namespace, model, version) (
                  modelwatch_model_accuracy{{{sel}}}
                  * on (namespace, pod, model, version)
                  modelwatch_model_labelled_predictions{{{sel}}}
                )
                  /
                sum by (namespace, model, version) (modelwatch_model_labelled_predictions{{{sel}}})
            """),
        )
    ]


def _feature_drift(config: RulesConfig, severity: str, threshold: float) -> Rule:
    return alert(
        config,
        "ModelwatchFeatureDrift",
        expr=promql(f"""
            {fleet_psi(config, "feature")} > {num(threshold)}
            and on (namespace, model, version, feature)
            {fleet_events(config, "feature")} >= {num(config.min_window_events)}
        """),
        for_=config.drift_for,
        severity=severity,
        summary="A feature's distribution has drifted from its reference across the fleet.",
        description=(
            f"The fleet PSI of {FEATURE} of {MODEL} is {VALUE_3F} over the last "
            f"{config.psi_window} (above {num(threshold)})."
        ),
    )


def _alerts(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    pod_feature = "namespace, pod, model, version, feature"
    return [
        _feature_drift(config, "warning", config.psi_warning),
        _feature_drift(config, "critical", config.psi_critical),
        alert(
            config,
            "ModelwatchFeatureDriftKS",
            expr=promql(f"""
                max by ({pod_feature}) (
                  modelwatch_feature_ks_statistic{{{sel}}} > {num(config.ks_statistic_threshold)}
                  and on ({pod_feature})
                  modelwatch_feature_drift_detected{{{sel}}} == 1
                  and on (namespace, pod, model, version)
                  modelwatch_drift_window_events{{{sel}}} >= {num(config.min_window_events)}
                )
            """),
            for_=config.drift_for,
            severity="warning",
            summary="A feature fails the Kolmogorov-Smirnov drift test on a sidecar.",
            description=(
                f"On pod {{{{ $labels.pod }}}}, {FEATURE} of {MODEL} has a KS statistic of "
                f"{VALUE_3F} (above {num(config.ks_statistic_threshold)}) and its corrected "
                "p-value is below alpha."
            ),
        ),
        alert(
            config,
            "ModelwatchPredictionDrift",
            expr=promql(f"""
                {fleet_psi(config, "prediction")} > {num(config.prediction_psi_warning)}
                and on (namespace, model, version)
                {fleet_events(config, "prediction")} >= {num(config.min_window_events)}
            """),
            for_=config.drift_for,
            severity="warning",
            summary="The model output's distribution has drifted from its reference.",
            description=(
                f"The fleet PSI of the predictions of {MODEL} is {VALUE_3F} over the last "
                f"{config.psi_window} (above {num(config.prediction_psi_warning)})."
            ),
        ),
        alert(
            config,
            "ModelwatchModelAccuracyLow",
            expr=promql(f"""
                {accuracy_weighted()} < {num(config.accuracy_floor)}
                and on (namespace, model, version)
                sum by (namespace, model, version) (
                  modelwatch_model_labelled_predictions{{{sel}}}
                ) >= {num(config.min_labelled_predictions)}
            """),
            for_=config.accuracy_for,
            severity="warning",
            summary="Model accuracy on labelled predictions is below its floor.",
            description=(
                f"The accuracy of {MODEL} is {VALUE_PERCENT} on its labelled predictions "
                f"(floor {percent(config.accuracy_floor)})."
            ),
        ),
    ]


def groups(config: RulesConfig) -> list[Group]:
    """The rule groups of ``drift.yaml``."""
    return [
        group(
            config,
            "modelwatch-fleet-psi",
            _fleet_psi_rules(config, "feature") + _fleet_psi_rules(config, "prediction"),
        ),
        group(config, "modelwatch-model-quality", _accuracy_rules(config)),
        group(config, "modelwatch-drift", _alerts(config)),
    ]
