"""The exceptions modelwatch raises, one tree so callers can catch at the level they care about.

    ModelwatchError
    ├── ConfigError        a setting is missing or invalid (names every bad key)
    ├── ProfileError       a reference profile is malformed (names the JSON field)
    └── EventError         a prediction event or request body is invalid (names the field)

Third-party errors (orjson, pyarrow, …) are translated into these at the module boundary,
with the original kept as ``__cause__``.
"""

from __future__ import annotations


class ModelwatchError(Exception):
    """Base class of every error modelwatch raises on purpose."""


class ConfigError(ModelwatchError):
    """One or more settings are invalid; the message lists each bad key and why."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        lines = "; ".join(f"{key}: {why}" for key, why in sorted(self.problems.items()))
        super().__init__(f"invalid configuration: {lines}")


class ProfileError(ModelwatchError):
    """A reference profile is malformed; ``field`` is its JSON path (``features[3].psi.edges``)."""

    def __init__(self, field: str, reason: str, *, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {reason}")


class EventError(ModelwatchError):
    """A request body or one event in it is invalid; ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
