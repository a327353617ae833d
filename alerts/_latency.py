"""Traffic, latency and error rules: prediction rate, quantiles and multi-window burn-rate SLOs.

The latency SLO counts predictions slower than ``latency_slo_seconds`` from the histogram bucket
whose ``le`` equals that threshold, so the threshold must be one of the sidecar's bucket bounds
(prometheus_client writes bounds as Python's ``repr`` of the float, e.g. ``"0.25"``). Each
burn-rate alert needs both its long and its short window above ``factor`` × the error budget:
the long window proves the burn is significant, the short one that it is still going on.
"""

from __future__ import annotations

from collections.abc import Callable

from alerts._rule import (
    MODEL,
    POD,
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
from alerts.config import BurnRate, Duration, RulesConfig

__all__ = ["errors_ratio", "groups", "slow_ratio"]

_BY = "namespace, model, version"


def slow_ratio(window: Duration) -> str:
    """The name of the share of predictions slower than the SLO threshold over ``window``."""
    return f"namespace_model_version:modelwatch_prediction_latency_slow:ratio_rate{window.label}"


def errors_ratio(window: Duration) -> str:
    """The name of the share of predictions with ``status="error"`` over ``window``."""
    return f"namespace_model_version:modelwatch_prediction_errors:ratio_rate{window.label}"


def _windows(config: RulesConfig) -> list[Duration]:
    """Every window a burn-rate condition reads, shortest first, each once."""
    found = {w.label: w for b in config.burn_rates for w in (b.long_window, b.short_window)}
    return sorted(found.values(), key=lambda w: (w.seconds, w.label))


def _traffic_rules(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    window = config.traffic_window
    rules = [
        record(
            f"namespace_model_version:modelwatch_predictions:rate{window.label}",
            f"sum by ({_BY}) (rate(modelwatch_predictions_total{{{sel}}}[{window}]))",
        )
    ]
    rules += [
        record(
            f"namespace_model_version:modelwatch_prediction_latency_seconds:histogram_quantile{window.label}",
            promql(f"""
                histogram_quantile({num(q)},
                  sum by ({_BY}, le) (
                    rate(modelwatch_prediction_latency_seconds_bucket{{{sel}}}[{window}])
                  )
                )
            """),
            labels={"quantile": num(q)},
        )
        for q in config.latency_quantiles
    ]
    return rules


def _ratio_rules(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    le = repr(float(config.latency_slo_seconds))
    errors = f'{sel}, status="error"'
    rules: list[Rule] = []
    for w in _windows(config):
        rules.append(
            record(
                slow_ratio(w),
                promql(f"""
                    1 - (
                      sum by ({_BY}) (
                        rate(modelwatch_prediction_latency_seconds_bucket{{{sel}, le="{le}"}}[{w}])
                      )
                        /
                      sum by ({_BY}) (
                        rate(modelwatch_prediction_latency_seconds_count{{{sel}}}[{w}])
                      )
                    )
                """),
            )
        )
        rules.append(
            record(
                errors_ratio(w),
                promql(f"""
                    sum by ({_BY}) (rate(modelwatch_predictions_total{{{errors}}}[{w}]))
                      /
                    sum by ({_BY}) (rate(modelwatch_predictions_total{{{sel}}}[{w}]))
                """),
            )
        )
    return rules


def _burn_alert(
    config: RulesConfig,
    name: str,
    ratio_name: Callable[[Duration], str],
    burn: BurnRate,
    target: float,
    what: str,
    summary: str,
) -> Rule:
    budget = f"(1 - {num(target)})"
    return alert(
        config,
        name,
        expr=promql(f"""
            {ratio_name(burn.long_window)} > {num(burn.factor)} * {budget}
            and on ({_BY})
            {ratio_name(burn.short_window)} > {num(burn.factor)} * {budget}
        """),
        for_=burn.for_,
        severity=burn.severity,
        labels={"long_window": burn.long_window.label, "short_window": burn.short_window.label},
        summary=summary,
        description=(
            f"{VALUE_PERCENT} of the predictions of {MODEL} were {what} over the last "
            f"{burn.long_window}: more than {burn.factor:g}x the {percent(1 - target)} error "
            "budget."
        ),
    )


def _alerts(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    slow = f"slower than {num(config.latency_slo_seconds)}s"
    rules = [
        _burn_alert(
            config,
            "ModelwatchLatencyBudgetBurn",
            slow_ratio,
            b,
            config.latency_slo_target,
            slow,
            "Slow predictions are burning the latency SLO's error budget too fast.",
        )
        for b in config.burn_rates
    ]
    rules += [
        _burn_alert(
            config,
            "ModelwatchErrorBudgetBurn",
            errors_ratio,
            b,
            config.error_slo_target,
            "errors",
            "Failed predictions are burning the error SLO's budget too fast.",
        )
        for b in config.burn_rates
    ]
    # The rate window must empty before the `for:` starts, so the silence lasts both.
    silent = config.traffic_window.seconds + config.no_predictions_for.seconds
    rules.append(
        alert(
            config,
            "ModelwatchNoPredictions",
            expr=promql(f"""
                sum by (namespace, pod) (
                  rate(modelwatch_predictions_total{{{sel}}}[{config.traffic_window}])
                ) == 0
                and on (namespace, pod)
                max by (namespace, pod) (up{{{sel}}}) == 1
            """),
            for_=config.no_predictions_for,
            severity="warning",
            summary="A running sidecar receives no predictions.",
            description=(
                f"The sidecar of {POD} is up but has seen no predictions for "
                f"{Duration(silent, '')}."
            ),
        )
    )
    return rules


def groups(config: RulesConfig) -> list[Group]:
    """The rule groups of ``latency-errors.yaml``."""
    return [
        group(config, "modelwatch-traffic", _traffic_rules(config)),
        group(config, "modelwatch-slo-ratios", _ratio_rules(config)),
        group(config, "modelwatch-slo-burn", _alerts(config)),
    ]
