"""What the three dashboards share: variables, panel kinds, units, and the dashboard itself.

Panels take their title and queries from ``queries.PanelQueries`` and their looks from the
arguments here, so a layout module never writes PromQL. Every target points at the
``${datasource}`` variable; every panel gets a unit and a description because the helpers
require both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import (
    heatmap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.grafana._grid import Grid
from dashboards.grafana.queries import UIDS, PanelQueries

DATASOURCE: Final = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
PROVISIONED_DATASOURCE_UID: Final = "prometheus"
TAGS: Final = ("modelwatch",)
REFRESH: Final = "30s"
TIME_FROM: Final = "now-6h"

# Units (Grafana unit ids).
SECONDS: Final = "s"
REQUESTS_PER_SECOND: Final = "reqps"
PER_SECOND: Final = "cps"
RATIO: Final = "percentunit"
PERCENT: Final = "percent"
BYTES: Final = "bytes"
COUNT: Final = "short"
UNITLESS: Final = "none"
BURN_RATE: Final = "suffix:×"

_VARIABLE_METRIC = "modelwatch_predictions_total"


def variables() -> list[dash.DatasourceVariable | dash.QueryVariable]:
    """``datasource``, ``namespace``, ``model``, ``version``: each filtered by the ones before."""
    current = model.VariableOption(
        selected=True, text="Prometheus", value=PROVISIONED_DATASOURCE_UID
    )
    chain = (
        (
            "namespace",
            "Namespace",
            'label_values(up{job=~"modelwatch-sidecar|modelwatch-serving"}, namespace)',
        ),
        ("model", "Model", f'label_values({_VARIABLE_METRIC}{{namespace=~"$namespace"}}, model)'),
        (
            "version",
            "Version",
            f'label_values({_VARIABLE_METRIC}{{namespace=~"$namespace", model=~"$model"}}, '
            "version)",
        ),
    )
    return [
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(current),
        *(
            dash.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            for name, label, query in chain
        ),
    ]


def _targets(
    panel: PanelQueries, fmt: PromQueryFormat | None = None
) -> list[Builder[variants.Dataquery]]:
    out: list[Builder[variants.Dataquery]] = []
    for index, query in enumerate(panel.queries):
        target = (
            prometheus.Dataquery()
            .datasource(DATASOURCE)
            .ref_id(chr(ord("A") + index))
            .expr(query.expr)
            .legend_format(query.legend)
        )
        if query.instant:
            target = target.instant()
        if fmt is not None:
            target = target.format(fmt)
        out.append(target)
    return out


def _thresholds(steps: Sequence[tuple[float, str]], base: str = "green") -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps(
            [model.Threshold(value=None, color=base)]
            + [model.Threshold(value=value, color=color) for value, color in steps]
        )
    )


def _legend() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .calcs(["lastNotNull", "max"])
    )


def time_series(
    panel: PanelQueries,
    *,
    description: str,
    unit: str,
    thresholds: Sequence[tuple[float, str]] = (),
    min_value: float | None = None,
    max_value: float | None = None,
    log_scale: bool = False,
) -> timeseries.Panel:
    """A line chart of every query of ``panel``; thresholds are drawn as dashed lines."""
    built = (
        timeseries.Panel()
        .title(panel.title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(panel))
        .unit(unit)
        .legend(_legend())
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
    )
    if thresholds:
        built = built.thresholds(_thresholds(thresholds)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    if min_value is not None:
        built = built.min(min_value)
    if max_value is not None:
        built = built.max(max_value)
    if log_scale:
        built = built.scale_distribution(
            common_builders.ScaleDistributionConfig().type(common.ScaleDistribution.LOG).log(10)
        )
    return built


def single_stat(
    panel: PanelQueries,
    *,
    description: str,
    unit: str,
    thresholds: Sequence[tuple[float, str]] = (),
) -> stat.Panel:
    """The last value of each series as a big number, coloured by ``thresholds``."""
    return (
        stat.Panel()
        .title(panel.title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(panel))
        .unit(unit)
        .thresholds(_thresholds(thresholds))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def instant_table(
    panel: PanelQueries, *, description: str, units: Sequence[str], names: Sequence[str]
) -> table.Panel:
    """One row per label set, one column per instant query (``units``/``names`` by query)."""
    built = (
        table.Panel()
        .title(panel.title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(panel, PromQueryFormat.TABLE))
        .unit(COUNT)
        .align(common.FieldTextAlignment.AUTO)
        .inspect(False)
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(names)
                    },
                },
            )
        )
    )
    for index, unit in enumerate(units):
        built = built.override_by_query(
            chr(ord("A") + index), [model.DynamicConfigValue(id_val="unit", value=unit)]
        )
    return built


def bucket_heatmap(panel: PanelQueries, *, description: str, unit: str) -> heatmap.Panel:
    """A heatmap of pre-bucketed histogram rates (``le`` buckets, no calculation in Grafana)."""
    return (
        heatmap.Panel()
        .title(panel.title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(panel, PromQueryFormat.HEATMAP))
        .unit(unit)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .cell_values(heatmap.CellValues().unit(PER_SECOND))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
        )
        .max_data_points(60)
        .hide_from(common_builders.HideSeriesConfig().legend(False).tooltip(False).viz(False))
    )


def state_timeline(
    panel: PanelQueries,
    *,
    description: str,
    unit: str,
    thresholds: Sequence[tuple[float, str]],
    base: str = "green",
) -> statetimeline.Panel:
    """One band per series (e.g. per feature) over time, coloured by ``thresholds``."""
    return (
        statetimeline.Panel()
        .title(panel.title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(panel))
        .unit(unit)
        .thresholds(_thresholds(thresholds, base))
        .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(False)
        .line_width(0)
        .fill_opacity(70)
    )


def dashboard(
    uid: str, title: str, description: str, tags: Sequence[str], grid: Grid
) -> model.Dashboard:
    """A modelwatch dashboard: shared variables, time and refresh defaults, links to the others."""
    if uid not in UIDS:
        raise ValueError(f"unknown dashboard uid {uid!r}")
    built = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([*TAGS, *tags])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time(TIME_FROM, "now")
        .refresh(REFRESH)
        .timezone("browser")
        .variables(list(variables()))
        .link(
            dash.DashboardLink("modelwatch")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(list(TAGS))
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .build()
    )
    built.panels = grid.panels()
    return built
