"""The profile format: dump/load round trip and the validator naming the exact field at fault."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sidecar.columns import PREDICTION_KEY
from sidecar.errors import ProfileError
from sidecar.profile import (
    MAX_CATEGORIES,
    CategoricalProfile,
    NumericProfile,
    Profile,
    QuantileMethod,
    category_key,
    dump_profile,
    load_profile,
    profile_from_json,
    profile_to_json,
)
from tests.support.profiles import make_profile

Doc = dict[str, Any]


def _profile() -> Profile:
    rng = np.random.default_rng(7)
    age = rng.normal(40, 12, size=500)
    age[::25] = np.nan
    return make_profile(
        model="credit",
        version="3",
        numeric={"age": age, "income": rng.lognormal(10, 1, size=500)},
        categorical={"city": [str(c) for c in rng.choice(["paris", "lyon", "nice"], 500)]},
        prediction=rng.integers(0, 2, size=500).astype(np.float64),
        psi_bins=10,
        ks_bins=100,
    )


def _doc() -> Doc:
    return copy.deepcopy(profile_to_json(_profile()))


def _assert_same_feature(a: object, b: object) -> None:
    if isinstance(a, NumericProfile):
        assert isinstance(b, NumericProfile)
        for name in ("name", "count", "missing", "min", "max", "mean", "std"):
            assert getattr(a, name) == getattr(b, name)
        for name in ("psi_edges", "psi_shares", "ks_edges", "ks_cdf"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    else:
        assert isinstance(a, CategoricalProfile)
        assert isinstance(b, CategoricalProfile)
        assert (a.name, a.count, a.missing, a.categories, a.distinct) == (
            b.name,
            b.count,
            b.missing,
            b.categories,
            b.distinct,
        )
        np.testing.assert_array_equal(a.shares, b.shares)


def test_dump_then_load_gives_back_every_field(tmp_path: Path) -> None:
    """A profile written with dump_profile loads back equal, field by field, bit for bit."""
    original = _profile()
    path = tmp_path / "profile.json"
    dump_profile(original, path)
    loaded = load_profile(path)
    assert (loaded.model, loaded.version, loaded.rows, loaded.created_at) == (
        original.model,
        original.version,
        original.rows,
        original.created_at,
    )
    assert loaded.quantiles == original.quantiles
    assert loaded.feature_names == original.feature_names
    for a, b in zip(loaded.features, original.features, strict=True):
        _assert_same_feature(a, b)
    _assert_same_feature(loaded.prediction, original.prediction)
    assert not (tmp_path / "profile.json.tmp").exists()


def _set(path: tuple[object, ...], value: object) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[object, ...]) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _swap_first_edges(doc: Doc) -> None:
    edges = doc["features"][0]["psi"]["edges"]
    edges[0], edges[1] = edges[1], edges[0]


def _shorten_cdf(doc: Doc) -> None:
    doc["features"][1]["ks"]["cdf"].pop()


def _duplicate_feature(doc: Doc) -> None:
    doc["features"][1]["name"] = doc["features"][0]["name"]


def _unbalance_shares(doc: Doc) -> None:
    doc["features"][0]["psi"]["shares"][0] += 0.01


def _unbalance_categories(doc: Doc) -> None:
    doc["features"][2]["other_share"] = 0.5


def _too_many_categories(doc: Doc) -> None:
    city = doc["features"][2]
    city["categories"] = {f"c{i}": 1 / 1001 for i in range(1001)}
    city["other_share"] = 0.0
    city["distinct"] = 1001


BAD_DOCUMENTS = [
    pytest.param(_delete(("model",)), "model", id="missing-model"),
    pytest.param(_delete(("features", 0, "psi")), "features[0].psi", id="missing-psi"),
    pytest.param(_set(("rows",), "500"), "rows", id="rows-string"),
    pytest.param(_set(("rows",), -1), "rows", id="rows-negative"),
    pytest.param(_set(("features", 0, "count"), 1.5), "features[0].count", id="count-float"),
    pytest.param(
        _set(("quantiles", "max_rank_error"), True), "quantiles.max_rank_error", id="bool-number"
    ),
    pytest.param(
        _set(("features", 0, "psi", "edges", 3), "x"), "features[0].psi.edges[3]", id="edge-string"
    ),
    pytest.param(_set(("features", 1, "mean"), float("nan")), "features[1].mean", id="mean-nan"),
    pytest.param(
        _set(("features", 0, "ks", "edges", 2), float("inf")),
        "features[0].ks.edges[2]",
        id="edge-inf",
    ),
    pytest.param(_unbalance_shares, "features[0].psi.shares", id="shares-sum"),
    pytest.param(_unbalance_categories, "features[2].categories", id="categories-sum"),
    pytest.param(_swap_first_edges, "features[0].psi.edges[1]", id="edges-not-increasing"),
    pytest.param(_shorten_cdf, "features[1].ks.cdf", id="cdf-length"),
    pytest.param(_set(("features", 0, "kind"), "ordinal"), "features[0].kind", id="unknown-kind"),
    pytest.param(_duplicate_feature, "features[1].name", id="duplicate-feature"),
    pytest.param(_set(("format_version",), 2), "format_version", id="format-version"),
    pytest.param(_set(("format",), "other"), "format", id="format"),
    pytest.param(_set(("features",), []), "features", id="no-features"),
    pytest.param(_set(("prediction",), 3), "prediction", id="prediction-not-object"),
    pytest.param(_set(("features", 2, "distinct"), 1), "features[2].distinct", id="distinct-low"),
    pytest.param(_set(("quantiles", "method"), "t-digest"), "quantiles.method", id="method"),
    pytest.param(
        _set(("features", 1, "name"), "__prediction__"), "features[1].name", id="reserved-name"
    ),
    pytest.param(_too_many_categories, "features[2].categories", id="too-many-categories"),
]


@pytest.mark.parametrize(("mutate", "field"), BAD_DOCUMENTS)
def test_each_bad_document_names_its_field(mutate: Callable[[Doc], None], field: str) -> None:
    """Each class of malformed document raises ProfileError whose field is the exact JSON path."""
    doc = _doc()
    profile_from_json(copy.deepcopy(doc))  # the unmodified document is valid
    mutate(doc)
    with pytest.raises(ProfileError) as caught:
        profile_from_json(doc)
    assert caught.value.field == field


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    """A profile file that is not JSON raises ProfileError at document level, naming the file."""
    path = tmp_path / "broken.json"
    path.write_bytes(orjson.dumps(profile_to_json(_profile()))[:-20])
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.field == "(document)"
    assert caught.value.source == str(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """Loading a file that does not exist raises ProfileError naming the file, not an OSError."""
    with pytest.raises(ProfileError) as caught:
        load_profile(tmp_path / "absent.json")
    assert caught.value.field == "(file)"


def test_category_key_canonicalises_numbers_and_booleans() -> None:
    """Integers, integral floats and their decimal strings are one category; booleans are words."""
    assert category_key(1) == category_key(1.0) == category_key("1") == "1"
    assert category_key(True) == "true"
    assert category_key(None) is None
    with pytest.raises(TypeError):
        category_key(1.5)


def test_sketch_quantile_method_round_trips() -> None:
    """A compactor-sketch quantile method keeps its size and bound through JSON."""
    doc = _doc()
    doc["quantiles"] = {"method": "compactor-sketch", "sketch_size": 1024, "max_rank_error": 0.01}
    assert profile_from_json(doc).quantiles == QuantileMethod("compactor-sketch", 1024, 0.01)


def test_documented_example_is_a_valid_profile() -> None:
    """The example document in docs/profile.md passes the validator, so the page stays true."""
    page = (Path(__file__).parents[2] / "docs" / "profile.md").read_text()
    example = page.split("```json\n", 1)[1].split("```", 1)[0]
    profile = profile_from_json(orjson.loads(example))
    assert profile.feature_names == ("rooms", "city")
    assert profile.prediction is not None


def test_the_prediction_key_is_refused_as_a_feature_name() -> None:
    """A feature called __prediction__ would share the prediction's series; the loader says so."""
    doc = _doc()
    doc["features"][0]["name"] = PREDICTION_KEY
    with pytest.raises(ProfileError) as caught:
        profile_from_json(doc)
    assert caught.value.field == "features[0].name"
    assert "'__prediction__' is reserved for the prediction" in caught.value.reason


def test_categories_are_capped_at_max_categories() -> None:
    """A categorical profile may list MAX_CATEGORIES categories but not one more."""
    doc = _doc()
    city = doc["features"][2]
    city["categories"] = {f"c{i}": 1 / MAX_CATEGORIES for i in range(MAX_CATEGORIES)}
    city["other_share"] = 0.0
    city["distinct"] = MAX_CATEGORIES
    assert len(_categorical_of(profile_from_json(copy.deepcopy(doc))).categories) == MAX_CATEGORIES
    city["categories"]["one-more"] = 0.0
    with pytest.raises(ProfileError) as caught:
        profile_from_json(doc)
    assert caught.value.field == "features[2].categories"
    assert f"at most {MAX_CATEGORIES}" in caught.value.reason


def _categorical_of(profile: Profile) -> CategoricalProfile:
    feat = profile.feature("city")
    assert isinstance(feat, CategoricalProfile)
    return feat
