"""Real Prometheus and Alertmanager as child processes, for the demo and the integration tests.

``start_alerting`` writes a Prometheus configuration (static scrape targets, each with its
``job``, ``namespace`` and ``pod`` labels; one-second scrape and rule evaluation; the given rule
files; alerts sent to the Alertmanager started next to it) and an Alertmanager configuration
into one folder, starts both binaries on free loopback ports as ``ManagedProcess`` children,
each time with empty storage, and waits until both answer ``/-/ready``. ``AlertingStack.stop``
stops them (Prometheus first, so it does not log failed sends to a stopped Alertmanager).

``local_alertmanager_config`` turns the repository's ``alerts/alertmanager.yaml`` into a copy
that can run on one machine: the route tree and the inhibition rules are kept as they are,
every receiver keeps its name but delivers to one webhook URL (or to nothing), and the
grouping delays can be shortened so a notification arrives within seconds.
``start_repository_alerting`` puts the two together with the rules of ``alerts.generate``
scaled down. Nothing here reads the environment or decides a threshold.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from serving._demo_processes import ManagedProcess, ProcessFailedError, free_port

if TYPE_CHECKING:
    from alerts.config import RulesConfig

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")
"""Debian names the Alertmanager binary ``prometheus-alertmanager``; upstream ``alertmanager``."""
READY_TIMEOUT = 60.0
_GROUPING_KEYS = ("group_wait", "group_interval", "repeat_interval")


class AlertingUnavailableError(RuntimeError):
    """Prometheus or Alertmanager is not installed (the message names the binary)."""


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One ``host:port`` Prometheus scrapes, with the target labels the rules select on."""

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)
    honor_labels: bool = False
    """Keep the target's own ``namespace``/``pod`` labels (cAdvisor and DCGM style exporters)."""


@dataclass(frozen=True, slots=True)
class Grouping:
    """Alertmanager's grouping delays, as Prometheus duration strings (``1s``, ``5m``).

    A delay left at None keeps what the configuration says.
    """

    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None


@dataclass(slots=True)
class AlertingStack:
    """A running Prometheus and Alertmanager, and where their files are."""

    folder: Path
    prometheus: ManagedProcess
    prometheus_url: str
    alertmanager: ManagedProcess
    alertmanager_url: str

    @property
    def tsdb(self) -> Path:
        """Prometheus' data folder (it survives ``stop``)."""
        return self.folder / "prometheus-data"

    def processes(self) -> list[ManagedProcess]:
        """Both children in start order (stop them in reverse)."""
        return [self.alertmanager, self.prometheus]

    def stop(self) -> None:
        """Stop Prometheus, then Alertmanager."""
        for process in reversed(self.processes()):
            process.stop()


