"""modelwatch model server: KServe V1 predict over an ONNX model, logging to the sidecar."""

from __future__ import annotations

__all__: list[str] = []
