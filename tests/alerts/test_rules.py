"""Generated Prometheus rules: valid, committed, named by convention, complete, and scalable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from alerts.config import DEFAULT, Duration, RulesConfig
from alerts.generate import RULES_DIR, check, main, render_rules, write
from tests.support.tools import run_tool

RUNBOOKS = "https://github.com/modelwatch/modelwatch/blob/main/alerts/runbooks"
FILES = {"drift.yaml", "latency-errors.yaml", "data-quality.yaml", "health.yaml"}

_FLEET = "namespace_model_version_feature"
_PRED = "namespace_model_version"
RECORDS = {
    f"{_FLEET}_bin:modelwatch_feature_bin_total:increase1h",
    f"{_FLEET}:modelwatch_feature_bin_total:increase1h",
    f"{_FLEET}_bin:modelwatch_feature_bin:share1h",
    f"{_FLEET}_bin:modelwatch_feature_reference_ratio:max",
    f"{_FLEET}:modelwatch_feature_psi:fleet1h",
    f"{_PRED}_bin:modelwatch_prediction_bin_total:increase1h",
    f"{_PRED}:modelwatch_prediction_bin_total:increase1h",
    f"{_PRED}_bin:modelwatch_prediction_bin:share1h",
    f"{_PRED}_bin:modelwatch_prediction_reference_ratio:max",
    f"{_PRED}:modelwatch_prediction_psi:fleet1h",
    "namespace_model_version:modelwatch_predictions:rate5m",
    "namespace_model_version:modelwatch_prediction_latency_seconds:histogram_quantile5m",
    *(
        f"namespace_model_version:modelwatch_prediction_{what}:ratio_rate{w}"
        for what in ("latency_slow", "errors")
        for w in ("5m", "30m", "1h", "6h", "3d")
    ),
    f"{_FLEET}:modelwatch_feature_missing:ratio_rate15m",
    f"{_FLEET}:modelwatch_feature_out_of_range:ratio_rate15m",
    f"{_FLEET}:modelwatch_feature_type_errors:ratio_rate15m",
    "namespace_model_version:modelwatch_model_accuracy:weighted",
}

_MODEL = ("namespace", "model", "version")
_FEATURE = (*_MODEL, "feature")
# alertname → (file, severities of its rules, labels its description must name)
ALERTS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "ModelwatchFeatureDrift": ("drift.yaml", ["warning", "critical"], _FEATURE),
    "ModelwatchFeatureDriftKS": ("drift.yaml", ["warning"], (*_FEATURE, "pod")),
    "ModelwatchPredictionDrift": ("drift.yaml", ["warning"], _MODEL),
    "ModelwatchModelAccuracyLow": ("drift.yaml", ["warning"], _MODEL),
    "ModelwatchLatencyBudgetBurn": (
        "latency-errors.yaml",
        ["critical", "critical", "warning"],
        _MODEL,
    ),
    "ModelwatchErrorBudgetBurn": (
        "latency-errors.yaml",
        ["critical", "critical", "warning"],
        _MODEL,
    ),
    "ModelwatchNoPredictions": ("latency-errors.yaml", ["warning"], ("namespace", "pod")),
    "ModelwatchFeatureMissingValues": ("data-quality.yaml", ["warning"], _FEATURE),
    "ModelwatchFeatureOutOfRange": ("data-quality.yaml", ["warning"], _FEATURE),
    "ModelwatchFeatureTypeErrors": ("data-quality.yaml", ["warning"], _FEATURE),
    "ModelwatchUnknownFeatures": ("data-quality.yaml", ["info"], _MODEL),
    "ModelwatchSidecarDown": ("health.yaml", ["warning"], ("namespace", "pod")),
    "ModelwatchSidecarAbsent": ("health.yaml", ["warning"], ("job",)),
    "ModelwatchLoggerDroppingEvents": ("health.yaml", ["warning"], (*_MODEL, "pod")),
    "ModelwatchEventsRejected": ("health.yaml", ["warning"], ("namespace", "pod")),
    "ModelwatchIngestRequestsRejected": (
        "health.yaml",
        ["warning"],
        ("namespace", "pod", "reason"),
    ),
    "ModelwatchShippingFailing": ("health.yaml", ["warning"], ("namespace", "pod")),
    "ModelwatchShippingDroppingDocuments": ("health.yaml", ["critical"], ("namespace", "pod")),
    "ModelwatchShippingLag": ("health.yaml", ["warning", "critical"], ("namespace", "pod")),
    "ModelwatchCollectorErrors": ("health.yaml", ["warning"], ("namespace", "pod", "source")),
    "Watchdog": ("health.yaml", ["none"], ()),
}

# Alerts whose value is a constant (1 or 0) and so not worth printing.
_CONSTANT_VALUE = {
    "Watchdog",
    "ModelwatchSidecarAbsent",
    "ModelwatchSidecarDown",
    "ModelwatchNoPredictions",
}

_RANGE = re.compile(r"\[(\w+)\]")


def _rules(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """Every rule of every rendered file, with its file name, in file order."""
    return [
        (name, rule)
        for name, text in rendered.items()
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
    ]


def _alerts(rendered: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, rule) for name, rule in _rules(rendered) if "alert" in rule]


def _promtool_check(directory: Path) -> None:
    paths = sorted(str(p) for p in directory.glob("*.yaml"))
    result = run_tool("promtool", "check", "rules", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts every committed rule file."""
    assert {p.name for p in RULES_DIR.glob("*.yaml")} == FILES
    _promtool_check(RULES_DIR)


