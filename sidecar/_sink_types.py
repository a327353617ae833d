"""The sink contract's value types: ``Outcome``, ``ItemResult`` and the ``Sink`` protocol.

Kept apart from ``sidecar.sinks`` (the public door) so the sink implementations can import
them without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sidecar.documents import Document


class Outcome(StrEnum):
    """What happened to one document (also the ``outcome`` label of the shipping metrics)."""

    DELIVERED = "delivered"
    """Stored (Elasticsearch 201, or written to a file)."""
    DUPLICATE = "duplicate"
    """Already stored under the same ``_id`` (409): a replay; counts as delivered."""
    RETRY = "retry"
    """Not stored this time (429, 5xx, connection trouble); send it again later."""
    DEAD = "dead"
    """Refused for good (mapping or validation error, a 4xx); ``reason`` says why."""


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one document and, unless delivered, the reason in words."""

    outcome: Outcome
    reason: str | None = None


DELIVERED = ItemResult(Outcome.DELIVERED)
DUPLICATE = ItemResult(Outcome.DUPLICATE)


class Sink(Protocol):
    """Ships documents somewhere; see the module docstring for the contract."""

    def send(self, documents: Sequence[Document]) -> list[ItemResult]:
        """One result per document, in the same order; never raises for transport trouble."""
        ...

    def close(self) -> None:
        """Release files and connections; the sink is not used afterwards."""
        ...


def retry_all(count: int, reason: str) -> list[ItemResult]:
    """``RETRY`` with ``reason`` for ``count`` documents (a whole request failed)."""
    result = ItemResult(Outcome.RETRY, reason)
    return [result] * count


def dead_all(count: int, reason: str) -> list[ItemResult]:
    """``DEAD`` with ``reason`` for ``count`` documents (a whole request was refused)."""
    result = ItemResult(Outcome.DEAD, reason)
    return [result] * count
