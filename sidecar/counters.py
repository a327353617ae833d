"""Cumulative ingest counters shared by the ingest app (writer) and the collector (reader).

Reasons are a closed set so the ``reason`` label stays bounded; an unknown reason is a bug and
raises instead of minting a new series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EVENT_REJECT_REASONS = ("missing_field", "invalid_type", "invalid_value", "duplicate_id")
"""Why one event inside an accepted request was rejected (``modelwatch_events_rejected_total``)."""

REQUEST_REJECT_REASONS = (
    "unauthorized",
    "unsupported_media_type",
    "too_large",
    "invalid_json",
    "invalid_body",
    "unknown_model",
    "too_many_events",
    "timeout",
)
"""Why a whole request was refused (``modelwatch_ingest_requests_rejected_total``)."""

FEEDBACK_OUTCOMES = ("joined", "unmatched", "rejected")
"""What became of one feedback label (``modelwatch_feedback_labels_total``)."""


def _zeros(keys: tuple[str, ...]) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


@dataclass
class IngestCounters:
    """Totals since start; every key exists from the start so series are born at zero."""

    events_received: int = 0
    events_accepted: int = 0
    events_rejected: dict[str, int] = field(default_factory=lambda: _zeros(EVENT_REJECT_REASONS))
    requests_rejected: dict[str, int] = field(
        default_factory=lambda: _zeros(REQUEST_REJECT_REASONS)
    )
    feedback_labels: dict[str, int] = field(default_factory=lambda: _zeros(FEEDBACK_OUTCOMES))

    def reject_event(self, reason: str, n: int = 1) -> None:
        """Count ``n`` events rejected for ``reason`` (one of ``EVENT_REJECT_REASONS``)."""
        if reason not in self.events_rejected:
            raise ValueError(f"unknown event rejection reason {reason!r}")
        self.events_rejected[reason] += n

    def reject_request(self, reason: str) -> None:
        """Count one request refused for ``reason`` (one of ``REQUEST_REJECT_REASONS``)."""
        if reason not in self.requests_rejected:
            raise ValueError(f"unknown request rejection reason {reason!r}")
        self.requests_rejected[reason] += 1

    def feedback(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` feedback labels with ``outcome`` (one of ``FEEDBACK_OUTCOMES``)."""
        if outcome not in self.feedback_labels:
            raise ValueError(f"unknown feedback outcome {outcome!r}")
        self.feedback_labels[outcome] += n
