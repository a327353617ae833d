"""The main job (``make demo``): a model server and its sidecar under steady, then drifted, traffic.

1. Build the breast-cancer demo model (``serving.train``) unless it is already built.
2. Start the sidecar (``python -m sidecar serve``, a 30 s window in 1 s slots so drift shows
   fast) and the model server (``python -m serving``) as child processes on free loopback ports,
   the model server logging predictions over the sidecar's Unix ingest socket (in a private
   folder of the temporary directory, removed at the end) as in a pod, then Prometheus and
   Alertmanager (when installed): Prometheus scrapes both every second and evaluates the
   rules of ``alerts.generate`` with every window scaled to the drift window (1 h becomes
   30 s, ``for: 15m`` 8 s); Alertmanager routes and inhibits as configured in
   ``alerts/alertmanager.yaml``, its receivers emptied, so it notifies no one and the view
   reads the alerts it holds.
3. Replay held-out rows with ``serving.loadgen``: ``steady``, then ``drift`` (a few features
   shifted), while a live view refreshes once a second: requests/s and p50/p95/p99 latency from
   the model server's own histogram, the top features by PSI and KS and the features the sidecar
   flags (from ``GET /v1/drift``), what the prediction logger sent, dropped or had rejected,
   and the alerts firing in Alertmanager (name and feature).
4. Print a summary naming the drifted features, the alerts that fired and where the outputs
   are (Prometheus' data included), and stop every child process, in a ``finally``, also on
   Ctrl-C or SIGTERM.

It ends by itself in about a minute and a half. The exit status is 0 when every shifted feature
was flagged and every prediction succeeded, 1 otherwise. Outputs go to ``var/demo/``, the
sidecar's spool and its NDJSON prediction logs included (``spool/`` and ``predictions/``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import httpx
import orjson

from serving import train
from serving._alerting import AlertingStack
from serving._demo_alerting import active_alerts, alerting_summary, fired_alerts, start_alerting
from serving._demo_processes import ManagedProcess, start_model_server, start_sidecar
from serving._demo_view import (
    LiveView,
    Observer,
    Tick,
    logger_outcomes,
    parse_drift,
    parse_server,
)
from serving.loadgen import (
    DEFAULT_DRIFT,
    LoadConfig,
    LoadResult,
    LoadStats,
    TrafficPlan,
    load_rows,
    parse_shifts,
    run_load,
)

DEFAULT_OUT = Path("var/demo")
SPOOL_DIR = "spool"
PREDICTIONS_DIR = "predictions"
"""Sub-folders of the output folder: the sidecar's spool and its NDJSON prediction logs."""
ALERTS_DIR = Path("alerts")
"""The repository's alerting folder: rules are generated from it, Alertmanager configured."""
SOCKET_DIR_PREFIX = "mw-"
INGEST_SOCKET = "ingest.sock"
"""The sidecar's ingest socket, in a private folder of the system's temporary directory."""
WINDOW_SECONDS = 30.0
SLOT_SECONDS = 1.0
TICK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the demo's processes listen."""

    serving: str
    sidecar_ingest: str
    sidecar_metrics: str
    prometheus: str | None = None
    alertmanager: str | None = None


