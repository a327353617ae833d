"""Model-server benchmarks: the prediction logger's overhead and micro-batching's gain.

``python -m bench.serving [--quick]`` (or ``python -m bench serving`` once registered) runs:

1. **Logging overhead.** Throughput and p99 latency at saturation with the prediction logger on
   (events sent to a stub ``/v1/events`` sink answering 202) versus off
   (``MODELWATCH_LOGGING_ENABLED=false``), in alternating rounds of the same run.
   Goal: throughput ratio on/off ≥ 0.97 and p99 increase < 1 ms. "Logging on" uses the
   production transport, a Unix socket (``MODELWATCH_SIDECAR_URL=unix://…``, the sink listening
   on one); ``--tcp`` (or ``MODELWATCH_BENCH_TCP=1``) adds a third arm, "logging on (tcp)",
   sending to the same sink over loopback TCP.
2. **Micro-batching.** Throughput at 64 concurrent clients with ``max_batch_size`` 32 versus 1,
   same run. Goal: ≥ 3×.

The server is a real ``python -m serving`` process pinned to one CPU core (ONNX Runtime with one
thread); the load generator is another process on another core, with keep-alive connections
(asyncio streams, one request in flight per connection) sending one-instance requests. The sink
runs in this process on the load generator's core. Figures are printed, never asserted.

Beside throughput, each round records the server process's CPU time per request (psutil, the
warm-up second included at the measured rate): on a shared machine, where other work steals the
server's core now and then, CPU per request moves far less than requests per second.

The micro-batching model is an MLP built with ``onnx.helper``: 3 inputs, four hidden layers of
2048 ReLU units, 2 classes (softmax scores, arg-max label); 12.6 M float32 weights, 48 MiB, more
than this machine's 32 MiB L3 cache. One row costs a pass over every weight from memory (about
1.4 ms on one core here), while 32 rows in one call cost little more than the same pass at
arithmetic speed (about 5 ms), which is what makes batching pay in real serving.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import shutil
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench._report import BenchResult, Goal, Measurement
from sidecar._listen import run_loop

ROOT = Path(__file__).resolve().parent.parent
MODEL = "tumour"
ROW: dict[str, object] = {"mean_radius": 17.5, "mean_texture": 21.0, "size_class": "large"}
MLP_MODEL = "mlp"
MLP_ROW: dict[str, object] = {"f0": 0.3, "f1": -1.2, "f2": 0.8}
MLP_HIDDEN = (2048, 2048, 2048, 2048)
LOGGING_CONNECTIONS = 32
BATCHING_CONNECTIONS = 64
_START_TIMEOUT = 60.0
_WARMUP_SECONDS = 1.0
TCP_ENV = "MODELWATCH_BENCH_TCP"
"""Set to 1 to add the "logging on (tcp)" arm (as ``--tcp`` does)."""


# --------------------------------------------------------------------------- load generator


@dataclass(frozen=True, slots=True)
class Load:
    """One load-generator run: answers, failures, seconds, and latency quantiles in seconds."""

    requests: int
    failures: int
    first_failure: str | None
    seconds: float
    p50: float
    p99: float
    server_cpu_us: float = math.nan
    """The server's CPU time per answered request, µs (set by the orchestrator)."""

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.failures) / self.seconds


