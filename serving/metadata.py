"""Model metadata: the ``metadata.json`` beside ``model.onnx`` naming, versioning, typing a model.

The file is the contract between whoever exports a model and the server: the model's name and
version (in every metric, log line and response header), its features in request order with
kind and dtype, which ONNX input each feature feeds, and what the outputs mean. The format is
documented in ``docs/serving.md``. ``load_metadata`` validates the whole file and raises
``ModelLoadError`` naming the JSON field of the first problem; it never touches ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from serving.errors import ModelLoadError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
MODEL_FILE = "model.onnx"

Kind = Literal["numeric", "categorical"]
Task = Literal["classification", "regression"]
DType = Literal["float32", "float64", "int64", "string"]

NUMERIC_DTYPES: tuple[DType, ...] = ("float32", "float64", "int64")
_KINDS: tuple[Kind, ...] = ("numeric", "categorical")
_TASKS: tuple[Task, ...] = ("classification", "regression")
_DTYPES: tuple[DType, ...] = ("float32", "float64", "int64", "string")


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One model input feature: its name, kind, dtype and the ONNX input it is a column of."""

    name: str
    kind: Kind
    dtype: DType
    input: str
    nullable: bool = False
    """A numeric feature that may be ``null`` (sent to the model as NaN, e.g. before an imputer)."""

    def to_dict(self) -> dict[str, object]:
        """The feature as it appears in ``metadata.json``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "input": self.input,
            "nullable": self.nullable,
        }


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """Everything the server knows about a model before it opens the ONNX file."""

    name: str
    version: str
    task: Task
    features: tuple[FeatureSpec, ...]
    prediction_output: str
    scores_output: str | None = None
    classes: tuple[str | int, ...] = ()
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in request (list-row) order."""
        return tuple(f.name for f in self.features)

    def inputs(self) -> dict[str, tuple[FeatureSpec, ...]]:
        """Features grouped by ONNX input, each group in feature order (its column order)."""
        groups: dict[str, list[FeatureSpec]] = {}
        for spec in self.features:
            groups.setdefault(spec.input, []).append(spec)
        return {name: tuple(specs) for name, specs in groups.items()}

    def to_dict(self) -> dict[str, object]:
        """The metadata as written to ``metadata.json`` (what ``GET /v1/models/{name}`` shows)."""
        outputs: dict[str, str] = {"prediction": self.prediction_output}
        if self.scores_output is not None:
            outputs["scores"] = self.scores_output
        out: dict[str, object] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "features": [f.to_dict() for f in self.features],
            "outputs": outputs,
        }
        if self.task == "classification":
            out["classes"] = list(self.classes)
        if self.description:
            out["description"] = self.description
        if self.extra:
            out["extra"] = dict(self.extra)
        return out

    def write(self, path: Path) -> None:
        """Write ``metadata.json`` (pretty, stable key order) to ``path``."""
        path.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")


@dataclass(frozen=True, slots=True)
class ModelLocation:
    """Where a model's two files are."""

    model_path: Path
    metadata_path: Path


def locate(uri: Path) -> ModelLocation:
    """The model and metadata files for ``MODELWATCH_MODEL_URI``.

    A directory must hold ``model.onnx`` and ``metadata.json``; a file path is the ``.onnx``
    file itself, with ``metadata.json`` in the same directory.
    """
    if uri.is_dir():
        model_path = uri / MODEL_FILE
        metadata_path = uri / METADATA_FILE
    else:
        model_path = uri
        metadata_path = uri.parent / METADATA_FILE
    if not model_path.is_file():
        raise ModelLoadError("model", f"no model file at {model_path}", source=str(uri))
    if not metadata_path.is_file():
        raise ModelLoadError(
            "metadata", f"no {METADATA_FILE} next to the model at {metadata_path}", source=str(uri)
        )
    return ModelLocation(model_path, metadata_path)


