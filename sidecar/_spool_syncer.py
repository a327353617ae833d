"""The spool's background fsync: one daemon thread calling ``sync`` every ``interval`` seconds.

fsync runs here, not in ``append``, because ``append`` runs on the event loop: an fsync there
would stall every request behind the disk for as long as the flush takes (tens of milliseconds
on a busy volume). The price is the exposure documented in ``docs/spool.md``: a node crash (not a
process crash) can lose up to ``interval`` seconds of acknowledged records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from structlog.typing import FilteringBoundLogger


class PeriodicSync:
    """Calls ``action`` every ``interval`` seconds on its own thread until ``stop``."""

    def __init__(
        self, interval: float, action: Callable[[], None], logger: FilteringBoundLogger
    ) -> None:
        self._interval = interval
        self._action = action
        self._logger = logger
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelwatch-spool-sync", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish and wait for it; safe to call more than once."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._action()
            except Exception:  # the thread must outlive a bug, or syncing would stop silently
                self._logger.exception("spool_sync_bug")
