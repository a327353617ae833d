"""modelwatch sidecar: drift statistics, latency histograms and prediction logs for a model server.

The public surface grows as modules land; see ``docs/`` for the contracts.
"""

from __future__ import annotations

__all__: list[str] = []
