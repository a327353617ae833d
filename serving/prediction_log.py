"""The seam between the model server and the prediction logger (``sidecar.client``).

``PredictionLog`` is the part of ``sidecar.client.PredictionLogger`` the server uses:
``log_many`` (all instances of one request in one call) never blocks and never raises, so the
predict route calls it inline. ``NullPredictionLog`` is
what runs with ``MODELWATCH_LOGGING_ENABLED=false`` (the logging-overhead benchmark's "off"
side): it does nothing, so "off" measures the server without logging at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from serving.settings import ServingSettings


class PredictionLog(Protocol):
    """A non-blocking sink for prediction events."""

    def start(self) -> None:
        """Start flushing in the background (called once, inside the event loop)."""
        ...

    def log_many(
        self,
        *,
        features: Sequence[Mapping[str, Any]],
        predictions: Sequence[Any],
        latency_seconds: float,
        status: str = "ok",
        event_ids: Sequence[str] | None = None,
        scores: Sequence[Mapping[str, float] | None] | None = None,
        trace_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> list[str | None]:
        """Queue one event per row; never blocks or raises. The ids, None where not kept."""
        ...

    async def aclose(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout`` seconds and stop."""
        ...


class NullPredictionLog:
    """Logs nothing (logging disabled)."""

    def start(self) -> None:
        """Nothing to start."""

    def log_many(self, *, features: Sequence[Mapping[str, Any]], **_: object) -> list[str | None]:
        """Drop the events (the other arguments are those of ``PredictionLog.log_many``)."""
        return [None] * len(features)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Nothing to flush."""


def sidecar_prediction_log(
    settings: ServingSettings, *, model: str, version: str, registry: CollectorRegistry
) -> PredictionLog:
    """The logger to the sidecar named in ``settings`` (a null one when logging is disabled)."""
    if not settings.logging_enabled:
        return NullPredictionLog()
    from sidecar.client import PredictionLogger  # the client is optional for tests with fakes

    logger: PredictionLog = PredictionLogger(
        model=model,
        version=version,
        url=settings.sidecar_url,
        token=settings.ingest_token,
        sample_rate=settings.log_sample_rate,
        registry=registry,
    )
    return logger