def find_binary(names: Sequence[str]) -> str:
    """The path of the first of ``names`` on PATH."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    raise AlertingUnavailableError(f"none of {', '.join(names)} is on PATH")


def prometheus_config(
    targets: Sequence[ScrapeTarget],
    rule_files: Sequence[Path],
    alertmanager: str | None,
    *,
    interval: str = "1s",
) -> dict[str, Any]:
    """A Prometheus configuration: one scrape job per ``job`` label, one static group per target."""
    jobs: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for target in targets:
        group = {"targets": [target.address], "labels": dict(target.labels)}
        jobs.setdefault((target.job, target.honor_labels), []).append(group)
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "honor_labels": honor, "static_configs": groups}
            for (job, honor), groups in jobs.items()
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return config


def local_alertmanager_config(
    source: str, webhook_url: str | None, grouping: Grouping | None = None
) -> str:
    """``source`` (Alertmanager YAML) with every receiver sent to ``webhook_url``, or nowhere.

    Receiver names, the route tree and the inhibition rules are kept, so routing and inhibition
    behave as in production. With ``grouping`` every route that sets a grouping delay (the root
    always) gets the ones given (those left at None stay as configured). Alertmanager names the
    receiver in each webhook payload (``receiver``), so one URL still shows where a
    notification was routed. ``global`` keeps only ``resolve_timeout``; ``templates`` go with
    the receivers that used them.
    """
    config = yaml.safe_load(source)
    if not isinstance(config, dict) or not isinstance(config.get("route"), dict):
        raise ValueError("an Alertmanager configuration needs a top-level route")
    receivers = [str(r["name"]) for r in config.get("receivers", [])]
    local: dict[str, Any] = {"route": config["route"]}
    resolve_timeout = (config.get("global") or {}).get("resolve_timeout")
    if resolve_timeout is not None:
        local["global"] = {"resolve_timeout": resolve_timeout}
    local["receivers"] = [_receiver(name, webhook_url) for name in receivers]
    if config.get("inhibit_rules"):
        local["inhibit_rules"] = config["inhibit_rules"]
    if grouping is not None:
        _set_grouping(local["route"], grouping, root=True)
    return yaml.safe_dump(local, sort_keys=False)


def start_alerting(
    folder: Path,
    targets: Sequence[ScrapeTarget],
    rules: Mapping[str, str],
    alertmanager_config: str,
    *,
    interval: str = "1s",
    timeout: float = READY_TIMEOUT,
) -> AlertingStack:
    """Write the configurations into ``folder``, start Alertmanager then Prometheus, wait ready.

    The data folders of an earlier start in ``folder`` are removed first.
    """
    prometheus_bin = find_binary(PROMETHEUS_BINARIES)
    alertmanager_bin = find_binary(ALERTMANAGER_BINARIES)
    # Prometheus resolves rule files against its configuration's folder: absolute paths only.
    folder = folder.resolve()
    # A previous run's series carry no staleness markers: Prometheus would take them as current
    # for five minutes and fire alerts from old data. Every start begins with empty storage.
    for data in ("prometheus-data", "alertmanager-data"):
        shutil.rmtree(folder / data, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    rules_dir = folder / "rules"
    rules_dir.mkdir(exist_ok=True)
    rule_files = []
    for name, text in sorted(rules.items()):
        (rules_dir / name).write_text(text)
        rule_files.append(rules_dir / name)
    am_config = folder / "alertmanager.yml"
    am_config.write_text(alertmanager_config)
    am_port = free_port()
    alertmanager = ManagedProcess(
        "alertmanager",
        [
            alertmanager_bin,
            f"--config.file={am_config}",
            f"--storage.path={folder / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        {},
        folder / "alertmanager.log",
    )
    started = [alertmanager]
    try:
        alertmanager_url = f"http://127.0.0.1:{am_port}"
        alertmanager.wait_ready(f"{alertmanager_url}/-/ready", timeout)
        config = prometheus_config(targets, rule_files, f"127.0.0.1:{am_port}", interval=interval)
        prom_config = folder / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(config, sort_keys=False))
        prom_port = free_port()
        prometheus = ManagedProcess(
            "prometheus",
            [
                prometheus_bin,
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={folder / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            {},
            folder / "prometheus.log",
        )
        started.append(prometheus)
        prometheus_url = f"http://127.0.0.1:{prom_port}"
        prometheus.wait_ready(f"{prometheus_url}/-/ready", timeout)
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
    return AlertingStack(folder, prometheus, prometheus_url, alertmanager, alertmanager_url)


def start_repository_alerting(
    folder: Path,
    alerts_dir: Path,
    targets: Sequence[ScrapeTarget],
    *,
    drift_window_seconds: float,
    webhook_url: str | None = None,
    grouping: Grouping | None = None,
) -> tuple[AlertingStack, RulesConfig]:
    """``start_alerting`` with the repository's rules and Alertmanager file, scaled down.

    Every window and ``for:`` of ``alerts.config.DEFAULT`` is scaled so that the fleet-PSI
    window (1 h) becomes ``drift_window_seconds`` (the sidecars' window), and the rules are
    rendered by ``alerts.generate``; the route tree and inhibition come from
    ``alerts_dir/alertmanager.yaml`` (see ``local_alertmanager_config``). Returns the stack and
    the scaled configuration (its windows, ``for:`` durations and thresholds).
    """
    from alerts.config import DEFAULT
    from alerts.generate import render_rules

    config = DEFAULT.scaled(drift_window_seconds / DEFAULT.psi_window.seconds)
    source = (alerts_dir / "alertmanager.yaml").read_text()
    stack = start_alerting(
        folder,
        targets,
        render_rules(config),
        local_alertmanager_config(source, webhook_url, grouping),
    )
    return stack, config


def _receiver(name: str, webhook_url: str | None) -> dict[str, Any]:
    if webhook_url is None:
        return {"name": name}
    return {"name": name, "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}


def _set_grouping(route: dict[str, Any], grouping: Grouping, *, root: bool) -> None:
    for key in _GROUPING_KEYS:
        value = getattr(grouping, key)
        if value is not None and (root or key in route):
            route[key] = value
    for child in route.get("routes") or []:
        _set_grouping(child, grouping, root=False)


__all__ = [
    "AlertingStack",
    "AlertingUnavailableError",
    "Grouping",
    "ProcessFailedError",
    "ScrapeTarget",
    "find_binary",
    "local_alertmanager_config",
    "prometheus_config",
    "start_alerting",
    "start_repository_alerting",
]
