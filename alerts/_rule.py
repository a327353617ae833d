"""Builders for the plain dicts of a Prometheus rule file: groups, recording rules and alerts.

Every alert gets the same shape here — a ``severity`` label, a static ``summary``, a templated
``description`` and a ``runbook_url`` named after the alert — so the concern modules cannot
forget one.
"""

from __future__ import annotations

import textwrap

from alerts.config import Duration, RulesConfig

__all__ = [
    "FEATURE",
    "MODEL",
    "POD",
    "SEVERITIES",
    "VALUE",
    "VALUE_3F",
    "VALUE_PERCENT",
    "Group",
    "Rule",
    "alert",
    "group",
    "num",
    "percent",
    "promql",
    "record",
]

Rule = dict[str, object]
Group = dict[str, object]

SEVERITIES = frozenset({"critical", "warning", "info", "none"})


def num(value: float) -> str:
    """A PromQL number literal: ``500`` for integers, Python's ``repr`` for floats."""
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def promql(text: str) -> str:
    """An expression written as an indented triple-quoted block, dedented and trimmed."""
    return textwrap.dedent(text).strip()


def record(name: str, expr: str, labels: dict[str, str] | None = None) -> Rule:
    """A recording rule; ``name`` must read ``level:metric:operation``."""
    if name.count(":") != 2:
        raise ValueError(f"recording rule {name!r} is not named level:metric:operation")
    rule: Rule = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = dict(labels)
    return rule


def alert(
    config: RulesConfig,
    name: str,
    *,
    expr: str,
    for_: Duration,
    severity: str,
    summary: str,
    description: str,
    labels: dict[str, str] | None = None,
) -> Rule:
    """An alerting rule with the severity label and the three annotations every alert carries."""
    if severity not in SEVERITIES:
        raise ValueError(f"alert {name!r}: unknown severity {severity!r}")
    return {
        "alert": name,
        "expr": expr,
        "for": str(for_),
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{config.runbook_base_url}/{name}.md",
        },
    }


def group(config: RulesConfig, name: str, rules: list[Rule]) -> Group:
    """A rule group evaluated every ``config.evaluation_interval``."""
    return {"name": name, "interval": str(config.evaluation_interval), "rules": rules}


# Template fragments shared by the alert descriptions.
MODEL = (
    "model {{ $labels.model }} version {{ $labels.version }} in namespace {{ $labels.namespace }}"
)
FEATURE = "feature {{ $labels.feature }}"
POD = "pod {{ $labels.pod }} in namespace {{ $labels.namespace }}"
VALUE_3F = '{{ $value | printf "%.3f" }}'
VALUE_PERCENT = "{{ $value | humanizePercentage }}"
# printf, not humanize: humanize writes 0.5/s as "500m", which reads as 500 million.
VALUE = '{{ $value | printf "%.3g" }}'


def percent(ratio: float) -> str:
    """A threshold ratio written as a percentage for descriptions (``0.05`` → ``"5%"``)."""
    return f"{ratio * 100:g}%"
