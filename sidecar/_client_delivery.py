"""One batch to the sidecar: send it, read the answer, and say what became of every event.

``deliver`` never raises and never sleeps: it returns how many events were sent, how many were
rejected, which ones must be retried, and the problem to report. Waiting between retries and
counting belong to the logger (``sidecar.client``). The rules, from the ingest contract
(``docs/wire-format.md``):

- 2xx: accepted, except the events listed in ``rejected`` (invalid; never retried);
- 413: the body is too large; split it in halves and send each (one event alone is rejected);
- 408, 429, 5xx, or no answer at all (connection refused or reset, timeout): retry later;
- any other status (400, 401, 404, 415 …): the whole batch is refused; never retried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar._client_encoding import decode
from sidecar._client_transport import TransportResponse

Send = Callable[[bytes, float], TransportResponse]

RETRY_STATUSES = frozenset({408, 429})
"""Client-error statuses that mean "later", not "never"."""
TOO_LARGE = 413
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Problem:
    """Something worth one log line: ``kind`` keys the throttling, ``message`` has the context."""

    kind: str
    message: str


@dataclass(slots=True)
class Delivery:
    """What became of one batch; ``retry`` keeps the events' original order."""

    sent: int = 0
    rejected: int = 0
    retry: list[bytes] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def deliver(send: Send, head: bytes, tail: bytes, batch: list[bytes], timeout: float) -> Delivery:
    """Send ``batch`` (encoded events) framed by ``head`` and ``tail``; classify every event."""
    out = Delivery()
    pending = [batch]  # a stack; halves are pushed second-half first so order is kept
    while pending:
        part = pending.pop()
        if out.retry:  # the sidecar just failed; the rest waits for the next attempt
            out.retry.extend(part)
            continue
        try:
            answer = send(head + b",".join(part) + tail, timeout)
        except Exception as exc:  # the transport's contract: no answer, whatever the cause
            out.retry.extend(part)
            out.problems.append(Problem("unreachable", f"no answer from the sidecar: {_exc(exc)}"))
            continue
        status = answer.status
        if 200 <= status < 300:
            _accepted(out, len(part), answer.body)
        elif status == TOO_LARGE and len(part) > 1:
            middle = len(part) // 2
            pending += [part[middle:], part[:middle]]
        elif status in RETRY_STATUSES or status >= 500:
            out.retry.extend(part)
            out.problems.append(
                Problem("unavailable", f"the sidecar answered {_error(status, answer.body)}")
            )
        else:
            out.rejected += len(part)
            out.problems.append(
                Problem(
                    "refused",
                    f"the sidecar refused a batch of {len(part)} events with "
                    f"{_error(status, answer.body)}; they are counted as rejected and not retried",
                )
            )
    return out


def _accepted(out: Delivery, n: int, body: bytes) -> None:
    answer = decode(body)
    items = answer.get("rejected") if isinstance(answer, dict) else None
    rejected = [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []
    count = min(len(rejected), n)
    out.sent += n - count
    out.rejected += count
    if count:
        reasons = Counter(str(r.get("reason", "unknown")) for r in rejected)
        listed = ", ".join(f"{reason}={k}" for reason, k in sorted(reasons.items()))
        first = str(rejected[0].get("error", "no message"))[:_MAX_ERROR_CHARS]
        out.problems.append(
            Problem(
                "rejected",
                f"the sidecar rejected {count} of {n} events ({listed}); first: {first}; "
                "rejected events are counted and not retried",
            )
        )


def _error(status: int, body: bytes) -> str:
    """``status`` with the sidecar's reason and message when the body carries them."""
    answer = decode(body)
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        reason = error.get("reason", "")
        where = error.get("field", "")
        message = str(error.get("message", ""))[:_MAX_ERROR_CHARS]
        return f"{status} {reason} ({where}: {message})"
    snippet = body[:_MAX_ERROR_CHARS].decode("utf-8", "replace").strip()
    return f"{status} {snippet!r}" if snippet else str(status)


def _exc(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
