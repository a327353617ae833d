"""The main job until the model server exists: the sidecar watching replayed, then drifted, data.

It uses scikit-learn's bundled breast-cancer dataset (no download):

1. split it, train a small classifier on the training split, and build the reference profile of
   the training split (features and the model's predictions) with ``sidecar profile build``;
2. start the real sidecar (``python -m sidecar serve``) on free loopback ports with a short window;
3. replay the held-out split, each row once, as prediction events (with per-row model latencies
   measured for real) and show what the sidecar reports: no drift;
4. wait for the window to empty, replay a copy with a few features shifted, and show which
   features the sidecar flags, with PSI, KS and the corrected p-values;
5. send the ground-truth labels of that copy and read the accuracy from ``/metrics``;
6. send a load of resampled events for a throughput figure, read latency quantiles, and stop.

Drift is judged on rows sent once each: resampled rows would repeat values and make the
tests' p-values look more certain than the data are.

It ends by itself. Everything it writes goes under ``var/demo/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MODEL = "breast-cancer"
VERSION = "1"
ROOT = Path(__file__).resolve().parent.parent
SHIFTS: Mapping[str, tuple[str, float]] = {
    # feature: (how, amount) — a drifted copy of the held-out data
    "mean_radius": ("scale", 1.25),
    "mean_texture": ("add", 5.0),
    "worst_area": ("scale", 1.5),
    "mean_smoothness": ("add", 0.02),
}


def _snake(name: str) -> str:
    return name.strip().replace(" ", "_").replace("-", "_")


def _say(text: str = "") -> None:
    print(text, flush=True)


class Sidecar:
    """The sidecar process, started on ephemeral loopback ports; its JSON log is kept on disk."""

    def __init__(self, profile: Path, workdir: Path, window_seconds: int) -> None:
        env = {
            **os.environ,
            "MODELWATCH_WINDOW_SECONDS": str(window_seconds),
            "MODELWATCH_SLOT_SECONDS": "1",
            "MODELWATCH_MIN_WINDOW_VALUES": "100",
            "MODELWATCH_LOG_FORMAT": "json",
        }
        self.log_path = workdir / "sidecar.log"
        self._log = self.log_path.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "--profile",
            str(profile),
            "--ingest-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.ingest_port, self.metrics_port = self._wait_for_ports(deadline=time.monotonic() + 30)

    def _wait_for_ports(self, deadline: float) -> tuple[int, int]:
        ingest = metrics = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"sidecar exited with {code}; see {self.log_path}")
            for line in self.log_path.read_bytes().splitlines():
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    ingest = record.get("ingest_port", ingest)
                    metrics = record.get("metrics_port", metrics)
            if isinstance(ingest, int) and isinstance(metrics, int):
                return ingest, metrics
            time.sleep(0.05)
        raise RuntimeError(f"sidecar did not report its ports in time; see {self.log_path}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def _train(workdir: Path) -> tuple[Any, dict[str, NDArray[np.float64]], NDArray[np.int64], Path]:
    data = load_breast_cancer()
    names = [_snake(n) for n in data.feature_names]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.35, random_state=7, stratify=data.target
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    train_pred = model.predict(x_train)
    table = pa.table(
        {
            **{name: x_train[:, i] for i, name in enumerate(names)},
            "prediction": pa.array([str(int(p)) for p in train_pred]),
        }
    )
    train_csv = workdir / "train.csv"
    pacsv.write_csv(table, train_csv)
    held_out = {name: x_test[:, i].astype(np.float64) for i, name in enumerate(names)}
    return model, held_out, y_test.astype(np.int64), train_csv


def _build_profile(train_csv: Path, workdir: Path) -> Path:
    out = workdir / "profile.json"
    cmd = [
        sys.executable,
        "-m",
        "sidecar",
        "profile",
        "build",
        "--data",
        str(train_csv),
        "--model",
        MODEL,
        "--version",
        VERSION,
        "--prediction-column",
        "prediction",
        "--categorical",
        "prediction",
        "--quiet",
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True)
    return out


def _shifted(columns: Mapping[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
    drifted = dict(columns)
    for name, (how, amount) in SHIFTS.items():
        drifted[name] = columns[name] * amount if how == "scale" else columns[name] + amount
    return drifted


def _row_latencies(model: Any, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Time the model on each row alone, as a server answering one request at a time would."""
    out = np.empty(len(matrix))
    for i, row in enumerate(matrix):
        start = time.perf_counter()
        model.predict_proba(row.reshape(1, -1))
        out[i] = time.perf_counter() - start
    return out


