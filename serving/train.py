"""The demo model: scikit-learn's bundled breast-cancer data to ``model.onnx`` and its companions.

``python -m serving.train [--out DIR]`` builds, into ``DIR`` (``var/models/breast-cancer/1``):

- ``model.onnx``: scaling and one-hot encoding in front of a logistic regression, exported with
  skl2onnx; two inputs, ``numeric`` (float32, the 30 measurements) and ``size_class`` (string);
- ``metadata.json``: what ``serving`` needs to serve it (``serving.metadata.ModelMetadata``);
- ``profile.json``: the sidecar's reference profile of the training split, features plus the
  model's predicted class (categorical), built with ``sidecar.profile_builder``;
- ``train.parquet`` and ``holdout.parquet``: the stratified split, with the true ``label``, for the
  load generator (``serving.loadgen``) to replay.

The data ships inside scikit-learn, so nothing is downloaded. One derived categorical feature,
``size_class`` (tertiles of the training split's ``mean_radius``), makes categorical drift part of
the demo. Everything is seeded, so two builds produce the same model and split. The files are
written into a temporary directory renamed into place at the end: a build that fails never
leaves a directory that looks complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from serving.metadata import METADATA_FILE, MODEL_FILE, FeatureSpec, ModelMetadata
from sidecar.profile import dump_profile
from sidecar.profile_builder import profile_from_arrays

MODEL_NAME = "breast-cancer"
MODEL_VERSION = "1"
DEFAULT_OUT = Path("var/models") / MODEL_NAME / MODEL_VERSION
SEED = 7
HOLDOUT_SHARE = 0.35
NUMERIC_INPUT = "numeric"
CATEGORICAL_FEATURE = "size_class"
SIZE_CLASSES = ("small", "medium", "large")
LABEL_COLUMN = "label"
"""The true class in the parquet splits (not a model feature)."""
PROFILE_FILE = "profile.json"
TRAIN_FILE = "train.parquet"
HOLDOUT_FILE = "holdout.parquet"
ARTEFACTS = (MODEL_FILE, METADATA_FILE, PROFILE_FILE, TRAIN_FILE, HOLDOUT_FILE)
_OPSETS = {"": 17, "ai.onnx.ml": 3}
"""Pinned so the model loads in any ONNX Runtime of the last few years, not just the newest."""

Columns = dict[str, NDArray[Any]]


@dataclass(frozen=True, slots=True)
class TrainedModel:
    """Where a build put its files, and how well the model did on the held-out split."""

    directory: Path
    metadata: ModelMetadata
    train_rows: int
    holdout_rows: int
    holdout_accuracy: float

    def path(self, name: str) -> Path:
        """The path of artefact ``name`` (one of ``ARTEFACTS``)."""
        return self.directory / name


def artefacts_present(directory: Path) -> bool:
    """True when ``directory`` holds every file a build writes (so no rebuild is needed)."""
    return all((directory / name).is_file() for name in ARTEFACTS)


def feature_names() -> tuple[str, ...]:
    """The model's features in request order: the 30 measurements, then ``size_class``."""
    from sklearn.datasets import load_breast_cancer

    names = load_breast_cancer().feature_names
    return (*(_snake(str(n)) for n in names), CATEGORICAL_FEATURE)


def build(out: Path = DEFAULT_OUT, *, seed: int = SEED) -> TrainedModel:
    """Train, export and profile the demo model into ``out`` (replacing what is there)."""
    from sklearn.model_selection import train_test_split

    numeric, labels = _dataset()
    names = list(numeric)
    matrix = np.column_stack([numeric[n] for n in names])
    train_idx, holdout_idx = train_test_split(
        np.arange(len(labels)), test_size=HOLDOUT_SHARE, random_state=seed, stratify=labels
    )
    edges = np.quantile(numeric["mean_radius"][train_idx], [1 / 3, 2 / 3])
    size_class = _size_class(numeric["mean_radius"], edges)
    pipeline = _fit(matrix[train_idx], size_class[train_idx], labels[train_idx], seed)
    onnx_bytes = _export(pipeline, len(names))
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    train_pred = _predict(session, matrix[train_idx], size_class[train_idx])
    holdout_pred = _predict(session, matrix[holdout_idx], size_class[holdout_idx])
    accuracy = float(np.mean(holdout_pred == labels[holdout_idx]))
    metadata = _metadata(names, edges, seed, accuracy)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (staging / MODEL_FILE).write_bytes(onnx_bytes)
        metadata.write(staging / METADATA_FILE)
        profile = profile_from_arrays(
            MODEL_NAME,
            MODEL_VERSION,
            numeric={n: numeric[n][train_idx] for n in names},
            categorical={CATEGORICAL_FEATURE: size_class[train_idx].tolist()},
            prediction=[int(p) for p in train_pred],
            prediction_kind="categorical",
        )
        dump_profile(profile, staging / PROFILE_FILE)
        _write_split(staging / TRAIN_FILE, numeric, size_class, labels, train_idx)
        _write_split(staging / HOLDOUT_FILE, numeric, size_class, labels, holdout_idx)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TrainedModel(out, metadata, len(train_idx), len(holdout_idx), accuracy)


