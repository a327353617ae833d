"""The hand-written promtool unit tests in alerts/tests/ pass against the committed rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tools import run_tool

UNIT_TESTS = Path(__file__).parents[2] / "alerts" / "tests"
EXPECTED = {
    "drift.yaml",
    "latency-errors.yaml",
    "data-quality.yaml",
    "health.yaml",
    "fleet-psi.yaml",
}


def test_every_concern_has_a_unit_test_file() -> None:
    """alerts/tests/ holds one unit-test file per rule file plus the fleet-PSI one."""
    assert {p.name for p in UNIT_TESTS.glob("*.yaml")} == EXPECTED


@pytest.mark.parametrize("path", sorted(UNIT_TESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    """`promtool test rules` passes on this unit-test file."""
    result = run_tool("promtool", "test", "rules", str(path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
