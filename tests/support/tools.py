"""Find and run the real external tools the tests rely on (promtool, prometheus, amtool …).

A missing tool fails the test with the install hint instead of skipping it: a suite that
silently skips its integration checks passes while proving nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SETUP_HINT = "scripts/setup.sh"

_DEBIAN_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
}


def require_tool(name: str) -> Path:
    """The absolute path of executable ``name``; fails the test loudly when it is not installed."""
    found = shutil.which(name)
    if found is None:
        package = _DEBIAN_PACKAGES.get(name)
        source = f" (Debian package {package!r})" if package else ""
        pytest.fail(
            f"required tool {name!r}{source} is not on PATH; install it with {SETUP_HINT}",
            pytrace=False,
        )
    return Path(found)


def run_tool(
    name: str, *args: str, stdin: str | bytes | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``name args…`` to completion and return its exit code and text output."""
    data = stdin.decode() if isinstance(stdin, bytes) else stdin
    return subprocess.run(
        [str(require_tool(name)), *args],
        input=data,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def promtool_check_metrics(exposition: str | bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on a text exposition (exit 0 and no output means clean)."""
    return run_tool("promtool", "check", "metrics", stdin=exposition)
