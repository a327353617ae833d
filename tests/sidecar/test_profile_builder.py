"""Building profiles: in memory and streamed from CSV/Parquet, exact shares, named errors."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from numpy.typing import NDArray

from sidecar.errors import ProfileError
from sidecar.profile import (
    MAX_CATEGORIES,
    OTHER,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    Profile,
    profile_from_json,
    profile_to_json,
)
from sidecar.profile_builder import (
    BuildProgress,
    ProfileBuildError,
    build_profile,
    profile_from_arrays,
)
from tests.support.profiles import bin_shares, cdf_at, make_profile

FloatArray = NDArray[np.float64]
KS_PROBS = np.arange(1, 200) / 200


def _numeric(profile: Profile, name: str) -> NumericProfile:
    feat = profile.feature(name)
    assert isinstance(feat, NumericProfile)
    return feat


def _categorical(feat: FeatureProfile | None) -> CategoricalProfile:
    assert isinstance(feat, CategoricalProfile)
    return feat


def _valid(profile: Profile) -> Profile:
    """The profile after a trip through its own validator (fails if the builder wrote nonsense)."""
    return profile_from_json(profile_to_json(profile))


def _table(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 1, size=n)
    income[rng.random(n) < 0.05] = np.nan
    cities = np.array(["paris", "lyon", "nice", "lille", "metz"])
    city = cities[rng.zipf(1.6, size=n) % len(cities)].astype(object)
    city[rng.random(n) < 0.02] = None
    return pa.table(
        {
            "income": income,
            "age": rng.integers(18, 90, size=n),
            "city": pa.array(list(city), type=pa.string()),
            "score": rng.normal(size=n),
        }
    )


def _write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        pq.write_table(table, path, row_group_size=max(1, table.num_rows // 7))
    return path


def _assert_edges_are_quantiles_within(
    data: FloatArray, edges: FloatArray, bound: float, probs: FloatArray
) -> None:
    """Every edge is the exact quantile of some probability within ``bound`` of one asked for."""
    ordered = np.sort(data)
    n = len(ordered)
    below = np.searchsorted(ordered, edges, side="left")[:, None]
    at_or_below = np.searchsorted(ordered, edges, side="right")[:, None]
    target = probs[None, :] * n
    slack = bound * n + 1e-9 * n
    fits = (below <= target + slack) & (at_or_below >= target - slack)
    assert np.all(fits.any(axis=1))
    assert np.all(np.isin(edges, ordered))


def _assert_exact_on_its_edges(feat: NumericProfile, data: FloatArray) -> None:
    np.testing.assert_allclose(
        feat.psi_shares, bin_shares(data, feat.psi_edges), rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(feat.ks_cdf, cdf_at(data, feat.ks_edges), rtol=0, atol=1e-15)
    assert np.all(np.isin(feat.psi_edges, feat.ks_edges))


# --------------------------------------------------------------------------- in memory


def test_in_memory_profile_equals_the_independent_exact_oracle() -> None:
    """profile_from_arrays matches the numpy-only oracle in tests/support field for field."""
    table = _table(3_000)
    income = table["income"].to_numpy(zero_copy_only=False)
    city = table["city"].to_pylist()
    prediction = np.random.default_rng(2).normal(size=3_000)
    built = _valid(
        profile_from_arrays(
            "m", "1", {"income": income}, {"city": city}, prediction=prediction, top_k=3
        )
    )
    oracle = make_profile(
        numeric={"income": income}, categorical={"city": city}, prediction=prediction, top_k=3
    )
    for ours, theirs in zip(
        (*built.features, built.prediction), (*oracle.features, oracle.prediction), strict=True
    ):
        if isinstance(theirs, NumericProfile):
            assert isinstance(ours, NumericProfile)
            np.testing.assert_array_equal(ours.psi_edges, theirs.psi_edges)
            np.testing.assert_array_equal(ours.ks_edges, theirs.ks_edges)
            np.testing.assert_allclose(ours.psi_shares, theirs.psi_shares, atol=1e-15)
            np.testing.assert_allclose(ours.ks_cdf, theirs.ks_cdf, atol=1e-15)
            np.testing.assert_allclose(
                [ours.mean, ours.std, ours.min, ours.max],
                [theirs.mean, theirs.std, theirs.min, theirs.max],
                rtol=1e-12,
            )
            assert (ours.count, ours.missing) == (theirs.count, theirs.missing)
        else:
            assert isinstance(theirs, CategoricalProfile)
            ours_cat = _categorical(ours)
            assert ours_cat.categories == theirs.categories
            np.testing.assert_allclose(ours_cat.shares, theirs.shares, atol=1e-15)
            assert (ours_cat.distinct, ours_cat.missing) == (theirs.distinct, theirs.missing)
    assert built.quantiles.name == "exact"
    assert built.rows == 3_000


def test_in_memory_categories_are_canonicalised_and_ties_broken_by_name() -> None:
    """1, 1.0 and "1" count as one category; equal counts are ordered by name; NaN is missing."""
    values: list[object] = [1, 1.0, "1", True, "b", "a", None, float("nan"), np.int64(7)]
    feat = _categorical(profile_from_arrays("m", "1", {}, {"c": values}).feature("c"))
    assert feat.categories == ("1", "7", "a", "b", "true")
    np.testing.assert_allclose(feat.shares, [3 / 7, 1 / 7, 1 / 7, 1 / 7, 1 / 7, 0.0])
    assert feat.missing == 2


def test_in_memory_infinite_values_count_as_missing() -> None:
    """±inf cannot be binned or ranged, so they are counted as missing like NaN."""
    feat = _numeric(
        profile_from_arrays("m", "1", {"x": np.array([1.0, np.inf, -np.inf, 2.0])}, {}), "x"
    )
    assert (feat.count, feat.missing, feat.min, feat.max) == (2, 2, 1.0, 2.0)


def test_in_memory_columns_of_unequal_length_are_refused() -> None:
    """Columns of different lengths cannot be rows of one table."""
    with pytest.raises(ProfileBuildError, match="equal length"):
        profile_from_arrays("m", "1", {"x": np.zeros(3)}, {"c": ["a"]})


def test_in_memory_non_integral_float_category_names_the_column() -> None:
    """A value that has no category key (1.5) raises naming the column."""
    with pytest.raises(ProfileBuildError) as caught:
        profile_from_arrays("m", "1", {}, {"grade": ["a", 1.5]})
    assert caught.value.column == "grade"


# --------------------------------------------------------------------------- streamed


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_sketch_build_has_exact_shares_on_its_edges(tmp_path: Path, suffix: str) -> None:
    """With a sketch smaller than the data and many chunks, shares and CDF are still exact."""
    table = _table(40_000)
    path = _write(table, tmp_path / f"train{suffix}")
    updates: list[BuildProgress] = []
    profile = _valid(
        build_profile(
            path,
            model="credit",
            version="2",
            sketch_size=1024,
            block_size=1 << 16,
            batch_size=3_000,
            progress=updates.append,
        )
    )
    assert profile.quantiles.name == "compactor-sketch"
    assert profile.quantiles.sketch_size == 1024
    assert 0 < profile.quantiles.max_rank_error < 0.01
    assert profile.rows == 40_000
    assert profile.source == path.name
    assert profile.feature_names == ("income", "age", "city", "score")
    assert sum(u.phase == 1 for u in updates) > 5  # several chunks were read
    assert updates[-1].phase == 2
    assert updates[-1].done == updates[-1].total
    for name in ("income", "age", "score"):
        data = table[name].to_numpy(zero_copy_only=False).astype(np.float64)
        feat = _numeric(profile, name)
        _assert_exact_on_its_edges(feat, data)
        present = data[~np.isnan(data)]
        for edges, probs in ((feat.ks_edges, KS_PROBS), (feat.psi_edges, KS_PROBS[19::20])):
            _assert_edges_are_quantiles_within(
                present, edges, profile.quantiles.max_rank_error, probs
            )
        assert feat.count + feat.missing == 40_000
        assert feat.missing == int(np.isnan(data).sum())
        np.testing.assert_allclose(feat.mean, present.mean(), rtol=1e-12)
        np.testing.assert_allclose(feat.std, present.std(), rtol=1e-9)
        assert (feat.min, feat.max) == (present.min(), present.max())


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_streamed_exact_build_has_numpy_quantile_edges(tmp_path: Path, suffix: str) -> None:
    """When the sketch holds every value, edges equal np.quantile(method="inverted_cdf")."""
    table = _table(5_000, seed=4)
    path = _write(table, tmp_path / f"train{suffix}")
    profile = build_profile(path, model="m", version="1", block_size=1 << 14, batch_size=700)
    assert profile.quantiles.name == "exact"
    assert profile.quantiles.max_rank_error == 0.0
    income = table["income"].to_numpy(zero_copy_only=False)
    present = income[~np.isnan(income)]
    feat = _numeric(profile, "income")
    expected_psi = np.unique(np.quantile(present, KS_PROBS[19::20], method="inverted_cdf"))
    np.testing.assert_array_equal(feat.psi_edges, expected_psi)
    np.testing.assert_array_equal(
        feat.ks_edges, np.unique(np.quantile(present, KS_PROBS, method="inverted_cdf"))
    )
    _assert_exact_on_its_edges(feat, income)


def test_csv_and_parquet_of_the_same_table_give_the_same_profile(tmp_path: Path) -> None:
    """The file format and chunking change no edge or share (moments only in the last bits)."""
    table = _table(20_000, seed=8)
    options: dict[str, Any] = {"model": "m", "version": "1", "sketch_size": 512, "created_at": "t"}
    from_csv = build_profile(_write(table, tmp_path / "t.csv"), block_size=1 << 15, **options)
    from_pq = build_profile(_write(table, tmp_path / "t.parquet"), batch_size=999, **options)
    doc_csv, doc_pq = profile_to_json(from_csv), profile_to_json(from_pq)
    for doc in (doc_csv, doc_pq):
        doc.pop("source")
    moments = [
        [doc["features"][i].pop(key) for i in (0, 1, 3) for key in ("mean", "std")]
        for doc in (doc_csv, doc_pq)
    ]
    assert doc_csv == doc_pq
    np.testing.assert_allclose(moments[0], moments[1], rtol=1e-12)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_categorical_top_k_and_other_bucket(tmp_path: Path, suffix: str) -> None:
    """Only top_k categories are listed; the rest and literal __other__ values share a bucket."""
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 30 + ["d"] * 5 + [OTHER] * 40 + [""] * 3
    table = pa.table({"x": np.arange(len(values), dtype=np.float64), "c": values})
    path = _write(table, tmp_path / f"cats{suffix}")
    feat = _categorical(build_profile(path, model="m", version="1", top_k=3).feature("c"))
    present = len(values) - 3  # empty strings are missing, in either format
    assert feat.categories == ("a", "b", "c")
    np.testing.assert_allclose(feat.shares, np.array([50, 30, 30, 45]) / present)
    assert feat.missing == 3
    assert feat.distinct == 5
    assert not feat.complete


def test_listed_categorical_numbers_use_category_keys(tmp_path: Path) -> None:
    """Integer, integral-float and boolean columns profile as "1", "2" and "true"/"false" keys."""
    table = pa.table(
        {
            "level": pa.array([1, 2, 2, None], type=pa.int64()),
            "grade": pa.array([3.0, 3.0, np.nan, 4.0]),
            "flag": pa.array([True, False, True, None]),
            "x": pa.array([0.1, 0.2, 0.3, 0.4]),
        }
    )
    path = _write(table, tmp_path / "t.parquet")
    profile = build_profile(path, model="m", version="1", categorical=["level", "grade"])
    level, grade, flag = (_categorical(profile.feature(n)) for n in ("level", "grade", "flag"))
    assert dict(zip(level.categories, level.shares.tolist(), strict=False)) == {
        "2": 2 / 3,
        "1": 1 / 3,
    }
    assert grade.categories == ("3", "4")
    assert grade.missing == 1
    assert flag.categories == ("true", "false")
    assert flag.missing == 1


def test_prediction_column_is_profiled_apart_from_the_features(tmp_path: Path) -> None:
    """The prediction column becomes Profile.prediction, not a feature; dropped columns vanish."""
    table = _table(2_000).append_column("label", pa.array(np.arange(2_000) % 3))
    path = _write(table, tmp_path / "t.parquet")
    profile = build_profile(
        path,
        model="m",
        version="1",
        prediction_column="label",
        categorical=["label"],
        drop=["score"],
    )
    assert profile.feature_names == ("income", "age", "city")
    prediction = _categorical(profile.prediction)
    assert prediction.name == "label"
    assert prediction.categories == ("0", "1", "2")


def test_category_cap_keeps_shares_exact_beyond_it(tmp_path: Path) -> None:
    """Past the exact-count cap the top-K shares are still exact and distinct is a lower bound."""
    rng = np.random.default_rng(6)
    heavy = rng.choice(["h1", "h2", "h3"], size=6_000, p=[0.5, 0.3, 0.2])
    rare = np.array([f"r{i}" for i in range(4_000)])
    values = rng.permutation(np.concatenate((heavy, rare)))
    table = pa.table({"id": values, "x": rng.normal(size=len(values))})
    path = _write(table, tmp_path / "t.csv")
    feat = _categorical(
        build_profile(
            path, model="m", version="1", top_k=3, category_cap=200, block_size=1 << 13
        ).feature("id")
    )
    counts = {k: int((values == k).sum()) for k in ("h1", "h2", "h3")}
    assert feat.categories == ("h1", "h2", "h3")
    np.testing.assert_allclose(
        feat.shares[:3], [counts[k] / len(values) for k in feat.categories], atol=1e-15
    )
    np.testing.assert_allclose(feat.other_share, 4_000 / len(values), atol=1e-12)
    assert 200 < feat.distinct <= 4_003


def test_string_in_a_later_csv_block_names_the_column(tmp_path: Path) -> None:
    """A numeric column that turns into text after the first block fails naming that column."""
    lines = ["a,b"] + [f"{i},{i}" for i in range(5_000)] + ["7,oops"]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ProfileBuildError) as caught:
        build_profile(path, model="m", version="1", block_size=1 << 12)
    assert caught.value.column == "b"


def test_integer_column_may_hold_floats_and_blanks_later(tmp_path: Path) -> None:
    """Numeric columns are read as floats, so a first block of integers does not fix the type."""
    lines = ["a,b"] + [f"{i},1" for i in range(3_000)] + ["2.5,", ",3"]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    profile = build_profile(path, model="m", version="1", block_size=1 << 12)
    assert _numeric(profile, "a").max == 2999.0
    assert _numeric(profile, "a").missing == 1
    assert _numeric(profile, "b").missing == 1


@pytest.mark.parametrize(
    ("options", "column"),
    [
        ({"categorical": ["nope"]}, "nope"),
        ({"drop": ["gone"]}, "gone"),
        ({"prediction_column": "target"}, "target"),
        ({"drop": ["city"], "categorical": ["city"]}, "city"),
    ],
)
def test_unknown_or_contradictory_columns_are_named(
    tmp_path: Path, options: dict[str, Any], column: str
) -> None:
    """A column named in an option but absent from the file (or both dropped and used) is named."""
    path = _write(_table(100), tmp_path / "t.csv")
    with pytest.raises(ProfileBuildError) as caught:
        build_profile(path, model="m", version="1", **options)
    assert caught.value.column == column
    assert repr(column) in str(caught.value)


def test_a_column_without_values_is_named(tmp_path: Path) -> None:
    """A column whose every value is missing cannot be binned and is named."""
    path = tmp_path / "t.csv"
    path.write_text("a,empty\n1,\n2,\n3,\n")
    with pytest.raises(ProfileBuildError) as caught:
        build_profile(path, model="m", version="1")
    assert caught.value.column == "empty"


def test_unsupported_arrow_type_is_named(tmp_path: Path) -> None:
    """A timestamp column is neither numeric nor categorical unless listed; the error says so."""
    table = pa.table({"x": [1.0, 2.0], "when": pa.array([1, 2], type=pa.timestamp("s"))})
    path = _write(table, tmp_path / "t.parquet")
    with pytest.raises(ProfileBuildError) as caught:
        build_profile(path, model="m", version="1")
    assert caught.value.column == "when"
    profile = build_profile(path, model="m", version="1", categorical=["when"])
    assert _categorical(profile.feature("when")).distinct == 2


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("t.txt", "a\n1\n", "unsupported file type"),
        ("header.csv", "a,b\n", "no rows"),
        ("bad.parquet", "not parquet", "Parquet"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, name: str, content: str, reason: str) -> None:
    """Wrong extensions, empty data and corrupt files raise ProfileError naming the file."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ProfileError, match=reason) as caught:
        build_profile(path, model="m", version="1")
    assert caught.value.source == str(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A data path that does not exist raises ProfileBuildError, which is also a ValueError."""
    with pytest.raises(ValueError, match="no such file"):
        build_profile(tmp_path / "absent.csv", model="m", version="1")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"psi_bins": 1}, "psi_bins"),
        ({"ks_bins": 50, "psi_bins": 10}, "ks_bins"),
        ({"ks_bins": 205}, "ks_bins"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 1001}, "top_k"),
        ({"sketch_size": 1001}, "sketch_size"),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    """Bin counts, top_k and sketch size are validated before any data is read."""
    path = _write(_table(10), tmp_path / "t.csv")
    with pytest.raises(ProfileBuildError) as caught:
        build_profile(path, model="m", version="1", **options)
    assert caught.value.field == field


def test_ks_bins_must_be_a_multiple_of_psi_bins_for_subset_edges() -> None:
    """With ks_bins a multiple of psi_bins every PSI edge is also a KS edge, ties included."""
    values = np.repeat(np.arange(37.0), np.arange(1, 38))
    feat = _numeric(profile_from_arrays("m", "1", {"x": values}, {}, psi_bins=8, ks_bins=160), "x")
    assert np.all(np.isin(feat.psi_edges, feat.ks_edges))
    assert len(feat.ks_edges) < 159  # ties removed duplicated edges


def test_builder_memory_stays_far_below_the_data_size(tmp_path: Path) -> None:
    """Streaming a file many times the sketch size keeps Python/numpy peak memory bounded.

    tracemalloc sees numpy buffers (where a builder that kept every value would show it: about
    10 MB here) but not pyarrow's own pool, which holds one block at a time.
    """
    n = 400_000
    rng = np.random.default_rng(12)
    table = pa.table({"a": rng.normal(size=n), "b": rng.exponential(size=n)})
    path = _write(table, tmp_path / "big.csv")
    values_bytes = n * 2 * 8
    tracemalloc.start()
    try:
        profile = build_profile(path, model="m", version="1", sketch_size=1024, block_size=1 << 17)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert profile.quantiles.name == "compactor-sketch"
    assert peak < values_bytes / 8
    assert peak < path.stat().st_size / 16


def test_a_feature_column_named_like_the_prediction_key_is_refused(tmp_path: Path) -> None:
    """A file column called __prediction__ would collide with the prediction's series."""
    table = _table(20).append_column("__prediction__", pa.array(np.arange(20.0)))
    path = _write(table, tmp_path / "t.csv")
    with pytest.raises(ProfileBuildError) as caught:
        build_profile(path, model="m", version="1")
    assert caught.value.column == "__prediction__"
    assert "reserved for the prediction" in str(caught.value)
    profile = build_profile(path, model="m", version="1", drop=["__prediction__"])
    assert "__prediction__" not in profile.feature_names


def test_in_memory_feature_named_like_the_prediction_key_is_refused() -> None:
    """profile_from_arrays refuses a numeric or a categorical feature called __prediction__."""
    with pytest.raises(ProfileBuildError) as numeric:
        profile_from_arrays("m", "1", {"__prediction__": np.arange(5.0)}, {})
    with pytest.raises(ProfileBuildError) as categorical:
        profile_from_arrays("m", "1", {"x": np.arange(5.0)}, {"__prediction__": ["a"] * 5})
    assert numeric.value.column == categorical.value.column == "__prediction__"


def test_in_memory_top_k_above_the_cap_is_refused() -> None:
    """profile_from_arrays refuses top_k above MAX_CATEGORIES before looking at the data."""
    with pytest.raises(ProfileBuildError) as caught:
        profile_from_arrays("m", "1", {}, {"c": ["a", "b"]}, top_k=MAX_CATEGORIES + 1)
    assert caught.value.field == "top_k"
    assert str(MAX_CATEGORIES) in caught.value.reason
