"""The prediction-log pipeline of one sidecar: spool, sink, shipper, drift snapshots, metrics.

``ShippingPipeline`` is built from the settings and owned by ``sidecar.server.Sidecar``: the
ingest app calls ``on_accepted`` for every request with accepted events (on the event loop,
before the 202), a task on the event loop hands drift snapshots over every period (the
monitors are only read on the loop), and the shipper thread does everything else. A spool
that refuses a record (full, disk error) costs the request nothing: it still gets its 202, the
events are counted ``dropped`` and the spool logs once per episode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from structlog.typing import FilteringBoundLogger

from sidecar._dead_letter import DeadLetterFile
from sidecar._file_sink import NdjsonFileSink
from sidecar._ingest_types import ParsedEvents
from sidecar._shipping_metrics import ShippingCollector, ShippingStats
from sidecar._sink_types import Sink
from sidecar.engine import ModelMonitor
from sidecar.es_settings import document_builder
from sidecar.settings import Settings
from sidecar.shipper import Shipper, ShipperConfig
from sidecar.spool import Spool
from sidecar.spool_records import encode_parsed

DEAD_LETTER_DIR = "dead-letter"
"""Sub-directory of the spool directory holding the dead-letter files."""


class ShippingPipeline:
    """Spool, sink and shipper for ``settings``; ``start()`` on the loop, ``close()`` at the end."""

    def __init__(
        self,
        settings: Settings,
        monitors: Iterable[ModelMonitor],
        *,
        logger: FilteringBoundLogger,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._monitors = list(monitors)
        self._wall_clock = wall_clock
        self._period = settings.drift_snapshot_seconds
        self._logger = logger
        self.stats = ShippingStats()
        self.sink = _sink(settings)
        self.sink_name = "elasticsearch" if settings.es.enabled else "file"
        try:
            self.spool = Spool(
                settings.spool_dir,
                max_bytes=settings.spool_max_bytes,
                fsync_interval=settings.spool_fsync_seconds,
                clock=wall_clock,
                logger=logger.bind(component="spool"),
            )
        except BaseException:
            self.sink.close()
            raise
        self.shipper = Shipper(
            self.spool,
            self.sink,
            document_builder(settings.es),
            dead_letter=DeadLetterFile(settings.spool_dir / DEAD_LETTER_DIR, wall_clock=wall_clock),
            logger=logger.bind(component="shipper"),
            stats=self.stats,
            config=ShipperConfig(
                batch_docs=settings.es_batch_docs,
                batch_bytes=settings.es_batch_bytes,
                max_backoff_seconds=settings.es_max_backoff_seconds,
            ),
            wall_clock=wall_clock,
        )
        self.collector = ShippingCollector(self.stats, self.spool.stats, wall_clock=wall_clock)
        self._drift_task: asyncio.Task[None] | None = None

    def on_accepted(self, parsed: ParsedEvents) -> None:
        """Spool one accepted request (the ingest hook); a refusal is counted, never raised."""
        if self.spool.append(encode_parsed(parsed, self._wall_clock())):
            self.shipper.notify()
        else:
            self.stats.count("dropped", parsed.accepted)

    def start(self) -> None:
        """Start the shipper thread and, on the running loop, the drift snapshot task."""
        self.shipper.start()
        self._drift_task = asyncio.get_running_loop().create_task(self._snapshots())

    async def close(self, timeout: float) -> None:
        """Stop the snapshots and the shipper (bounded by ``timeout``), then sink and spool."""
        if self._drift_task is not None:
            self._drift_task.cancel()
            await asyncio.gather(self._drift_task, return_exceptions=True)
        # The shipper may be inside a bulk request; wait for it off the loop.
        stopped = await asyncio.to_thread(self.shipper.stop, timeout)
        if stopped:
            self.sink.close()
            self.spool.close()
        else:
            # Closing under a running shipper could fail its last commit; what is left in the
            # spool is replayed at the next start, and the OS releases the lock at exit.
            self._logger.warning("shipper did not stop in time; spool left to the next start")

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                snapshots = [monitor.drift() for monitor in self._monitors]
            except Exception:
                # Why: the drift history must not end for good because of one bad snapshot.
                self._logger.exception("drift snapshot failed")
                continue
            self.shipper.offer_drift(snapshots, self._wall_clock())


def _sink(settings: Settings) -> Sink:
    if settings.es.enabled:
        # Imported only when used: the client imports pyarrow when it is installed (its Arrow
        # serializer), about 25 MiB of resident memory a file-sink sidecar does not need.
        from sidecar._es_sink import ElasticsearchSink
        from sidecar.es_settings import build_client

        return ElasticsearchSink(build_client(settings.es))
    return NdjsonFileSink(settings.log_dir)
