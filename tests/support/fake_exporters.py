"""A tiny HTTP server exposing static cAdvisor- and DCGM-style series for Prometheus to scrape.

The dashboards plot container CPU and memory (cAdvisor, served by the kubelet) and GPU
utilisation (NVIDIA's DCGM exporter with its Kubernetes pod mapping on). Neither a kubelet nor
a GPU exists on a test machine, so this server stands in for both: it serves, on ``/metrics``,
``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes`` and
``DCGM_FI_DEV_GPU_UTIL`` with the ``namespace``, ``pod`` and ``container`` labels the real
exporters put on them. The CPU counter grows with wall time (a container using a fixed share of
a core), so ``rate()`` over it is non-empty; the other two are constant gauges. It proves only
that the panel queries select these series by the right names and labels, not that the real
exporters still export them under those names.

Scrape it with ``honor_labels: true`` so the series keep their own ``namespace`` and ``pod``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CPU_CORES_USED = 0.25
"""Share of one core each fake container uses: the CPU counter's rate."""
MEMORY_BYTES = 256 * 1024 * 1024
GPU_UTIL_PERCENT = 42.0


@dataclass(frozen=True, slots=True)
class FakeContainer:
    """One container the fake exporters report on."""

    namespace: str
    pod: str
    container: str
    gpu: bool = False


def exposition(containers: Sequence[FakeContainer], now: float, started: float) -> str:
    """The exposition at ``now``; the CPU counter counts from ``started``."""
    cpu = CPU_CORES_USED * max(0.0, now - started)
    lines = [
        "# TYPE container_cpu_usage_seconds_total counter",
        *(
            f'container_cpu_usage_seconds_total{{{_labels(c)},cpu="total"}} {cpu:.6f}'
            for c in containers
        ),
        "# TYPE container_memory_working_set_bytes gauge",
        *(f"container_memory_working_set_bytes{{{_labels(c)}}} {MEMORY_BYTES}" for c in containers),
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
        *(
            f'DCGM_FI_DEV_GPU_UTIL{{{_labels(c)},gpu="0",modelName="fake"}} {GPU_UTIL_PERCENT}'
            for c in containers
            if c.gpu
        ),
    ]
    return "\n".join(lines) + "\n"


@contextmanager
def serve_fake_exporters(containers: Sequence[FakeContainer]) -> Iterator[str]:
    """Serve the fake series on a free loopback port; yields its ``host:port``."""
    started = time.time()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = exposition(containers, time.time(), started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _labels(c: FakeContainer) -> str:
    return f'namespace="{c.namespace}",pod="{c.pod}",container="{c.container}"'
