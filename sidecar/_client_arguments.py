"""Validation of the prediction logger's constructor arguments: one ValueError naming each bad one.

The logger is built once at start-up, so a wrong argument fails there, loudly, with every
problem listed; ``log()`` itself does only the checks that cost nothing.
"""

from __future__ import annotations

import math

from sidecar._client_transport import parse_url


def check_arguments(
    *,
    model: str,
    version: str,
    url: str,
    token: str | None,
    max_buffer: int,
    batch_size: int,
    flush_interval: float,
    sample_rate: float,
    timeout: float,
    max_backoff: float,
) -> None:
    """Raise one ValueError naming every bad argument and why."""
    problems: list[str] = []
    for name, text in (("model", model), ("version", version)):
        if not isinstance(text, str) or not text:
            problems.append(f"{name}: must be a non-empty string, got {text!r}")
    try:
        parse_url(url)
    except ValueError as exc:
        problems.append(str(exc))
    if token is not None and (
        not isinstance(token, str) or not token or not token.isprintable() or " " in token
    ):
        # It goes into a header: a space or control character would corrupt the request.
        problems.append("token: must be a non-empty string without spaces or control characters")
    for name, count in (("max_buffer", max_buffer), ("batch_size", batch_size)):
        if not _is_int(count) or count < 1:
            problems.append(f"{name}: must be an integer >= 1, got {count!r}")
    if _is_int(max_buffer) and _is_int(batch_size) and batch_size > max_buffer:
        problems.append(f"batch_size: must be <= max_buffer ({max_buffer}), got {batch_size}")
    for name, seconds in (
        ("flush_interval", flush_interval),
        ("timeout", timeout),
        ("max_backoff", max_backoff),
    ):
        if not _is_number(seconds) or not 0 < seconds < math.inf:
            problems.append(f"{name}: must be a finite number of seconds > 0, got {seconds!r}")
    if not _is_number(sample_rate) or not 0 < sample_rate <= 1:
        problems.append(f"sample_rate: must be in (0, 1], got {sample_rate!r}")
    if problems:
        raise ValueError("invalid PredictionLogger arguments: " + "; ".join(problems))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