async def _connection(
    port: int,
    request: bytes,
    stop_at: float,
    measure_from: float,
    out: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(request)
            status_line = await reader.readuntil(b"\r\n")
            length = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if now >= measure_from:
                out.append(done - now)
                if b" 200 " not in status_line:
                    errors.append(f"{status_line!r} {body[:200]!r}")
    finally:
        writer.close()


async def _drive(
    port: int, model: str, row: object, connections: int, warmup: float, seconds: float
) -> Load:
    body = orjson.dumps({"instances": [row]})
    request = (
        f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    latencies: list[float] = []
    errors: list[str] = []
    await asyncio.gather(
        *(
            _connection(port, request, stop_at, measure_from, latencies, errors)
            for _ in range(connections)
        )
    )
    ordered = sorted(latencies)
    return Load(
        requests=len(ordered),
        failures=len(errors),
        first_failure=errors[0] if errors else None,
        seconds=seconds,
        p50=ordered[len(ordered) // 2],
        p99=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    )


def _loadgen_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving loadgen")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--row", type=orjson.loads, default=ROW, help="one instance, JSON")
    parser.add_argument("--warmup", type=float, default=_WARMUP_SECONDS)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    load = run_loop(
        _drive(args.port, args.model, args.row, args.connections, args.warmup, args.seconds)
    )
    sys.stdout.write(orjson.dumps(_as_dict(load)).decode())
    return 0


def _as_dict(load: Load) -> dict[str, Any]:
    return {field.name: getattr(load, field.name) for field in dataclasses.fields(Load)}


# --------------------------------------------------------------------------- processes


def _cores() -> tuple[set[int], set[int]]:
    """The server's core and the load generator's core (the same one on a 1-core machine)."""
    available = sorted(os.sched_getaffinity(0))
    server = {available[0]}
    client = {available[1]} if len(available) > 1 else server
    return server, client


@contextmanager
def _server(model_dir: Path, core: set[int], **settings: str) -> Iterator[tuple[int, int]]:
    """A ready server: its port and its process id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELWATCH_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "MODELWATCH_MODEL_URI": str(model_dir),
            "MODELWATCH_SERVING_ADDR": "127.0.0.1:0",
            "MODELWATCH_ONNX_THREADS": "1",
            "MODELWATCH_LOG_LEVEL": "info",  # the port is read from the "listening" line
            **{f"MODELWATCH_{k.upper()}": v for k, v in settings.items()},
        }
    )
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=lambda: os.sched_setaffinity(0, core),
        )
        try:
            yield _wait_ready(process, stderr), process.pid
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def _wait_ready(process: subprocess.Popen[bytes], stderr: Any) -> int:
    import httpx

    deadline = time.monotonic() + _START_TIMEOUT
    port: int | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr.seek(0)
            raise RuntimeError(f"server exited {process.returncode}: {stderr.read()[-2000:]!r}")
        if port is None:
            stderr.seek(0)
            for line in stderr.read().splitlines():
                if line.startswith(b"{") and b'"listening"' in line:
                    port = int(orjson.loads(line)["port"])
        if port is not None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    return port
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise RuntimeError("the model server did not become ready in time")


def _load(
    port: int, model: str, row: object, connections: int, seconds: float, core: set[int]
) -> Load:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.serving",
            "loadgen",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--model",
            model,
            "--row",
            orjson.dumps(row).decode(),
            "--seconds",
            str(seconds),
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, core),
    )
    return Load(**orjson.loads(result.stdout))


class _Sink(BaseHTTPRequestHandler):
    """A stub sidecar ``/v1/events`` over TCP: reads the body, answers 202 with nothing rejected."""

    protocol_version = "HTTP/1.1"
    # The answer goes out in two writes; with Nagle on, the client's delayed ACK held each POST
    # for ~44 ms, capping the logger at ~11 400 events/s, below what the "on" server serves.
    disable_nagle_algorithm = True
    received = 0
    """Batches received, over either transport."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        _Sink.received += 1
        answer = b'{"accepted": 0, "rejected": []}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


class _UnixSink(_Sink):
    """The same sink on a Unix socket: no TCP option to set, and no peer address to show."""

    disable_nagle_algorithm = False  # TCP_NODELAY does not exist on AF_UNIX (EOPNOTSUPP)

    def address_string(self) -> str:
        """The peer of an AF_UNIX connection is unnamed (``client_address`` is ``""``)."""
        return "unix"


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # as ThreadingHTTPServer: a kept-alive connection never blocks close


@dataclass(frozen=True, slots=True)
class _SinkUrls:
    """Where the stub sink listens: ``http://127.0.0.1:port`` and ``unix:///…/sink.sock``."""

    tcp: str
    unix: str


@contextmanager
def _sink() -> Iterator[_SinkUrls]:
    """The stub sink on loopback TCP and on a Unix socket, each served by threads of its own."""
    folder = Path(tempfile.mkdtemp(prefix="mw-bench-"))  # short: a socket path holds ≤ 107 bytes
    path = folder / "sink.sock"
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        tcp = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        stack.callback(tcp.server_close)
        unix = _UnixServer(str(path), _UnixSink)
        stack.callback(unix.server_close)
        for server in (tcp, unix):
            threading.Thread(target=server.serve_forever, daemon=True).start()
            stack.callback(server.shutdown)
        yield _SinkUrls(f"http://127.0.0.1:{tcp.server_port}", f"unix://{path}")


# --------------------------------------------------------------------------- benchmarks


@contextmanager
def _pinned(core: set[int]) -> Iterator[None]:
    """Run the current process on ``core`` for a while (to time the MLP in process)."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, core)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def _rounds(
    model_dir: Path,
    variants: Mapping[str, Mapping[str, str]],
    *,
    model: str,
    row: object,
    connections: int,
    seconds: float,
    repeats: int,
    cores: tuple[set[int], set[int]],
) -> dict[str, list[Load]]:
    """Each variant ``repeats`` times, interleaved (A B A B …) so drift hits both alike."""
    out: dict[str, list[Load]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, settings in variants.items():
            with _server(model_dir, cores[0], **settings) as (port, pid):
                server = psutil.Process(pid)
                before = server.cpu_times()
                load = _load(port, model, row, connections, seconds, cores[1])
                after = server.cpu_times()
            cpu = (after.user + after.system) - (before.user + before.system)
            answered = load.throughput * (seconds + _WARMUP_SECONDS)
            load = dataclasses.replace(load, server_cpu_us=cpu / answered * 1e6)
            if load.failures:
                raise RuntimeError(f"{name}: {load.failures} failures, first {load.first_failure}")
            out[name].append(load)
            print(
                f"  {name:>16}: {load.throughput:8.0f} req/s  p50 {load.p50 * 1e3:6.2f} ms  "
                f"p99 {load.p99 * 1e3:6.2f} ms  server CPU {load.server_cpu_us:6.1f} µs/request",
                flush=True,
            )
    return out


def _best(loads: list[Load]) -> Load:
    return max(loads, key=lambda load: load.throughput)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _throughput(label: str, loads: list[Load]) -> Measurement:
    return Measurement(
        label,
        best=_best(loads).throughput,
        unit="req/s",
        median=_median([x.throughput for x in loads]),
        samples=len(loads),
    )


def _mlp_graph(hidden: tuple[int, ...], seed: int = 5) -> Any:
    """The MLP as an ONNX model: Gemm + Relu per hidden layer, then logits, softmax, arg-max."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes: list[Any] = []
    weights: list[Any] = []
    width, x = 3, "input"
    for i, units in enumerate((*hidden, 2)):
        w = (rng.standard_normal((width, units), dtype=np.float32) / np.sqrt(width)).astype(
            np.float32
        )
        weights += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(units, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"z{i}"]))
        x, width = f"z{i}", units
        if i < len(hidden):
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"]))
            x = f"a{i}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", [x], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _build_mlp(directory: Path) -> None:
    """The micro-batching benchmark's model (see the module docstring) and its metadata."""
    from serving.metadata import FeatureSpec, ModelMetadata

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(_mlp_graph(MLP_HIDDEN).SerializeToString())
    ModelMetadata(
        name=MLP_MODEL,
        version="1",
        task="classification",
        features=tuple(FeatureSpec(f"f{i}", "numeric", "float32", "input") for i in range(3)),
        prediction_output="label",
        scores_output="probabilities",
        classes=(0, 1),
    ).write(directory / "metadata.json")


