"""The values the ingest parser takes and returns: limits, the whole-request error, results.

Plain data only: no parsing happens here, so every parser module can import these without
import cycles. ``sidecar.events`` is the public door for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar.columns import EventColumns
from sidecar.counters import REQUEST_REJECT_REASONS
from sidecar.errors import EventError
from sidecar.profile import Profile

ProfileLookup = Callable[[str, str], Profile | None]
"""``lookup(model, version)``: the profile of a served model version, or None."""

Catalogue = Callable[[], Mapping[str, Sequence[str]]]
"""``catalogue()``: every served model and its versions, used to word 404 answers."""

Label = float | str

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds on one ingest request, so no client can make the sidecar's memory grow."""

    max_body_bytes: int = 8 * MiB
    max_events: int = 10_000
    max_id_length: int = 256
    max_warnings: int = 100


class RequestRejected(EventError):  # noqa: N818 - the name the ingest contract uses
    """The whole request is refused with HTTP ``status``; ``reason`` is a bounded code.

    ``reason`` is one of ``sidecar.counters.REQUEST_REJECT_REASONS``, ``field`` names the part
    of the request at fault (``events``, ``model``, ``Content-Type`` …) and ``message`` says
    what is wrong in words.
    """

    def __init__(self, status: int, reason: str, field: str, message: str) -> None:
        if reason not in REQUEST_REJECT_REASONS:
            raise ValueError(f"unknown request rejection reason {reason!r}")
        super().__init__(field, message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Rejection:
    """One dropped event (or label): where it sits, which field is wrong, and why."""

    index: int
    field: str
    reason: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"index", "field", "reason", "error"}``."""
        return {
            "index": self.index,
            "field": self.field,
            "reason": self.reason,
            "error": f"{self.field}: {self.message}",
        }


@dataclass(frozen=True, slots=True)
class EventWarning:
    """A problem in a kept event (a value not observed, an unknown feature name)."""

    index: int
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"index", "field", "warning"}``."""
        return {"index": self.index, "field": self.field, "warning": self.message}


@dataclass(frozen=True, slots=True, eq=False)
class ParsedEvents:
    """The result of one ``POST /v1/events``: columns for the engine plus the answer's parts.

    ``received`` counts the events in the request, ``accepted`` those kept (``columns.n``).
    ``accepted_events`` are the decoded event objects of the kept events, with ``timestamp``
    normalised to an RFC 3339 UTC string and ``status`` filled in, for the log shipper.
    ``body`` is the request body as received, so the spool can keep it without re-encoding.
    """

    model: str
    version: str
    profile: Profile
    columns: EventColumns
    received: int
    rejections: list[Rejection]
    warnings: list[EventWarning]
    accepted_events: Sequence[dict[str, Any]]
    warnings_dropped: int = 0
    body: bytes = b""

    @property
    def accepted(self) -> int:
        """Number of events kept."""
        return self.columns.n


@dataclass(frozen=True, slots=True, eq=False)
class ParsedFeedback:
    """The result of one ``POST /v1/feedback``: valid labels, converted to the prediction's kind.

    Numeric predictions get float labels; categorical ones get category keys
    (``sidecar.profile.category_key``), so labels compare with remembered predictions directly.
    """

    model: str
    version: str
    profile: Profile
    ids: list[str]
    labels: list[Label]
    received: int
    rejections: list[Rejection] = field(default_factory=list)