def read_split(path: Path) -> tuple[list[dict[str, Any]], NDArray[np.int64]]:
    """The rows of a saved split as feature dicts (request order) and their true labels."""
    table = pq.read_table(path)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    labels = np.asarray(columns.pop(LABEL_COLUMN), dtype=np.int64)
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return rows, labels


# --------------------------------------------------------------------------- steps


def _snake(name: str) -> str:
    return name.strip().replace(" ", "_").replace("-", "_")


def _dataset() -> tuple[dict[str, NDArray[np.float64]], NDArray[np.int64]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    numeric = {
        _snake(str(name)): np.asarray(data.data[:, i], dtype=np.float64)
        for i, name in enumerate(data.feature_names)
    }
    return numeric, np.asarray(data.target, dtype=np.int64)


def _size_class(mean_radius: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.str_]:
    # Bins (-inf, e0], (e0, e1], (e1, inf): the same convention as the profile's PSI bins.
    positions = np.searchsorted(edges, mean_radius, side="left")
    return np.asarray(SIZE_CLASSES, dtype=np.str_)[positions]


def _fit(
    matrix: NDArray[np.float64], size_class: NDArray[np.str_], labels: NDArray[np.int64], seed: int
) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    width = matrix.shape[1]
    # Column positions, not names: skl2onnx maps them onto the two ONNX inputs in order
    # (numeric columns 0..width-1, then size_class), which is the metadata's feature order.
    encode = ColumnTransformer(
        [
            ("scale", StandardScaler(), list(range(width))),
            ("one_hot", OneHotEncoder(handle_unknown="ignore"), [width]),
        ]
    )
    pipeline = Pipeline(
        [("encode", encode), ("classify", LogisticRegression(max_iter=5000, random_state=seed))]
    )
    features = np.empty((len(labels), width + 1), dtype=object)
    features[:, :width] = matrix
    features[:, width] = size_class
    pipeline.fit(features, labels)
    return pipeline


def _export(pipeline: Any, width: int) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    onnx_model = convert_sklearn(
        pipeline,
        name=MODEL_NAME,
        initial_types=[
            (NUMERIC_INPUT, FloatTensorType([None, width])),
            (CATEGORICAL_FEATURE, StringTensorType([None, 1])),
        ],
        options={"classify": {"zipmap": False}},
        target_opset=_OPSETS,
    )
    return bytes(onnx_model.SerializeToString())


def _predict(
    session: ort.InferenceSession, matrix: NDArray[np.float64], size_class: NDArray[np.str_]
) -> NDArray[np.int64]:
    inputs = {
        NUMERIC_INPUT: matrix.astype(np.float32),
        CATEGORICAL_FEATURE: size_class.reshape(-1, 1).astype(object),
    }
    label, _ = session.run(["label", "probabilities"], inputs)
    return np.asarray(label, dtype=np.int64)


def _metadata(
    names: Sequence[str], edges: NDArray[np.float64], seed: int, accuracy: float
) -> ModelMetadata:
    features = [FeatureSpec(n, "numeric", "float32", NUMERIC_INPUT) for n in names]
    features.append(FeatureSpec(CATEGORICAL_FEATURE, "categorical", "string", CATEGORICAL_FEATURE))
    return ModelMetadata(
        name=MODEL_NAME,
        version=MODEL_VERSION,
        task="classification",
        features=tuple(features),
        prediction_output="label",
        scores_output="probabilities",
        classes=(0, 1),
        description=(
            "Logistic regression on scikit-learn's breast-cancer data (0 = malignant, "
            "1 = benign); size_class is mean_radius in training-split tertiles."
        ),
        extra={
            "training": {
                "dataset": "sklearn.datasets.load_breast_cancer",
                "seed": seed,
                "holdout_share": HOLDOUT_SHARE,
                "holdout_accuracy": round(accuracy, 6),
                "size_class_edges": [float(e) for e in edges],
            }
        },
    )


def _write_split(
    path: Path,
    numeric: Mapping[str, NDArray[np.float64]],
    size_class: NDArray[np.str_],
    labels: NDArray[np.int64],
    rows: NDArray[np.intp],
) -> None:
    table = pa.table(
        {
            **{name: pa.array(values[rows]) for name, values in numeric.items()},
            CATEGORICAL_FEATURE: pa.array(size_class[rows].tolist(), pa.string()),
            LABEL_COLUMN: pa.array(labels[rows]),
        }
    )
    pq.write_table(table, path)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Build the demo model; with ``--if-absent`` do nothing when its files are all there."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.train", description="Build the breast-cancer demo model."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--seed", type=int, default=SEED, help=f"split and solver seed ({SEED})")
    parser.add_argument(
        "--if-absent", action="store_true", help="skip the build when every artefact exists"
    )
    args = parser.parse_args(argv)
    if args.if_absent and artefacts_present(args.out):
        print(f"demo model already built in {args.out}")
        return 0
    trained = build(args.out, seed=args.seed)
    print(
        f"built {MODEL_NAME} v{MODEL_VERSION} in {trained.directory}: "
        f"{trained.train_rows} training rows, {trained.holdout_rows} held out, "
        f"held-out accuracy {trained.holdout_accuracy:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
