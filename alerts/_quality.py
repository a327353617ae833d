"""Data-quality rules: missing, out-of-range and wrongly typed values, and unknown features.

Ratios are per namespace, model, version and feature, against all predictions of the model
version in the window. Every alert also needs ``quality_min_events`` predictions in that window,
so a handful of odd events on an idle model does not page anyone.
"""

from __future__ import annotations

from alerts._rule import (
    FEATURE,
    MODEL,
    VALUE,
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

__all__ = ["groups", "quality_ratio"]

_BY = "namespace, model, version"
_BY_FEATURE = "namespace, model, version, feature"


def quality_ratio(config: RulesConfig, kind: str) -> str:
    """The name of the per-feature ratio of ``kind`` (missing, out_of_range, type_errors)."""
    window = config.quality_window.label
    return f"namespace_model_version_feature:modelwatch_feature_{kind}:ratio_rate{window}"


def _ratio_rules(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    w = config.quality_window
    return [
        record(
            quality_ratio(config, kind),
            promql(f"""
                sum by ({_BY_FEATURE}) (rate(modelwatch_feature_{kind}_total{{{sel}}}[{w}]))
                  / on ({_BY}) group_left
                sum by ({_BY}) (rate(modelwatch_predictions_total{{{sel}}}[{w}]))
            """),
        )
        for kind in ("missing", "out_of_range", "type_errors")
    ]


def _guard(config: RulesConfig) -> str:
    return promql(f"""
        and on ({_BY})
        sum by ({_BY}) (
          increase(modelwatch_predictions_total{{{config.sidecar_selector}}}[{config.quality_window}])
        ) >= {num(config.quality_min_events)}
    """)


def _alerts(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    guard = _guard(config)
    window = config.quality_window
    return [
        alert(
            config,
            "ModelwatchFeatureMissingValues",
            expr=(
                promql(f"""
                    {quality_ratio(config, "missing")}
                      > on ({_BY_FEATURE})
                    (
                      max by ({_BY_FEATURE}) (modelwatch_feature_reference_missing_ratio{{{sel}}})
                      + {num(config.missing_ratio_margin)}
                    )
                """)
                + "\n"
                + guard
            ),
            for_=config.quality_for,
            severity="warning",
            summary="A feature is missing more often than in its reference profile.",
            description=(
                f"{VALUE_PERCENT} of the values of {FEATURE} of {MODEL} were missing over the "
                f"last {window}, more than {percent(config.missing_ratio_margin)} above the "
                "reference's missing ratio."
            ),
        ),
        alert(
            config,
            "ModelwatchFeatureOutOfRange",
            expr=(
                f"{quality_ratio(config, 'out_of_range')} > {num(config.out_of_range_ratio)}\n"
                + guard
            ),
            for_=config.quality_for,
            severity="warning",
            summary="A numeric feature has values outside its reference range.",
            description=(
                f"{VALUE_PERCENT} of the values of {FEATURE} of {MODEL} were outside the "
                f"reference range over the last {window} "
                f"(threshold {percent(config.out_of_range_ratio)})."
            ),
        ),
        alert(
            config,
            "ModelwatchFeatureTypeErrors",
            expr=(
                f"{quality_ratio(config, 'type_errors')} > {num(config.type_error_ratio)}\n" + guard
            ),
            for_=config.quality_for,
            severity="warning",
            summary="A feature receives values of a type its profile does not allow.",
            description=(
                f"{VALUE_PERCENT} of the values of {FEATURE} of {MODEL} had a wrong type over "
                f"the last {window} (threshold {percent(config.type_error_ratio)})."
            ),
        ),
        alert(
            config,
            "ModelwatchUnknownFeatures",
            expr=promql(f"""
                sum by ({_BY}) (rate(modelwatch_unknown_features_total{{{sel}}}[{window}])) > 0
            """)
            + "\n"
            + guard,
            for_=config.quality_for,
            severity="info",
            summary="Events carry features the reference profile does not know.",
            description=(
                f"Events of {MODEL} carry {VALUE} values per second of features its reference "
                "profile does not know."
            ),
        ),
    ]


def groups(config: RulesConfig) -> list[Group]:
    """The rule groups of ``data-quality.yaml``."""
    return [
        group(config, "modelwatch-data-quality-ratios", _ratio_rules(config)),
        group(config, "modelwatch-data-quality", _alerts(config)),
    ]
