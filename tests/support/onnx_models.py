"""Tiny ONNX models for the model-server tests, built with scikit-learn and skl2onnx.

Each builder writes ``model.onnx`` and ``metadata.json`` into the directory it is given and
returns the metadata: a classifier with two numeric features and one categorical (string)
feature, each its own ONNX input; a regressor whose three numeric features share one ONNX
input; and a broken model (valid metadata, an ONNX file that is not a model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from serving.metadata import FeatureSpec, ModelMetadata

CLASSIFIER_NAME = "tumour"
REGRESSOR_NAME = "house-price"
SIZE_CLASSES = ("small", "medium", "large")
_OPSET = 17


def classifier_metadata(version: str = "3") -> ModelMetadata:
    """The classifier's metadata: mean_radius, mean_texture (float32) and size_class (string)."""
    return ModelMetadata(
        name=CLASSIFIER_NAME,
        version=version,
        task="classification",
        features=(
            FeatureSpec("mean_radius", "numeric", "float32", "mean_radius"),
            FeatureSpec("mean_texture", "numeric", "float32", "mean_texture"),
            FeatureSpec("size_class", "categorical", "string", "size_class"),
        ),
        prediction_output="label",
        scores_output="probabilities",
        classes=(0, 1),
    )


def build_classifier(directory: Path, *, version: str = "3") -> ModelMetadata:
    """Train a logistic regression on synthetic rows and export it to ``directory``."""
    import pandas as pd

    rng = np.random.default_rng(7)
    n = 400
    frame = pd.DataFrame(
        {
            "mean_radius": rng.normal(14.0, 3.0, n),
            "mean_texture": rng.normal(19.0, 4.0, n),
            "size_class": rng.choice(SIZE_CLASSES, n),
        }
    )
    target = ((frame["mean_radius"] - 14.0) + (frame["size_class"] == "large") * 2.0 > 0).astype(
        int
    )
    pipeline = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), ["mean_radius", "mean_texture"]),
                        ("category", OneHotEncoder(handle_unknown="ignore"), ["size_class"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    )
    pipeline.fit(frame, target)
    onnx_model = convert_sklearn(
        pipeline,
        initial_types=[
            ("mean_radius", FloatTensorType([None, 1])),
            ("mean_texture", FloatTensorType([None, 1])),
            ("size_class", StringTensorType([None, 1])),
        ],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=_OPSET,
    )
    return _write(directory, onnx_model.SerializeToString(), classifier_metadata(version))


def regressor_metadata(version: str = "1") -> ModelMetadata:
    """The regressor's metadata: rooms, area and age, all columns of the ONNX input ``input``."""
    return ModelMetadata(
        name=REGRESSOR_NAME,
        version=version,
        task="regression",
        features=(
            FeatureSpec("rooms", "numeric", "float32", "input"),
            FeatureSpec("area", "numeric", "float32", "input"),
            FeatureSpec("age", "numeric", "float32", "input", nullable=True),
        ),
        prediction_output="variable",
    )


def regressor_coefficients() -> tuple[np.ndarray, float]:
    """The exact linear function the regressor learns: y = x · w + b."""
    return np.array([10.0, 2.0, -0.5]), 5.0


def build_regressor(directory: Path, *, version: str = "1") -> ModelMetadata:
    """Fit a noiseless linear regression and export it to ``directory``."""
    rng = np.random.default_rng(11)
    features = rng.uniform(0.0, 10.0, size=(100, 3))
    weights, bias = regressor_coefficients()
    model = LinearRegression().fit(features, features @ weights + bias)
    onnx_model = convert_sklearn(
        model, initial_types=[("input", FloatTensorType([None, 3]))], target_opset=_OPSET
    )
    return _write(directory, onnx_model.SerializeToString(), regressor_metadata(version))


def build_broken(directory: Path) -> ModelMetadata:
    """Valid classifier metadata beside a ``model.onnx`` that is not an ONNX model at all."""
    return _write(directory, b"this is not an ONNX protobuf\x00\x01\x02", classifier_metadata())


def _write(directory: Path, model_bytes: bytes, metadata: ModelMetadata) -> ModelMetadata:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(model_bytes)
    metadata.write(directory / "metadata.json")
    return metadata
