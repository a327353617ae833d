"""Error responses of the test Elasticsearch server, shaped as a real node shapes them.

"Common options" of the Elasticsearch reference: an error answer is
``{"error": {"root_cause": [...], "type", "reason", ...}, "status": N}``; a few routing errors
(unknown URL, wrong method, unsupported media type) carry a plain string ``error`` instead.
"""

from __future__ import annotations

from typing import Any


class RestError(Exception):
    """A whole-request error, rendered as Elasticsearch renders it."""

    def __init__(self, status: int, error: dict[str, Any] | str) -> None:
        super().__init__(error if isinstance(error, str) else error["reason"])
        self.status = status
        self.error = error

    def body(self) -> dict[str, Any]:
        """The response body: ``{"error": {"root_cause", "type", "reason", ...}, "status"}``."""
        if isinstance(self.error, str):
            return {"error": self.error, "status": self.status}
        root = {k: v for k, v in self.error.items() if k != "caused_by"}
        return {"error": {"root_cause": [root], **self.error}, "status": self.status}


def api_error(status: int, error_type: str, reason: str, **extra: Any) -> RestError:
    """An :class:`RestError` with the structured ``error`` object."""
    return RestError(status, {"type": error_type, "reason": reason, **extra})


def index_not_found(name: str) -> RestError:
    """The 404 a request naming a missing index or data stream gets."""
    return api_error(
        404,
        "index_not_found_exception",
        f"no such index [{name}]",
        **{"resource.type": "index_or_alias", "resource.id": name},
        index_uuid="_na_",
        index=name,
    )