@dataclass(frozen=True, slots=True)
class Phase:
    """One load phase and what the sidecar saw at its end."""

    result: LoadResult
    last: Tick | None
    drift: Any


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the drift was caught and every prediction succeeded."""
    args = _parser().parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    say = _Printer(sys.stdout)
    processes: list[ManagedProcess] = []
    alerting: AlertingStack | None = None
    # The ingest socket, as in a pod: a private folder with a short path (a socket path holds
    # at most 107 bytes, which a deep checkout's var/demo/ could exceed).
    socket_dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    ingest_socket = socket_dir / INGEST_SOCKET
    try:
        say(f"modelwatch demo: breast-cancer classifier, {args.rate:g} req/s × {args.concurrency}")
        model_dir = _ensure_model(args.model_dir, say)
        sidecar, ingest, metrics = start_sidecar(
            model_dir / train.PROFILE_FILE,
            out / "sidecar.log",
            spool_dir=out / SPOOL_DIR,
            predictions_dir=out / PREDICTIONS_DIR,
            window_seconds=args.window_seconds,
            slot_seconds=SLOT_SECONDS,
            ingest_socket=ingest_socket,
        )
        processes.append(sidecar)
        say(
            f"sidecar up (pid {sidecar.pid}): ingest 127.0.0.1:{ingest} and {ingest_socket}, "
            f"metrics 127.0.0.1:{metrics}, window {args.window_seconds:g} s in "
            f"{SLOT_SECONDS:g} s slots"
        )
        # Predictions are logged over the socket; the demo itself reads /v1/drift over TCP.
        server, port = start_model_server(
            model_dir, out / "serving.log", sidecar_url=f"unix://{ingest_socket}"
        )
        processes.append(server)
        say(f"model server up (pid {server.pid}): http://127.0.0.1:{port}")
        alerting = start_alerting(
            ALERTS_DIR,
            out,
            window_seconds=args.window_seconds,
            rate=args.rate,
            targets=(f"127.0.0.1:{metrics}", f"127.0.0.1:{port}"),
            say=say,
        )
        if alerting is not None:
            processes.extend(alerting.processes())
        endpoints = Endpoints(
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{ingest}",
            f"http://127.0.0.1:{metrics}",
            alerting.prometheus_url if alerting else None,
            alerting.alertmanager_url if alerting else None,
        )
        code = asyncio.run(_run(args, model_dir, endpoints, out, say))
    except KeyboardInterrupt:
        say("\ninterrupted; stopping")
        code = 130
    finally:
        for process in reversed(processes):
            status = process.stop()
            say(f"{process.name} stopped (exit {status}); log: {process.log_path}")
        shutil.rmtree(socket_dir, ignore_errors=True)
    return code


async def _run(
    args: argparse.Namespace, model_dir: Path, endpoints: Endpoints, out: Path, say: _Printer
) -> int:
    rows = load_rows(args.data, model_dir)
    shifts = parse_shifts(args.drift_features or DEFAULT_DRIFT)
    view = LiveView(sys.stdout, interactive=sys.stdout.isatty())
    observer = Observer()
    started = time.time()
    async with httpx.AsyncClient(timeout=5.0) as client:
        phases: dict[str, Phase] = {}
        for name, seconds, plan in (
            ("steady", args.steady_seconds, TrafficPlan("steady", seed=args.seed)),
            ("drift", args.drift_seconds, TrafficPlan("drift", shifts=shifts, seed=args.seed)),
        ):
            say(f"\n[{name}] {seconds:g} s of {args.data} rows" + _shift_text(plan))
            config = LoadConfig(
                url=endpoints.serving,
                model=train.MODEL_NAME,
                rate=args.rate,
                concurrency=args.concurrency,
                duration=seconds,
            )
            phases[name] = await _phase(name, config, rows, plan, client, endpoints, observer, view)
            view.release()
            say(phases[name].result.summary())
            say(f"  drift detected at the end: {_flagged_text(phases[name].drift)}")
        outputs = await _save_outputs(client, endpoints, out)
        fired = await fired_alerts(client, endpoints.prometheus, time.time() - started)
    code = _summary(phases, shifts, len(rows), outputs, _prediction_logs(out), say)
    alerting_summary(fired, shifts, out, say)
    return code


async def _phase(
    name: str,
    config: LoadConfig,
    rows: list[dict[str, Any]],
    plan: TrafficPlan,
    client: httpx.AsyncClient,
    endpoints: Endpoints,
    observer: Observer,
    view: LiveView,
) -> Phase:
    stats = LoadStats()
    started = time.monotonic()
    load = asyncio.create_task(run_load(config, rows, plan, stats=stats))
    last: Tick | None = None
    while True:
        done, _ = await asyncio.wait({load}, timeout=TICK_SECONDS)
        try:
            last = await _observe(
                name, time.monotonic() - started, stats, client, endpoints, observer
            )
        except httpx.HTTPError as exc:
            view_error = f"[{name}] scrape failed: {exc!r}"
            print(view_error, flush=True)
        else:
            view.show(last)
        if done:
            break
    drift = (await client.get(f"{endpoints.sidecar_ingest}/v1/drift")).json()
    return Phase(load.result(), last, drift)


async def _observe(
    phase: str,
    elapsed: float,
    stats: LoadStats,
    client: httpx.AsyncClient,
    endpoints: Endpoints,
    observer: Observer,
) -> Tick:
    metrics, drift, alerts = await asyncio.gather(
        client.get(f"{endpoints.serving}/metrics"),
        client.get(f"{endpoints.sidecar_ingest}/v1/drift"),
        active_alerts(client, endpoints.alertmanager),
    )
    scrape = parse_server(metrics.text, time.monotonic())
    client_errors = sum(n for code, n in stats.by_status.items() if 400 <= code < 500)
    return observer.tick(phase, elapsed, scrape, drift.json(), client_errors, alerts)


async def _save_outputs(
    client: httpx.AsyncClient, endpoints: Endpoints, out: Path
) -> dict[str, Path]:
    files = {
        "drift snapshot (GET /v1/drift)": (f"{endpoints.sidecar_ingest}/v1/drift", "drift.json"),
        "model server metrics": (f"{endpoints.serving}/metrics", "serving-metrics.prom"),
        "sidecar metrics": (f"{endpoints.sidecar_metrics}/metrics", "sidecar-metrics.prom"),
    }
    saved: dict[str, Path] = {}
    for label, (url, filename) in files.items():
        answer = await client.get(url)
        path = out / filename
        if filename.endswith(".json"):
            path.write_bytes(orjson.dumps(answer.json(), option=orjson.OPT_INDENT_2) + b"\n")
        else:
            path.write_text(answer.text)
        saved[label] = path
    return saved


def _summary(
    phases: dict[str, Phase],
    shifts: Sequence[Any],
    replayed: int,
    outputs: dict[str, Path],
    prediction_logs: str,
    say: _Printer,
) -> int:
    _, features, prediction_psi = parse_drift(phases["drift"].drift)
    flagged = [f for f in features if f.drifted]
    shifted = [s.feature for s in shifts]
    missed = [name for name in shifted if name not in {f.name for f in flagged}]
    false_alarms = [f.name for f in flagged if f.name not in shifted]
    steady_flags = [f.name for f in parse_drift(phases["steady"].drift)[1] if f.drifted]
    failures = sum(p.result.requests - p.result.ok for p in phases.values())
    last = phases["drift"].last
    say("\n══ summary " + "═" * 60)
    steady = "YES, " + ", ".join(steady_flags) if steady_flags else "no"
    say(f"  steady traffic: drift detected: {steady}")
    steady_top = phases["steady"].last.top_psi if phases["steady"].last else ()
    if steady_top:
        say(
            f"    (its highest PSI, {steady_top[0].name} {steady_top[0].psi:.3f}, is the sampling "
            f"noise of the {replayed} rows replayed; 0.2 is the usual alarm level)"
        )
    say(f"  shifted: {', '.join(str(s) for s in shifts)}")
    say("  drifted features flagged by the sidecar (KS/chi-square, corrected):")
    for feat in sorted(flagged, key=lambda f: -(f.psi or 0.0)):
        psi = "–" if feat.psi is None else f"{feat.psi:.3f}"
        ks = "" if feat.ks is None else f", KS D {feat.ks:.3f}"
        say(f"    {feat.name:<24} PSI {psi}{ks}")
    pred = "–" if prediction_psi is None else f"{prediction_psi:.3f}"
    say(f"  prediction PSI: {pred}")
    say(f"  missed: {', '.join(missed) or 'none'}")
    say(f"  flagged but not shifted: {', '.join(false_alarms) or 'none'}")
    say(f"  failed predictions: {failures}")
    if last is not None:
        say(f"  prediction logger (last scrape before shutdown): {logger_outcomes(last)}")
    say("  outputs:")
    for label, path in outputs.items():
        say(f"    {label}: {path}")
    say("    process logs (JSON lines): " + ", ".join(str(p) for p in _logs(outputs)))
    say(f"    prediction logs: {prediction_logs}")
    return 0 if not missed and failures == 0 else 1


def _prediction_logs(out: Path) -> str:
    """Where the sidecar ships each prediction: Elasticsearch when configured, else NDJSON files."""
    # The sidecar inherits the demo's environment (start_sidecar); only the URL decides the sink.
    if os.environ.get("MODELWATCH_ES_URL", "").strip():
        return "shipped to Elasticsearch (MODELWATCH_ES_URL), logs-modelwatch.predictions-*"
    return f"{out / PREDICTIONS_DIR}/ (NDJSON, one _bulk-ready line pair per prediction)"


def _logs(outputs: dict[str, Path]) -> list[Path]:
    folder = next(iter(outputs.values())).parent
    return sorted(folder.glob("*.log"))


def _ensure_model(model_dir: Path, say: _Printer) -> Path:
    if train.artefacts_present(model_dir):
        say(f"demo model: {model_dir} (already built)")
        return model_dir
    built = train.build(model_dir)
    say(
        f"demo model built in {model_dir}: {built.train_rows} training rows, "
        f"{built.holdout_rows} held out, held-out accuracy {built.holdout_accuracy:.3f}"
    )
    return model_dir


def _shift_text(plan: TrafficPlan) -> str:
    if plan.scenario != "drift":
        return ""
    return ", shifted: " + ", ".join(str(s) for s in plan.shifts)


def _flagged_text(body: Any) -> str:
    names = [f.name for f in parse_drift(body)[1] if f.drifted]
    return "YES: " + ", ".join(names) if names else "no"


def _stop_on_sigterm() -> None:
    def handler(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)


class _Printer:
    """Prints whole lines and flushes, so output interleaves correctly with the live view."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, text: str = "") -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.demo", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--model-dir", type=Path, default=train.DEFAULT_OUT)
    parser.add_argument("--data", default="holdout", help="rows to replay (holdout, train, path)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--drift-seconds", type=float, default=40.0)
    parser.add_argument("--window-seconds", type=float, default=WINDOW_SECONDS)
    parser.add_argument("--drift-features", action="append", default=[], metavar="SHIFT")
    parser.add_argument("--seed", type=int, default=2026)
    return parser


if __name__ == "__main__":
    _stop_on_sigterm()
    sys.exit(main())
