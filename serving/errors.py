"""The model server's exceptions, under the project's one tree.

    ModelwatchError (sidecar.errors)
    ├── ModelLoadError     the model or its metadata cannot be loaded (start-up; names the field)
    ├── RequestError       a client request is invalid (a 4xx naming the field and the reason)
    └── PredictionError    the model failed on requests that passed validation (a 5xx)

ONNX Runtime's and orjson's exceptions are translated into these where they are raised,
with the original kept as ``__cause__``.
"""

from __future__ import annotations

from sidecar.errors import ModelwatchError


class ModelLoadError(ModelwatchError):
    """The model cannot be served; ``field`` names the metadata field or ONNX part at fault."""

    def __init__(self, field: str, reason: str, *, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{reason}")


class RequestError(ModelwatchError):
    """A refused request: HTTP ``status``, a stable ``reason`` code, the bad ``field``."""

    def __init__(self, status: int, reason: str, field: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def to_json(self) -> dict[str, object]:
        """The error body: ``{"error": "<field>: <message>", "field": …, "reason": …}``."""
        return {"error": str(self), "field": self.field, "reason": self.reason}


class PredictionError(ModelwatchError):
    """The model raised on inputs that passed validation; the message is the runtime's reason."""
