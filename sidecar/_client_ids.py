"""Event ids for the prediction logger: unique, 32 hex characters, a fraction of a µs each.

An id is a per-process random prefix (96 bits from ``os.urandom``, 24 hex characters) followed
by a per-process counter (8 hex characters, more once it passes 2³²). Ids are unique within a
process by the counter and across processes by the prefix: two processes share a prefix with
probability about n² / 2⁹⁷ for n processes ever started. The prefix is drawn again in a forked
child, so a worker forked after import never repeats its parent's ids. They look like
``uuid4().hex`` (which costs several times more) but are sequential within a process: they are
keys, not secrets.
"""

from __future__ import annotations

import itertools
import os

_PREFIX_BYTES = 12


class _Ids:
    """The process's prefix and counter."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A new prefix and a counter from zero (at import, and in a forked child)."""
        self.prefix = os.urandom(_PREFIX_BYTES).hex()
        # next() on an itertools.count runs in C without releasing the GIL, so no two threads
        # ever get the same value and no lock is needed.
        self.counter = itertools.count()


_IDS = _Ids()
os.register_at_fork(after_in_child=_IDS.reset)


def new_event_id() -> str:
    """A new event id: unique across threads and processes, 32 hex characters."""
    return f"{_IDS.prefix}{next(_IDS.counter):08x}"
