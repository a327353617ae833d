"""The ``python -m serving`` process: settings, logging, the app, one uvicorn listener, signals.

``run`` is the only place that reads the environment. It fails fast, exit 2, on bad settings,
a missing or malformed ``metadata.json`` or an address it cannot listen on; it then listens
(``/healthz`` answers at once, ``/readyz`` once the model is loaded) while the ONNX session loads
on a thread. A model that fails to load stops the process with exit 1 and the reason in the log:
never a server that is alive but cannot predict. SIGTERM or SIGINT stop accepting connections,
let in-flight requests and queued batches finish, flush the prediction log within its deadline,
and exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Mapping

from prometheus_client import CollectorRegistry
from structlog.typing import FilteringBoundLogger

from serving.app import create_app
from serving.errors import ModelLoadError
from serving.metadata import ModelLocation, ModelMetadata, load_metadata, locate
from serving.model import OnnxModel, example_inputs
from serving.prediction_log import sidecar_prediction_log
from serving.settings import ServingSettings, env_key
from sidecar._listen import QuietServer, bind, run_loop, stop_on_signals, uvicorn_config
from sidecar.errors import ConfigError
from sidecar.logs import configure_logging, get_logger
from sidecar.metrics import package_version

SERVICE_NAME = "modelwatch-serving"
EVENT_DATASET = "modelwatch.serving"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
SHUTDOWN_GRACE_SECONDS = 20
"""How long in-flight requests may run after SIGTERM (Kubernetes waits 30 s by default)."""


def main() -> int:
    """Entry point of ``python -m serving``."""
    return run(os.environ)


def run(environ: Mapping[str, str]) -> int:
    """Serve until SIGTERM/SIGINT: 0 on a clean stop, 1 if the model cannot load, 2 on bad input."""
    try:
        settings = ServingSettings.from_environ(environ)
    except ConfigError as exc:
        _configure()
        get_logger().error(str(exc), problems=exc.problems)
        return EXIT_USAGE
    _configure(settings.log_level, settings.log_format)
    logger = get_logger()
    logger.info("starting", version=package_version(), config=settings.redacted())
    try:
        location = locate(settings.model_uri)
        metadata = load_metadata(location.metadata_path)
    except ModelLoadError as exc:
        logger.error(str(exc), field=exc.field, reason=exc.reason, file=exc.source)
        return EXIT_USAGE
    logger = logger.bind(**{"ml.model.name": metadata.name, "ml.model.version": metadata.version})
    try:
        sock = bind(settings.serving_addr, env_key("serving_addr"))
    except ConfigError as exc:
        logger.error(str(exc), problems=exc.problems)
        return EXIT_USAGE
    outcome = run_loop(_serve(settings, metadata, location, sock, logger))
    if outcome != EXIT_OK:
        return outcome
    logger.info("stopped")
    return EXIT_OK


async def _serve(
    settings: ServingSettings,
    metadata: ModelMetadata,
    location: ModelLocation,
    sock: socket.socket,
    logger: FilteringBoundLogger,
) -> int:
    registry = CollectorRegistry(auto_describe=True)
    outcome = EXIT_OK
    server: QuietServer | None = None

    def request_exit() -> None:
        if server is not None:
            server.should_exit = True

    def load_failed(_: BaseException) -> None:
        nonlocal outcome
        outcome = EXIT_FAILURE
        request_exit()

    def load() -> OnnxModel:
        return _load_model(settings, metadata, location, logger)

    app = create_app(
        settings,
        metadata,
        load_model=load,
        prediction_log=sidecar_prediction_log(
            settings, model=metadata.name, version=metadata.version, registry=registry
        ),
        registry=registry,
        logger=logger,
        on_load_failed=load_failed,
    )
    server = QuietServer(
        uvicorn_config(app, settings.log_level, lifespan="on", grace_seconds=SHUTDOWN_GRACE_SECONDS)
    )
    stop_on_signals(logger, request_exit)
    host, port = sock.getsockname()[:2]
    serve_task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serve_task.done():
        await asyncio.sleep(0.005)
    if server.started:
        logger.info("listening", host=host, port=port, serving_port=port)
    await serve_task
    if outcome == EXIT_OK and not server.started:
        logger.error("the listener failed to start (see the log above)")
        return EXIT_FAILURE
    return outcome


def _load_model(
    settings: ServingSettings,
    metadata: ModelMetadata,
    location: ModelLocation,
    logger: FilteringBoundLogger,
) -> OnnxModel:
    model = OnnxModel.load(location.model_path, metadata, threads=settings.onnx_threads)
    try:
        model.predict(example_inputs(metadata))
    except Exception as exc:  # a warm-up on zeros may legitimately fail for some models
        logger.warning("warm-up prediction failed; serving anyway", error=str(exc))
    # Everything alive now (modules, the model, the app) lives as long as the process. Frozen,
    # it leaves the collector's generations, so a full collection no longer walks ~90 000
    # long-lived objects: at saturation that was ~35 ms every ~1 700 requests, a fifth of the
    # CPU and most of the p99 (docs/performance.md).
    gc.collect()
    gc.freeze()
    return model


def _configure(level: str = "info", fmt: str = "json") -> None:
    configure_logging(level, fmt, service_name=SERVICE_NAME, dataset=EVENT_DATASET)