def load_metadata(path: Path) -> ModelMetadata:
    """Read and validate ``metadata.json``; ``ModelLoadError`` names the bad field."""
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ModelLoadError("", f"cannot read: {exc.strerror}", source=str(path)) from exc
    except orjson.JSONDecodeError as exc:
        raise ModelLoadError("", f"not valid JSON: {exc}", source=str(path)) from exc
    try:
        return parse_metadata(raw)
    except ModelLoadError as exc:
        raise ModelLoadError(exc.field, exc.reason, source=str(path)) from None


def parse_metadata(raw: object) -> ModelMetadata:
    """Validate decoded ``metadata.json`` content."""
    obj = _object(raw, "")
    version = obj.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ModelLoadError("format_version", f"must be {FORMAT_VERSION}, got {version!r}")
    name = _string(obj.get("name"), "name")
    model_version = obj.get("version")
    if isinstance(model_version, int) and not isinstance(model_version, bool):
        model_version = str(model_version)
    model_version = _string(model_version, "version")
    task = _choice(obj.get("task"), "task", _TASKS)
    features = _features(obj.get("features"))
    outputs = _object(obj.get("outputs"), "outputs")
    prediction_output = _string(outputs.get("prediction"), "outputs.prediction")
    scores_raw = outputs.get("scores")
    scores_output = None if scores_raw is None else _string(scores_raw, "outputs.scores")
    classes: tuple[str | int, ...] = ()
    if task == "classification":
        classes = _classes(obj.get("classes"))
    elif scores_output is not None:
        raise ModelLoadError("outputs.scores", "a regression model has no scores output")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise ModelLoadError("description", "must be a string")
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise ModelLoadError("extra", "must be an object")
    return ModelMetadata(
        name=name,
        version=model_version,
        task=task,
        features=features,
        prediction_output=prediction_output,
        scores_output=scores_output,
        classes=classes,
        description=description,
        extra=extra,
    )


def _features(raw: object) -> tuple[FeatureSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ModelLoadError("features", "must be a non-empty array")
    specs: list[FeatureSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"features[{index}]"
        obj = _object(item, where)
        name = _string(obj.get("name"), f"{where}.name")
        if name in seen:
            raise ModelLoadError(f"{where}.name", f"duplicate feature {name!r}")
        seen.add(name)
        kind = _choice(obj.get("kind"), f"{where}.kind", _KINDS)
        default_dtype: DType = "float32" if kind == "numeric" else "string"
        dtype = _choice(obj.get("dtype", default_dtype), f"{where}.dtype", _DTYPES)
        if kind == "numeric" and dtype not in NUMERIC_DTYPES:
            raise ModelLoadError(f"{where}.dtype", f"a numeric feature cannot be {dtype!r}")
        if kind == "categorical" and dtype not in ("string", "int64"):
            raise ModelLoadError(f"{where}.dtype", "a categorical feature is string or int64")
        onnx_input = _string(obj.get("input", name), f"{where}.input")
        nullable = obj.get("nullable", False)
        if not isinstance(nullable, bool):
            raise ModelLoadError(f"{where}.nullable", "must be true or false")
        if nullable and dtype not in ("float32", "float64"):
            raise ModelLoadError(
                f"{where}.nullable", "only float features can be nullable (null is sent as NaN)"
            )
        specs.append(FeatureSpec(name, kind, dtype, onnx_input, nullable))
    return tuple(specs)


def _classes(raw: object) -> tuple[str | int, ...]:
    if not isinstance(raw, list) or not raw:
        raise ModelLoadError("classes", "a classifier needs a non-empty array of class labels")
    out: list[str | int] = []
    for index, item in enumerate(raw):
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ModelLoadError(f"classes[{index}]", "must be a string or an integer")
        out.append(item)
    if len({str(c) for c in out}) != len(out):
        raise ModelLoadError("classes", "class labels must be unique")
    return tuple(out)


def _object(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ModelLoadError(where, "must be an object")
    return raw


def _string(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ModelLoadError(where, "must be a non-empty string")
    return raw


def _choice(raw: object, where: str, options: Sequence[str]) -> Any:
    if raw not in options:
        raise ModelLoadError(where, f"must be one of {', '.join(options)}; got {raw!r}")
    return raw
