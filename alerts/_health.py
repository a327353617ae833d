"""Health rules of the monitoring pipeline itself: scrapes, ingest, logger, shipping, Watchdog.

These watch modelwatch rather than the model: a sidecar that is down or absent, a prediction
logger dropping events, rejected events and requests, documents failing or dropped on their way
to the sink, a growing shipping lag, collector errors, and the always-firing Watchdog that
proves the whole alerting path works.
"""

from __future__ import annotations

from alerts._rule import MODEL, POD, VALUE, VALUE_PERCENT, Group, Rule, alert, group, num, promql
from alerts.config import Duration, RulesConfig

__all__ = ["groups"]


def _shipping_lag(config: RulesConfig, severity: str, seconds: float) -> Rule:
    return alert(
        config,
        "ModelwatchShippingLag",
        expr=promql(f"""
            max by (namespace, pod) (
              modelwatch_spool_oldest_event_age_seconds{{{config.sidecar_selector}}}
            ) > {num(seconds)}
        """),
        for_=config.shipping_lag_for,
        severity=severity,
        summary="Prediction logs wait too long in the spool before reaching the sink.",
        description=(
            f"The oldest unshipped request of the sidecar of {POD} is "
            f"{{{{ $value | humanizeDuration }}}} old (threshold {Duration(int(seconds), '')})."
        ),
    )


def _documents(config: RulesConfig, name: str, outcome: str, severity: str, what: str) -> Rule:
    selector = f'{config.sidecar_selector}, outcome="{outcome}"'
    return alert(
        config,
        name,
        expr=promql(f"""
            sum by (namespace, pod) (
              rate(modelwatch_es_documents_total{{{selector}}}[{config.health_window}])
            ) > 0
        """),
        for_=config.shipping_for,
        severity=severity,
        summary=f"The sidecar {what}.",
        description=f"The sidecar of {POD} {what}: {VALUE} documents per second.",
    )


def _alerts(config: RulesConfig) -> list[Rule]:
    sel = config.sidecar_selector
    window = config.health_window
    dropped = f'{config.serving_selector}, outcome="dropped"'
    return [
        alert(
            config,
            "ModelwatchSidecarDown",
            expr=f"max by (namespace, pod, job) (up{{{sel}}}) == 0",
            for_=config.sidecar_down_for,
            severity="warning",
            summary="Prometheus cannot scrape a modelwatch sidecar.",
            description=f"The sidecar of {POD} has been down for {config.sidecar_down_for}.",
        ),
        alert(
            config,
            "ModelwatchSidecarAbsent",
            expr=f"absent(up{{{sel}}})",
            for_=config.sidecar_absent_for,
            severity="warning",
            summary="Prometheus has no modelwatch sidecar target at all.",
            description=(
                "No target of job {{ $labels.job }} has been discovered for "
                f"{config.sidecar_absent_for}: nothing is monitoring the models."
            ),
        ),
        alert(
            config,
            "ModelwatchLoggerDroppingEvents",
            expr=promql(f"""
                sum by (namespace, pod, model, version) (
                  rate(modelwatch_logger_events_total{{{dropped}}}[{window}])
                ) > 0
            """),
            for_=config.logger_dropping_for,
            severity="warning",
            summary="The prediction logger of a model server drops events.",
            description=(
                f"The prediction logger of {MODEL} on pod {{{{ $labels.pod }}}} drops "
                f"{VALUE} events per second."
            ),
        ),
        alert(
            config,
            "ModelwatchEventsRejected",
            expr=promql(f"""
                sum by (namespace, pod) (rate(modelwatch_events_rejected_total{{{sel}}}[{window}]))
                  /
                sum by (namespace, pod) (rate(modelwatch_events_received_total{{{sel}}}[{window}]))
                  > {num(config.events_rejected_ratio)}
            """),
            for_=config.events_rejected_for,
            severity="warning",
            summary="The sidecar rejects invalid events.",
            description=f"The sidecar of {POD} rejects {VALUE_PERCENT} of the events it receives.",
        ),
        alert(
            config,
            "ModelwatchIngestRequestsRejected",
            expr=promql(f"""
                sum by (namespace, pod, reason) (
                  rate(modelwatch_ingest_requests_rejected_total{{{sel}}}[{window}])
                ) > 0
            """),
            for_=config.ingest_rejected_for,
            severity="warning",
            summary="The sidecar refuses whole ingest requests.",
            description=(
                f"The sidecar of {POD} refuses {VALUE} ingest requests per second "
                "with reason {{ $labels.reason }}."
            ),
        ),
        _documents(
            config,
            "ModelwatchShippingFailing",
            "failed",
            "warning",
            "dead-letters documents the sink refuses",
        ),
        _documents(
            config,
            "ModelwatchShippingDroppingDocuments",
            "dropped",
            "critical",
            "drops prediction-log documents",
        ),
        _shipping_lag(config, "warning", config.shipping_lag_warning_seconds),
        _shipping_lag(config, "critical", config.shipping_lag_critical_seconds),
        alert(
            config,
            "ModelwatchCollectorErrors",
            expr=promql(f"""
                sum by (namespace, pod, source) (
                  increase(modelwatch_collector_errors_total{{{sel}}}[{config.collector_errors_window}])
                ) > 0
            """),
            for_=config.collector_errors_for,
            severity="warning",
            summary="A metrics source of the sidecar fails at scrape time.",
            description=(
                f"The {{{{ $labels.source }}}} source of the sidecar of {POD} failed {VALUE} "
                f"times in the last {config.collector_errors_window}; its metrics are missing."
            ),
        ),
        alert(
            config,
            "Watchdog",
            expr="vector(1)",
            for_=config.watchdog_for,
            severity="none",
            summary="Always firing: proves the alerting pipeline works end to end.",
            description=(
                "This alert always fires. If it stops arriving, Prometheus, its rules or "
                "Alertmanager are broken."
            ),
        ),
    ]


def groups(config: RulesConfig) -> list[Group]:
    """The rule groups of ``health.yaml``."""
    return [group(config, "modelwatch-health", _alerts(config))]
