"""The set of model monitors one sidecar serves, looked up by model name and version.

Built once at start-up from the mounted profiles and never changed afterwards, so readers
(the ingest app, the collector) need no lock to use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from sidecar.engine import EngineConfig, ModelMonitor
from sidecar.profile import Profile


class MonitorRegistry:
    """Model monitors by ``(model, version)``, in the order they were given."""

    def __init__(self, monitors: Iterable[ModelMonitor]) -> None:
        self._monitors: dict[tuple[str, str], ModelMonitor] = {}
        for monitor in monitors:
            key = (monitor.profile.model, monitor.profile.version)
            if key in self._monitors:
                raise ValueError(f"profiles: model {key[0]!r} version {key[1]!r} appears twice")
            self._monitors[key] = monitor

    @classmethod
    def from_profiles(
        cls,
        profiles: Iterable[Profile],
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> MonitorRegistry:
        """One monitor per profile, all with the same settings (defaults when None) and clock."""
        settings = EngineConfig() if config is None else config
        return cls(ModelMonitor(profile, settings, clock) for profile in profiles)

    def get(self, model: str, version: str) -> ModelMonitor | None:
        """The monitor of ``model``/``version``, or None when it is not served."""
        return self._monitors.get((model, version))

    def models(self) -> dict[str, list[str]]:
        """Every served model and its versions, in the order the profiles were given."""
        catalogue: dict[str, list[str]] = {}
        for model, version in self._monitors:
            catalogue.setdefault(model, []).append(version)
        return catalogue

    def __iter__(self) -> Iterator[ModelMonitor]:
        return iter(self._monitors.values())

    def __len__(self) -> int:
        return len(self._monitors)