def _events(
    model: Any,
    columns: Mapping[str, NDArray[np.float64]],
    labels: NDArray[np.int64],
    rng: np.random.Generator,
    n: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Prediction events for the rows of ``columns``: each row once, or ``n`` resampled rows."""
    names = list(columns)
    matrix = np.column_stack([columns[name] for name in names])
    latencies = _row_latencies(model, matrix)
    proba = model.predict_proba(matrix)
    rows = np.arange(len(matrix)) if n is None else rng.integers(0, len(matrix), size=n)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events: list[dict[str, Any]] = []
    truth: dict[str, int] = {}
    for r in rows:
        event_id = uuid.uuid4().hex
        predicted = int(np.argmax(proba[r]))
        events.append(
            {
                "id": event_id,
                "timestamp": now,
                "latency_seconds": float(latencies[r]),
                "status": "ok",
                "features": {name: float(matrix[r, j]) for j, name in enumerate(names)},
                "prediction": predicted,
                "scores": {"0": float(proba[r, 0]), "1": float(proba[r, 1])},
            }
        )
        truth[event_id] = int(labels[r])
    return events, truth


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _replay(client: httpx.Client, events: list[dict[str, Any]], batch: int) -> tuple[int, float]:
    bodies = [
        orjson.dumps({"model": MODEL, "version": VERSION, "events": chunk})
        for chunk in _chunks(events, batch)
    ]
    accepted = 0
    start = time.perf_counter()
    for body in bodies:
        answer = client.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        answer.raise_for_status()
        result = answer.json()
        accepted += int(result["accepted"])
        if result["rejected"]:
            raise RuntimeError(f"sidecar rejected events: {result['rejected'][:3]}")
    return accepted, time.perf_counter() - start


def _drift(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/v1/drift", params={"model": MODEL, "version": VERSION})
    answer.raise_for_status()
    body: Any = answer.json()
    models = body["models"] if isinstance(body, dict) and "models" in body else body
    snapshot: dict[str, Any] = models[0] if isinstance(models, list) else models
    return snapshot


def _fmt(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _report_drift(snapshot: Mapping[str, Any]) -> list[str]:
    features = snapshot["features"]
    flagged = [f for f in features if f.get("drifted")]
    _say(
        f"  window: {snapshot['window_events']} events; correction: {snapshot['correction']} "
        f"at alpha={snapshot['alpha']}"
    )
    top = sorted(features, key=lambda f: -(f.get("psi") or 0.0))[:8]
    _say(f"  {'feature':<26}{'PSI':>9}{'KS D':>9}{'p (adj.)':>12}  drifted")
    for f in top:
        _say(
            f"  {f['feature']:<26}{_fmt(f.get('psi'), '.4f'):>9}"
            f"{_fmt(f.get('statistic'), '.4f'):>9}{_fmt(f.get('pvalue_adjusted'), '.2e'):>12}"
            f"  {'YES' if f.get('drifted') else 'no'}"
        )
    prediction = snapshot.get("prediction")
    if prediction:
        _say(
            f"  prediction drift: PSI {_fmt(prediction.get('psi'), '.4f')}, chi-square p "
            f"{_fmt(prediction.get('pvalue'), '.2e')}"
        )
    names = [str(f["feature"]) for f in flagged]
    _say(f"  drift detected in: {', '.join(names) if names else 'no feature'}")
    return names


def _wait_window_empty(client: httpx.Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        if int(_drift(client)["window_events"]) == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("the drift window did not empty in time")


def _histogram_quantiles(exposition: str, quantiles: tuple[float, ...]) -> dict[float, float]:
    """Quantiles from the latency histogram, interpolated inside buckets as Prometheus does."""
    buckets: list[tuple[float, float]] = []
    for line in exposition.splitlines():
        if line.startswith("modelwatch_prediction_latency_seconds_bucket{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), float(value)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    out: dict[float, float] = {}
    for q in quantiles:
        rank = q * total
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if math.isinf(le):
                    out[q] = prev_le
                else:
                    span = count - prev_count
                    out[q] = prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0)
                break
            prev_le, prev_count = le, count
    return out


def _metric(exposition: str, name: str) -> float | None:
    for line in exposition.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="events in the load phase")
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--window-seconds", type=int, default=15)
    args = parser.parse_args(argv)

    workdir = ROOT / "var" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)

    _say("modelwatch demo: breast-cancer classifier, replayed through the sidecar\n")
    model, held_out, labels, train_csv = _train(workdir)
    profile = _build_profile(train_csv, workdir)
    summary = json.loads(profile.read_text())
    _say(
        f"[1/6] profile built from {summary['rows']} training rows: "
        f"{len(summary['features'])} features + prediction -> {profile.relative_to(ROOT)}"
    )

    sidecar = Sidecar(profile, workdir, args.window_seconds)
    _say(
        f"[2/6] sidecar up: ingest 127.0.0.1:{sidecar.ingest_port}, "
        f"metrics 127.0.0.1:{sidecar.metrics_port} (window {args.window_seconds}s)"
    )
    failed = False
    try:
        ingest = httpx.Client(base_url=f"http://127.0.0.1:{sidecar.ingest_port}", timeout=30)
        metrics = httpx.Client(base_url=f"http://127.0.0.1:{sidecar.metrics_port}", timeout=30)

        events, _ = _events(model, held_out, labels, rng)
        accepted, _seconds = _replay(ingest, events, args.batch)
        _say(f"\n[3/6] held-out split replayed, each row once: {accepted} events")
        baseline_flags = _report_drift(_drift(ingest))

        _say(f"\n      waiting for the {args.window_seconds}s window to slide past the replay…")
        _wait_window_empty(ingest, deadline=time.monotonic() + args.window_seconds + 30)

        drifted_events, truth = _events(model, _shifted(held_out), labels, rng)
        accepted, _seconds = _replay(ingest, drifted_events, args.batch)
        _say(f"\n[4/6] drifted copy ({', '.join(SHIFTS)} shifted): {accepted} events")
        drift_flags = _report_drift(_drift(ingest))

        labels_body = [{"id": i, "label": str(v)} for i, v in truth.items()]
        answer = ingest.post(
            "/v1/feedback",
            content=orjson.dumps({"model": MODEL, "version": VERSION, "labels": labels_body}),
            headers={"content-type": "application/json"},
        )
        answer.raise_for_status()
        accuracy = _metric(metrics.get("/metrics").text, "modelwatch_model_accuracy")
        _say(
            f"\n[5/6] ground truth sent for the drifted copy: {answer.json()['joined']} labels "
            f"joined, accuracy {_fmt(accuracy, '.3f')}"
        )

        load, _ = _events(model, held_out, labels, rng, n=args.events)
        accepted, seconds = _replay(ingest, load, args.batch)
        q = _histogram_quantiles(metrics.get("/metrics").text, (0.5, 0.9, 0.99))
        _say(
            f"\n[6/6] load: {accepted} resampled events in {seconds:.2f}s "
            f"({accepted / seconds:,.0f} events/s over HTTP, batches of {args.batch}, one client)"
        )
        _say(
            f"      model latency from the sidecar histogram: p50 {q.get(0.5, 0) * 1e3:.2f} ms, "
            f"p90 {q.get(0.9, 0) * 1e3:.2f} ms, p99 {q.get(0.99, 0) * 1e3:.2f} ms"
        )
        missed = sorted(set(SHIFTS) - set(drift_flags))
        _say(
            f"\nsummary: {len(baseline_flags)} features flagged on held-out data, "
            f"{len(drift_flags)} on the drifted copy; shifted features missed: "
            f"{', '.join(missed) if missed else 'none'}"
        )
        failed = bool(missed)
    finally:
        code = sidecar.stop()
        log = sidecar.log_path.relative_to(ROOT)
        _say(f"sidecar stopped (exit {code}); its JSON log is in {log}")
    return 1 if failed or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
