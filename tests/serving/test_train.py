"""The demo model build: every artefact exists, loads with the code that uses it, and is seeded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pyarrow.parquet as pq
import pytest

from serving import train
from serving.instances import InstanceDecoder
from serving.metadata import load_metadata
from serving.model import OnnxModel
from sidecar.profile import CategoricalProfile, load_profile, profile_to_json


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> train.TrainedModel:
    return train.build(tmp_path_factory.mktemp("model") / "1")


def test_every_artefact_is_written(built: train.TrainedModel) -> None:
    """A build leaves the model, its metadata, the profile and both splits, and nothing else."""
    assert sorted(p.name for p in built.directory.iterdir()) == sorted(train.ARTEFACTS)
    assert train.artefacts_present(built.directory)


def test_metadata_validates_and_matches_the_onnx_model(built: train.TrainedModel) -> None:
    """metadata.json passes serving's validator and the server's ONNX signature check."""
    metadata = load_metadata(built.path("metadata.json"))
    assert metadata == built.metadata
    assert metadata.feature_names == train.feature_names()
    assert metadata.features[-1].kind == "categorical"
    model = OnnxModel.load(built.path("model.onnx"), metadata, use_cuda=False)
    assert model.provider == "CPUExecutionProvider"


def test_onnx_model_reproduces_the_recorded_holdout_accuracy(built: train.TrainedModel) -> None:
    """Scoring holdout.parquet through the server's decoder and ONNX gives the recorded accuracy."""
    rows, labels = train.read_split(built.path("holdout.parquet"))
    metadata = load_metadata(built.path("metadata.json"))
    decoded = InstanceDecoder(metadata, max_instances=len(rows)).decode(
        orjson.dumps({"instances": rows})
    )
    outputs = OnnxModel.load(built.path("model.onnx"), metadata, use_cuda=False).predict(
        decoded.inputs
    )
    accuracy = float(np.mean(outputs.predictions == labels))
    assert accuracy == pytest.approx(built.holdout_accuracy)
    assert accuracy > 0.9  # a working classifier, not a constant one
    assert metadata.extra["training"]["holdout_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert outputs.scores is not None
    np.testing.assert_allclose(outputs.scores.sum(axis=1), 1.0, rtol=1e-5)


def test_profile_describes_the_training_split(built: train.TrainedModel) -> None:
    """profile.json loads, covers every model feature, and its prediction is categorical."""
    profile = load_profile(built.path("profile.json"))
    assert (profile.model, profile.version) == (train.MODEL_NAME, train.MODEL_VERSION)
    assert profile.feature_names == train.feature_names()
    assert (
        profile.rows == built.train_rows == pq.read_metadata(built.path("train.parquet")).num_rows
    )
    size = profile.feature(train.CATEGORICAL_FEATURE)
    assert isinstance(size, CategoricalProfile)
    assert set(size.categories) == set(train.SIZE_CLASSES)
    # Tertiles of the training split: each class holds about a third of it.
    np.testing.assert_allclose(size.shares[:-1], 1 / 3, atol=0.01)
    assert isinstance(profile.prediction, CategoricalProfile)
    assert set(profile.prediction.categories) == {"0", "1"}


def test_split_is_stratified_and_disjoint(built: train.TrainedModel) -> None:
    """Train and holdout rows together are the whole dataset, with the same class balance."""
    train_rows, train_labels = train.read_split(built.path("train.parquet"))
    holdout_rows, holdout_labels = train.read_split(built.path("holdout.parquet"))
    assert len(train_rows) + len(holdout_rows) == 569
    keys = {tuple(r.values()) for r in train_rows}
    assert not keys & {tuple(r.values()) for r in holdout_rows}
    assert abs(train_labels.mean() - holdout_labels.mean()) < 0.01


def test_build_is_deterministic(built: train.TrainedModel, tmp_path: Path) -> None:
    """A second build with the same seed writes the same model, metadata, splits and profile."""
    again = train.build(tmp_path / "1")
    for name in ("model.onnx", "metadata.json"):
        assert again.path(name).read_bytes() == built.path(name).read_bytes(), name
    for name in ("train.parquet", "holdout.parquet"):
        assert pq.read_table(again.path(name)).equals(pq.read_table(built.path(name))), name
    first = profile_to_json(load_profile(built.path("profile.json")))
    second = profile_to_json(load_profile(again.path("profile.json")))
    first.pop("created_at")
    second.pop("created_at")
    assert first == second


def test_if_absent_leaves_a_complete_build_alone(built: train.TrainedModel) -> None:
    """``--if-absent`` does not rebuild when every artefact is there."""
    before = {p.name: p.stat().st_mtime_ns for p in built.directory.iterdir()}
    assert train.main(["--out", str(built.directory), "--if-absent"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in built.directory.iterdir()} == before


def test_if_absent_rebuilds_an_incomplete_directory(tmp_path: Path) -> None:
    """A directory missing an artefact is rebuilt whole, replacing what was there."""
    out = tmp_path / "1"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"not a model")
    assert train.main(["--out", str(out), "--if-absent"]) == 0
    assert train.artefacts_present(out)
    ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
