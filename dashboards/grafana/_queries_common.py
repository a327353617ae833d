"""The building blocks of the dashboards' queries: value types, selectors and PromQL shapes.

``Query`` and ``PanelQueries`` are the values the layout modules read; ``Board`` collects one
dashboard's panels in the order they are declared. The selectors keep Grafana's variables
(``$namespace``, ``$model``, ``$version``, ``$__rate_interval``) so that every query is the exact
text Grafana sends. Nothing here names a panel: the panels live in ``_queries_serving``,
``_queries_drift`` and ``_queries_health``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from dashboards.grafana._alerting import BURN_WINDOWS

__all__ = [
    "BY_MV",
    "CONTAINERS",
    "DRIFT",
    "HEALTH",
    "JOBS",
    "L_MV",
    "L_POD",
    "MV",
    "NOT_5XX",
    "NS",
    "PREDICT_ROUTE",
    "RI",
    "SERVING",
    "UIDS",
    "Board",
    "PanelQueries",
    "Query",
    "Source",
    "burn",
    "model_pods",
    "quantiles",
    "ratio",
]

SERVING: Final = "modelwatch-serving"
DRIFT: Final = "modelwatch-drift"
HEALTH: Final = "modelwatch-health"
UIDS: Final = (SERVING, DRIFT, HEALTH)

Source = Literal["cadvisor", "dcgm", "feedback"]
"""Series from outside the sidecar and the model server, or that appear only after an event."""


@dataclass(frozen=True, slots=True)
class Query:
    """One panel target: PromQL with Grafana variables, its legend, and what it needs."""

    expr: str
    legend: str
    needs: Source | None = None
    instant: bool = False


@dataclass(frozen=True, slots=True)
class PanelQueries:
    """The queries of one panel, under the dashboard uid and the panel title they belong to."""

    uid: str
    title: str
    queries: tuple[Query, ...]


class Board:
    """The panels of one dashboard, kept in the order ``panel`` declares them."""

    __slots__ = ("_panels", "uid")

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self._panels: list[PanelQueries] = []

    def panel(self, title: str, *queries: Query) -> PanelQueries:
        """Declare the panel ``title`` of this dashboard with its queries, and return it."""
        panel = PanelQueries(self.uid, title, queries)
        self._panels.append(panel)
        return panel

    def panels(self) -> tuple[PanelQueries, ...]:
        """Every panel declared so far, in declaration order."""
        return tuple(self._panels)


# Selectors. Multi-value variables become regular expressions, hence =~ everywhere.
NS = 'namespace=~"$namespace"'
MV = f'{NS}, model=~"$model", version=~"$version"'
RI = "[$__rate_interval]"
JOBS = 'job=~"modelwatch-sidecar|modelwatch-serving"'
CONTAINERS = 'container=~"model-server|modelwatch-sidecar"'
PREDICT_ROUTE = 'route=~".+:predict"'
NOT_5XX = 'code!~"5.."'
BY_MV = "namespace, model, version"
L_MV = "{{namespace}} {{model}} {{version}}"
L_POD = "{{pod}}"


def quantiles(metric: str, selector: str, by: str, legend: str) -> tuple[Query, ...]:
    """The p50, p95 and p99 of the histogram ``metric``, one query each."""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}{RI})))",
            f"p{round(q * 100)} {legend}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def ratio(metric: str, part: str, selector: str, by: str) -> str:
    """The share of the counter ``metric``'s rate whose series also match ``part``."""
    return (
        f"sum by ({by}) (rate({metric}{{{selector}, {part}}}{RI}))\n"
        f"  / sum by ({by}) (rate({metric}{{{selector}}}{RI}))"
    )


def burn(sli: str, budget: float) -> tuple[Query, ...]:
    """The burn rate of the ``sli`` error budget over each alerting window, one query each."""
    return tuple(
        Query(
            f"namespace_model_version:modelwatch_prediction_{sli}:ratio_rate{w.label}{{{MV}}}"
            f" / {budget:g}",
            f"{L_MV} {w.label}",
        )
        for w in BURN_WINDOWS
    )


def model_pods(expr: str) -> str:
    """Keep the series of pods that serve the selected models (cAdvisor and DCGM know no model)."""
    return (
        f"{expr}\n  and on (namespace, pod)\n"
        f"  group by (namespace, pod) (modelwatch_serving_model_ready{{{MV}}})"
    )