def test_scaled_rules_pass_promtool_check(tmp_path: Path) -> None:
    """`promtool check rules` accepts the 1/60 copy and the copy with every window at 1s."""
    write(render_rules(DEFAULT.scaled(1 / 60)), tmp_path / "minute")
    write(render_rules(DEFAULT.scaled(1e-9)), tmp_path / "tiny")
    _promtool_check(tmp_path / "minute")
    _promtool_check(tmp_path / "tiny")


def test_committed_rules_equal_generator_output() -> None:
    """The committed rule files are exactly what the generator writes for the default config."""
    rendered = render_rules(DEFAULT)
    assert set(rendered) == FILES
    assert check(rendered, RULES_DIR) == ""


def test_rendering_is_deterministic() -> None:
    """Two renderings of the same config are byte-identical."""
    assert render_rules(DEFAULT) == render_rules(RulesConfig())


def test_multi_line_expressions_are_block_scalars() -> None:
    """Multi-line PromQL is written as `|` block scalars, never as escaped quoted strings."""
    text = render_rules(DEFAULT)["drift.yaml"]
    assert "expr: |-\n" in text
    assert "\\n" not in text


def test_check_exits_1_with_a_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--check` exits 0 on identical files and 1 with a unified diff after an edit."""
    write(render_rules(DEFAULT), tmp_path)
    assert main(["--check", "--out", str(tmp_path)]) == 0
    path = tmp_path / "health.yaml"
    path.write_text(path.read_text().replace("for: 5m", "for: 7m", 1))
    assert main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"--- {path}" in out
    assert "-        for: 7m" in out
    assert "+        for: 5m" in out


def test_out_and_scale_write_a_scaled_copy(tmp_path: Path) -> None:
    """`--out DIR --scale F` writes render_rules(DEFAULT.scaled(F)) into DIR."""
    assert main(["--out", str(tmp_path), "--scale", "0.5"]) == 0
    expected = render_rules(DEFAULT.scaled(0.5))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == expected


def test_recording_rule_names() -> None:
    """The recording rules are exactly the documented level:metric:operation names."""
    names = {rule["record"] for _, rule in _rules(render_rules(DEFAULT)) if "record" in rule}
    assert names == RECORDS
    for name in names:
        level, metric, operation = name.split(":")
        assert level.startswith("namespace_"), name
        assert metric.startswith("modelwatch_"), name
        assert operation, name


def test_latency_quantiles_are_labelled() -> None:
    """The latency quantile rule exists once per quantile, told apart by a `quantile` label."""
    quantiles = [
        rule["labels"]["quantile"]
        for _, rule in _rules(render_rules(DEFAULT))
        if rule.get("record", "").endswith(":histogram_quantile5m")
    ]
    assert quantiles == ["0.5", "0.95", "0.99"]


def test_alert_names_files_and_severities() -> None:
    """Each alertname lives in its concern's file with the documented severities."""
    found: dict[str, tuple[str, list[str]]] = {}
    for file, rule in _alerts(render_rules(DEFAULT)):
        name = rule["alert"]
        previous = found.setdefault(name, (file, []))
        assert previous[0] == file, name
        previous[1].append(rule["labels"]["severity"])
    assert found == {name: (file, sev) for name, (file, sev, _) in ALERTS.items()}


def test_every_alert_has_labels_annotations_and_for() -> None:
    """Every alert has a severity, summary, templated description, runbook_url and `for:`."""
    for _, rule in _alerts(render_rules(DEFAULT)):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info", "none"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook_url"] == f"{RUNBOOKS}/{name}.md"
        assert Duration.of(rule["for"]).seconds >= 1, name
        description = rule["annotations"]["description"]
        for label in ALERTS[name][2]:
            assert f"$labels.{label} }}}}" in description, (name, label)
        if name not in _CONSTANT_VALUE:
            assert "$value" in description, name


def test_burn_rate_alerts_carry_their_windows() -> None:
    """Burn-rate alerts name their long and short windows in labels, per the SLO table."""
    windows = [
        (rule["alert"], rule["labels"]["long_window"], rule["labels"]["short_window"], rule["for"])
        for _, rule in _alerts(render_rules(DEFAULT))
        if "long_window" in rule["labels"]
    ]
    table = [("1h", "5m", "2m"), ("6h", "30m", "15m"), ("3d", "6h", "1h")]
    assert windows == [
        (name, *row)
        for name in ("ModelwatchLatencyBudgetBurn", "ModelwatchErrorBudgetBurn")
        for row in table
    ]


def test_latency_slo_reads_the_threshold_bucket() -> None:
    """The slow ratio selects the bucket whose `le` is Python's repr of the SLO threshold."""
    default = render_rules(DEFAULT)["latency-errors.yaml"]
    assert 'le="0.25"' in default
    one_second = render_rules(RulesConfig(latency_slo_seconds=1))["latency-errors.yaml"]
    assert 'le="1.0"' in one_second
    assert 'le="0.25"' not in one_second


@pytest.mark.parametrize("factor", [1.0, 1 / 60], ids=["default", "scaled"])
def test_every_expression_parses(factor: float) -> None:
    """Every rule expression is valid PromQL for promql_parser."""
    for _, rule in _rules(render_rules(DEFAULT.scaled(factor))):
        promql_parser.parse(rule["expr"])


def test_no_expression_tests_nan_with_not_equal() -> None:
    """No expression compares with `!=`: NaN != x is true and would fire on missing data."""
    for _, rule in _rules(render_rules(DEFAULT)):
        assert "!=" not in rule["expr"], rule


def test_scaling_changes_windows_only() -> None:
    """scaled(1/60) shortens windows and `for:` but keeps names, labels and thresholds."""
    default = _rules(render_rules(DEFAULT))
    scaled = _rules(render_rules(DEFAULT.scaled(1 / 60)))
    assert len(default) == len(scaled)
    for (file_a, a), (file_b, b) in zip(default, scaled, strict=True):
        assert file_a == file_b
        assert a.get("record") == b.get("record")
        assert a.get("alert") == b.get("alert")
        assert a.get("labels") == b.get("labels")
        assert _RANGE.sub("[W]", a["expr"]) == _RANGE.sub("[W]", b["expr"])
        ranges_a = [Duration.of(r).seconds for r in _RANGE.findall(a["expr"])]
        ranges_b = [Duration.of(r).seconds for r in _RANGE.findall(b["expr"])]
        assert ranges_b == [max(1, round(r / 60)) for r in ranges_a]
        if "for" in a:
            assert Duration.of(b["for"]).seconds == max(
                1, round(Duration.of(a["for"]).seconds / 60)
            )
    assert DEFAULT.scaled(1 / 60).psi_window == Duration(60, "1h")
    assert DEFAULT.scaled(1 / 60).evaluation_interval == Duration(1, "1m")


def test_scaled_windows_never_go_below_one_second() -> None:
    """However small the factor, every window and `for:` stays at least 1s."""
    tiny = DEFAULT.scaled(1e-9)
    for _, rule in _rules(render_rules(tiny)):
        assert all(Duration.of(r).seconds >= 1 for r in _RANGE.findall(rule["expr"]))
        if "for" in rule:
            assert rule["for"] == "1s"
    assert all(b.short_window.seconds == 1 for b in tiny.burn_rates)


def test_scaling_rejects_a_non_positive_factor() -> None:
    """A zero or negative factor is refused rather than producing zero windows."""
    with pytest.raises(ValueError, match="positive"):
        DEFAULT.scaled(0)


def test_default_durations_match_their_labels() -> None:
    """Each default duration's seconds agree with the label that names it in rule names."""
    durations = [v for v in vars(DEFAULT).values() if isinstance(v, Duration)]
    durations += [d for b in DEFAULT.burn_rates for d in (b.long_window, b.short_window, b.for_)]
    for duration in durations:
        assert Duration.of(duration.label) == duration
        assert str(duration) == duration.label


@pytest.mark.parametrize("text", ["", "5", "m5", "1h 5m", "5x", "0s"])
def test_duration_rejects_malformed_text(text: str) -> None:
    """Duration.of refuses text that is not a positive Prometheus duration."""
    with pytest.raises(ValueError, match="duration"):
        Duration.of(text)