def _mlp_call_costs(directory: Path, repeats: int = 30) -> dict[str, float]:
    """Median ms of one ONNX Runtime call (one thread) on 1 and on 32 rows, in this process."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    out: dict[str, float] = {}
    for rows in (1, 32):
        batch = np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
        session.run(None, {"input": batch})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {"input": batch})
            times.append(time.perf_counter() - started)
        out[f"batch_{rows}_ms"] = _median(times) * 1e3
    return out


def run(quick: bool = False, tcp: bool | None = None) -> BenchResult:
    """Both benchmarks; the figure is throughput with logging on, everything else beside it.

    ``tcp`` adds the "logging on (tcp)" arm; None reads ``MODELWATCH_BENCH_TCP``.
    """
    from tests.support.onnx_models import build_classifier

    if tcp is None:
        tcp = os.environ.get(TCP_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    started = time.perf_counter()
    seconds = 3.0 if quick else 8.0
    repeats = 1 if quick else 3
    cores = _cores()
    with tempfile.TemporaryDirectory(prefix="modelwatch-bench-serving-") as tmp, _sink() as urls:
        os.sched_setaffinity(0, cores[1])  # the sink shares the load generator's core
        model_dir = Path(tmp) / "model"
        build_classifier(model_dir)
        mlp_dir = Path(tmp) / "mlp"
        _build_mlp(mlp_dir)
        with _pinned(cores[0]):
            mlp_costs = _mlp_call_costs(mlp_dir)
        print(
            f"MLP call on one core: {mlp_costs['batch_1_ms']:.2f} ms for 1 row, "
            f"{mlp_costs['batch_32_ms']:.2f} ms for 32 rows"
        )
        print(
            f"logging overhead (logistic regression): {LOGGING_CONNECTIONS} connections, "
            f"{seconds:g} s × {repeats}"
        )
        arms: dict[str, Mapping[str, str]] = {
            "logging off": {"logging_enabled": "false"},
            "logging on": {"logging_enabled": "true", "sidecar_url": urls.unix},
        }
        if tcp:
            arms["logging on (tcp)"] = {"logging_enabled": "true", "sidecar_url": urls.tcp}
        logging = _rounds(
            model_dir,
            arms,
            model=MODEL,
            row=ROW,
            connections=LOGGING_CONNECTIONS,
            seconds=seconds,
            repeats=repeats,
            cores=cores,
        )
        print(
            f"micro-batching ({' × '.join(map(str, MLP_HIDDEN))} MLP): "
            f"{BATCHING_CONNECTIONS} connections, "
            f"{seconds:g} s × {repeats}"
        )
        batching = _rounds(
            mlp_dir,
            {
                "batch 32": {"max_batch_size": "32", "logging_enabled": "false"},
                "batch 1": {"max_batch_size": "1", "logging_enabled": "false"},
            },
            model=MLP_MODEL,
            row=MLP_ROW,
            connections=BATCHING_CONNECTIONS,
            seconds=seconds,
            repeats=repeats,
            cores=cores,
        )
    on, off = logging["logging on"], logging["logging off"]
    ratio = _median([x.throughput for x in on]) / _median([x.throughput for x in off])
    p99_increase_ms = (_median([x.p99 for x in on]) - _median([x.p99 for x in off])) * 1e3
    tcp_ratios = {}
    if "logging on (tcp)" in logging:
        on_tcp = logging["logging on (tcp)"]
        tcp_ratios["logging on (tcp)/off throughput (medians)"] = _median(
            [x.throughput for x in on_tcp]
        ) / _median([x.throughput for x in off])
    speedup = _median([x.throughput for x in batching["batch 32"]]) / _median(
        [x.throughput for x in batching["batch 1"]]
    )
    return BenchResult(
        name="serving",
        figure=_throughput("model server, logging on (batch 32)", on),
        baselines=[
            _throughput("model server, logging off", off),
            *(
                [_throughput("model server, logging on over TCP", logging["logging on (tcp)"])]
                if tcp
                else []
            ),
            _throughput(f"{BATCHING_CONNECTIONS} clients, max_batch_size 32", batching["batch 32"]),
            _throughput(f"{BATCHING_CONNECTIONS} clients, max_batch_size 1", batching["batch 1"]),
        ],
        ratios={
            "logging on/off throughput (medians)": ratio,
            "logging p99 increase ms (medians)": p99_increase_ms,
            "batching 32/1 throughput (medians)": speedup,
            **tcp_ratios,
        },
        goals=[
            Goal("logging throughput ratio >= 0.97", ratio >= 0.97),
            Goal("logging p99 increase < 1 ms", p99_increase_ms < 1.0),
            Goal("micro-batching >= 3x at 64 clients", speedup >= 3.0),
        ],
        details={
            "cores": {"server": sorted(cores[0]), "load_generator": sorted(cores[1])},
            "logging_on_transport": "unix socket",
            "mlp": {"hidden": list(MLP_HIDDEN), **mlp_costs},
            "server_cpu_us_per_request_medians": {
                name: _median([x.server_cpu_us for x in loads])
                for name, loads in {**logging, **batching}.items()
            },
            "seconds_per_round": seconds,
            "rounds": {
                name: [_as_dict(x) for x in loads]
                for name, loads in {**logging, **batching}.items()
            },
            "events_batches_received_by_sink": _Sink.received,
        },
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.serving [--quick]``; ``loadgen …`` is the load generator's entry."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "loadgen":
        return _loadgen_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round of each")
    parser.add_argument(
        "--tcp",
        action="store_true",
        default=None,
        help=f'add a "logging on (tcp)" arm: the sink over loopback TCP (or {TCP_ENV}=1)',
    )
    parsed = parser.parse_args(args)
    from bench._report import print_result

    print_result(run(quick=parsed.quick, tcp=parsed.tcp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
