"""Spool and prediction-log folders for the sidecars tests start: always under a temporary folder.

A sidecar with default settings spools into ``var/spool`` and writes NDJSON into
``var/predictions`` of its working directory, and holds a lock on the spool: two test runs, or a
test run and a developer's sidecar, would collide there (``BlockingIOError`` on the lock) and
leave files in the repository. Every test that builds a ``Sidecar``, calls ``run_serve`` or
starts ``python -m sidecar serve`` points both folders under its own ``tmp_path`` with these.
"""

from __future__ import annotations

from pathlib import Path

SPOOL_DIR_KEY = "MODELWATCH_SPOOL_DIR"
LOG_DIR_KEY = "MODELWATCH_LOG_DIR"
KEYS = (SPOOL_DIR_KEY, LOG_DIR_KEY)


def spool_dir(root: Path) -> Path:
    """The spool folder of a sidecar whose folders live under ``root``."""
    return root / "spool"


def log_dir(root: Path) -> Path:
    """The prediction-log (NDJSON) folder of a sidecar whose folders live under ``root``."""
    return root / "predictions"


def dirs_environ(root: Path) -> dict[str, str]:
    """``MODELWATCH_SPOOL_DIR`` and ``MODELWATCH_LOG_DIR`` under ``root``, for a process."""
    return {SPOOL_DIR_KEY: str(spool_dir(root)), LOG_DIR_KEY: str(log_dir(root))}


def dirs_overrides(root: Path) -> dict[str, object]:
    """The same folders as ``Settings.from_sources`` overrides (keyed by setting name)."""
    return {"spool_dir": str(spool_dir(root)), "log_dir": str(log_dir(root))}
