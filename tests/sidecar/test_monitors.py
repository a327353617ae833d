"""The registry of model monitors: lookup by model and version, duplicates refused."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.engine import EngineConfig, ModelMonitor
from sidecar.monitors import MonitorRegistry
from sidecar.profile import Profile
from tests.support.profiles import make_profile


def _profile(model: str, version: str) -> Profile:
    return make_profile(model=model, version=version, numeric={"x": np.arange(20.0)})


def test_get_finds_each_model_version() -> None:
    """get() returns the monitor built for that (model, version) and None for anything else."""
    registry = MonitorRegistry.from_profiles([_profile("a", "1"), _profile("a", "2")])
    found = registry.get("a", "2")
    assert found is not None
    assert (found.profile.model, found.profile.version) == ("a", "2")
    assert registry.get("a", "3") is None
    assert registry.get("b", "1") is None


def test_models_lists_versions_in_given_order() -> None:
    """models() groups versions under their model, in the order the profiles were given."""
    registry = MonitorRegistry.from_profiles(
        [_profile("b", "7"), _profile("a", "1"), _profile("b", "3")]
    )
    assert registry.models() == {"b": ["7", "3"], "a": ["1"]}
    assert len(registry) == 3
    assert [(m.profile.model, m.profile.version) for m in registry] == [
        ("b", "7"),
        ("a", "1"),
        ("b", "3"),
    ]


def test_duplicate_model_version_is_refused() -> None:
    """Two profiles for the same model and version are a configuration error, named."""
    with pytest.raises(ValueError, match="model 'a' version '1' appears twice"):
        MonitorRegistry.from_profiles([_profile("a", "1"), _profile("a", "1")])


def test_from_profiles_passes_config_and_clock() -> None:
    """Every monitor gets the given settings and clock."""
    config = EngineConfig(window_seconds=120.0, slot_seconds=60.0)
    registry = MonitorRegistry.from_profiles([_profile("a", "1")], config, lambda: 42.0)
    monitor = registry.get("a", "1")
    assert isinstance(monitor, ModelMonitor)
    assert monitor.config is config
    assert monitor.drift().computed_at == 42.0
