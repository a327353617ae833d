"""The model runtime: an ONNX Runtime session checked against its metadata, behind one method.

``Model`` is what the batcher calls: ``predict(inputs)`` maps ONNX input names to 2-D arrays
(one row per instance) and returns ``Outputs`` with one prediction (and score row) per instance.
``OnnxModel.load`` opens the session once at start-up with the CUDA execution provider first
when this onnxruntime build has it, CPU otherwise, and refuses a model whose inputs or outputs
disagree with ``metadata.json`` (``ModelLoadError`` naming the part), so a bad model stops the
server before it takes traffic rather than failing every request. Tests inject their own
``Model`` (a counting or failing one) in place of ONNX.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from serving.errors import ModelLoadError, PredictionError
from serving.metadata import DType, FeatureSpec, ModelMetadata

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

Inputs = Mapping[str, NDArray[Any]]
"""ONNX input name → array of shape (instances, columns)."""

_ONNX_TYPES: dict[str, DType] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(string)": "string",
}
NUMPY_DTYPES: dict[DType, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "string": np.str_,
}


@dataclass(frozen=True, slots=True)
class Outputs:
    """One model call's results: ``predictions`` (n,) and, for classifiers, ``scores`` (n, k)."""

    predictions: NDArray[Any]
    scores: NDArray[Any] | None = None

    def __len__(self) -> int:
        return int(self.predictions.shape[0])

    def slice(self, start: int, stop: int) -> Outputs:
        """The results of instances ``start:stop`` (views, no copies)."""
        scores = None if self.scores is None else self.scores[start:stop]
        return Outputs(self.predictions[start:stop], scores)


class Model(Protocol):
    """Anything that scores a batch; called from one worker thread, never concurrently."""

    def predict(self, inputs: Inputs) -> Outputs:
        """Score every row; raise ``PredictionError`` when the model cannot."""
        ...


class OnnxModel:
    """An ONNX Runtime inference session with the metadata that explains its inputs and outputs."""

    def __init__(self, session: ort.InferenceSession, metadata: ModelMetadata) -> None:
        self._session = session
        self.metadata = metadata
        self.provider: str = session.get_providers()[0]
        _check_signature(session, metadata)
        self._outputs = [metadata.prediction_output]
        if metadata.scores_output is not None:
            self._outputs.append(metadata.scores_output)
        self._zipmap_scores = metadata.scores_output is not None and _output_type(
            session, metadata.scores_output
        ).startswith("seq(map")
        self._classes = list(metadata.classes)

    @classmethod
    def load(
        cls, path: Path, metadata: ModelMetadata, *, threads: int = 0, use_cuda: bool = True
    ) -> OnnxModel:
        """Open ``path`` with CUDA first when available; ``ModelLoadError`` when it cannot serve.

        ``threads`` is ONNX Runtime's intra-op thread count (0 lets it choose).
        """
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=providers(use_cuda=use_cuda)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelLoadError(
                "model", f"ONNX Runtime cannot load it: {_first_line(exc)}", source=str(path)
            ) from exc
        try:
            return cls(session, metadata)
        except ModelLoadError as exc:
            raise ModelLoadError(exc.field, exc.reason, source=str(path)) from None

    def predict(self, inputs: Inputs) -> Outputs:
        """Run the session once over every row of ``inputs``."""
        try:
            results = self._session.run(self._outputs, dict(inputs))
        except Exception as exc:  # onnxruntime's errors carry no useful type
            raise PredictionError(_first_line(exc)) from exc
        predictions = np.asarray(results[0]).reshape(-1)
        if len(results) == 1:
            return Outputs(predictions)
        raw_scores = results[1]
        if self._zipmap_scores:
            scores = np.array([[row[c] for c in self._classes] for row in raw_scores], np.float32)
        else:
            scores = np.asarray(raw_scores)
        return Outputs(predictions, scores)


def providers(*, use_cuda: bool = True) -> list[str]:
    """Execution providers in preference order: CUDA when this build has it, then CPU."""
    available = ort.get_available_providers()
    chosen = [CUDA_PROVIDER] if use_cuda and CUDA_PROVIDER in available else []
    return [*chosen, CPU_PROVIDER]


def example_inputs(metadata: ModelMetadata, rows: int = 1) -> dict[str, NDArray[Any]]:
    """A batch of zeros (empty strings for string inputs): a warm-up call's inputs."""
    out: dict[str, NDArray[Any]] = {}
    for name, specs in metadata.inputs().items():
        dtype = NUMPY_DTYPES[specs[0].dtype]
        fill: object = "" if specs[0].dtype == "string" else 0
        out[name] = np.full((rows, len(specs)), fill, dtype=dtype)
    return out


def _check_signature(session: ort.InferenceSession, metadata: ModelMetadata) -> None:
    groups = metadata.inputs()
    onnx_inputs = {i.name: i for i in session.get_inputs()}
    for name, node in onnx_inputs.items():
        if name not in groups:
            raise ModelLoadError(
                "features", f"ONNX input {name!r} is fed by no feature (set a feature's 'input')"
            )
        _check_input(name, node.type, node.shape, groups[name])
    for name in groups:
        if name not in onnx_inputs:
            known = ", ".join(sorted(onnx_inputs))
            raise ModelLoadError(
                "features", f"the model has no ONNX input {name!r}; its inputs are {known}"
            )
    outputs = {o.name for o in session.get_outputs()}
    wanted = [("outputs.prediction", metadata.prediction_output)]
    if metadata.scores_output is not None:
        wanted.append(("outputs.scores", metadata.scores_output))
    for field, name in wanted:
        if name not in outputs:
            raise ModelLoadError(
                field, f"the model has no output {name!r}; its outputs are {sorted(outputs)}"
            )


def _check_input(
    name: str, onnx_type: str, shape: list[Any], specs: tuple[FeatureSpec, ...]
) -> None:
    dtype = _ONNX_TYPES.get(onnx_type)
    if dtype is None:
        raise ModelLoadError("features", f"ONNX input {name!r} has unsupported type {onnx_type}")
    for spec in specs:
        if spec.dtype != dtype:
            raise ModelLoadError(
                "features",
                f"feature {spec.name!r} is {spec.dtype} but ONNX input {name!r} is {dtype}",
            )
    if len(shape) != 2:
        raise ModelLoadError(
            "features", f"ONNX input {name!r} must be 2-D (rows, columns), has shape {shape}"
        )
    columns = shape[1]
    if isinstance(columns, int) and columns != len(specs):
        raise ModelLoadError(
            "features",
            f"ONNX input {name!r} takes {columns} column(s) but {len(specs)} feature(s) feed it",
        )


def _output_type(session: ort.InferenceSession, name: str) -> str:
    return next(str(o.type) for o in session.get_outputs() if o.name == name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
