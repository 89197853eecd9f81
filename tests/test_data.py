"""Tests for dropout_lab.data: loaders, splits, standardization and input validation."""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dropout_lab import data as data_module
from dropout_lab.data import DATASETS, Dataset, load_dataset, read_idx
from dropout_lab.errors import ConfigError


def make_cfg(**overrides: Any) -> dict[str, Any]:
    """The full `dataset` section with the documented defaults, plus overrides."""
    cfg: dict[str, Any] = {
        "name": "moons",
        "path": None,
        "images": None,
        "labels": None,
        "test_images": None,
        "test_labels": None,
        "target": None,
        "n_samples": 1000,
        "noise": 0.2,
        "n_features": 20,
        "n_informative": 10,
        "n_classes": 2,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "split_seed": 0,
        "standardize": True,
        "max_train": None,
    }
    unknown = set(overrides) - set(cfg)
    assert not unknown, f"unknown cfg keys in test: {unknown}"
    cfg.update(overrides)
    return cfg


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False,
              magic: int | None = None) -> Path:
    """Write a uint8 array as an IDX file (header built by hand with struct)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def idx_arrays(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random 4x5 images and labels cycling through 0..2."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 4, 5), dtype=np.uint8)
    labels = (np.arange(n) % 3).astype(np.uint8)
    return images, labels


def all_arrays(ds: Dataset) -> list[np.ndarray]:
    return [ds.X_train, ds.y_train, ds.X_val, ds.y_val, ds.X_test, ds.y_test]


# --- xor -------------------------------------------------------------------------------


def test_xor_is_the_exact_table_with_empty_holdouts() -> None:
    ds = load_dataset(make_cfg(name="xor", val_fraction=0.5, test_fraction=0.3))
    np.testing.assert_array_equal(ds.X_train, [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(ds.y_train, [0, 1, 1, 0])
    assert ds.X_val.shape == (0, 3) and ds.X_test.shape == (0, 3)
    assert ds.y_val.shape == (0,) and ds.y_test.shape == (0,)
    assert ds.n_classes == 2 and ds.n_features == 3


# --- bundled and generated datasets ------------------------------------------------------


def test_digits_shapes_dtypes_and_labels() -> None:
    ds = load_dataset(make_cfg(name="digits"))
    assert ds.n_features == 64 and ds.n_classes == 10
    assert ds.classes == tuple(range(10))
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 1797
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert set(np.unique(ds.y_train)) == set(range(10))


def test_moons_shapes_dtypes_and_labels() -> None:
    ds = load_dataset(make_cfg(name="moons", n_samples=200))
    assert ds.n_features == 2 and ds.n_classes == 2 and ds.classes == (0, 1)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(np.unique(y)) <= {0, 1}


def test_classification_shapes_and_label_range() -> None:
    ds = load_dataset(make_cfg(name="classification", n_samples=300, n_features=7,
                               n_informative=4, n_classes=3))
    assert ds.n_features == 7 and ds.n_classes == 3
    assert set(np.unique(ds.y_train)) == {0, 1, 2}
    assert ds.X_test.shape == (60, 7)


def test_classification_allows_all_features_informative() -> None:
    ds = load_dataset(make_cfg(name="classification", n_samples=100, n_features=5,
                               n_informative=5))
    assert ds.n_features == 5


def test_mnist1d_standard_split_shapes() -> None:
    ds = load_dataset(make_cfg(name="mnist1d", val_fraction=0.25))
    assert ds.X_train.shape == (3000, 40) and ds.X_val.shape == (1000, 40)
    assert ds.X_test.shape == (1000, 40)
    assert ds.n_classes == 10 and ds.classes == tuple(range(10))
    assert ds.y_test.min() >= 0 and ds.y_test.max() <= 9


def _fake_mnist1d(calls: list[int]):
    def fake_make_dataset(args):
        calls.append(args.seed)
        np.random.seed(args.seed)  # the real generator reseeds global state too
        random.seed(args.seed)
        rng = np.random.default_rng(args.seed)
        return {"x": rng.normal(size=(50, 40)), "y": np.arange(50) % 10,
                "x_test": rng.normal(size=(10, 40)), "y_test": np.arange(10) % 10}
    return fake_make_dataset


def test_mnist1d_is_generated_once_per_args(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    calls: list[int] = []
    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_mnist1d(calls))
    monkeypatch.setattr(data_module, "_MNIST1D_CACHE", {})
    first = load_dataset(make_cfg(name="mnist1d"))
    second = load_dataset(make_cfg(name="mnist1d"))
    load_dataset(make_cfg(name="mnist1d", split_seed=7))
    # split_seed 0 keeps mnist1d's default seed 42 (the published dataset)
    assert calls == [42, 7]
    for a, b in zip(all_arrays(first), all_arrays(second)):
        np.testing.assert_array_equal(a, b)


def test_mnist1d_leaves_global_random_state_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "make_dataset", _fake_mnist1d([]))
    monkeypatch.setattr(data_module, "_MNIST1D_CACHE", {})
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    load_dataset(make_cfg(name="mnist1d"))
    assert np.random.random() == expected_np and random.random() == expected_py


# --- IDX -------------------------------------------------------------------------------


def test_read_idx_raw_and_gzipped_round_trip(tmp_path: Path) -> None:
    images, _ = idx_arrays(6)
    raw = write_idx(tmp_path / "imgs-idx3-ubyte", images)
    packed = write_idx(tmp_path / "imgs-idx3-ubyte.gz", images, compress=True)
    np.testing.assert_array_equal(read_idx(raw), images)
    np.testing.assert_array_equal(read_idx(packed), images)


def test_idx_explicit_pair_is_flattened_scaled_and_split(tmp_path: Path) -> None:
    images, labels = idx_arrays(30)
    img = write_idx(tmp_path / "im.idx3", images, compress=True)
    lab = write_idx(tmp_path / "lb.idx1", labels)
    ds = load_dataset(make_cfg(name="idx", images=str(img), labels=str(lab),
                               val_fraction=0.2, test_fraction=0.2, standardize=False),
                      dtype="float64")
    assert ds.n_features == 20 and ds.n_classes == 3 and ds.classes == (0, 1, 2)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (19, 5, 6)
    X = np.concatenate([ds.X_train, ds.X_val, ds.X_test])
    assert X.min() >= 0.0 and X.max() <= 1.0
    # every original image survives the split, flattened and divided by 255
    expected = images.reshape(30, -1) / 255.0
    assert sorted(map(tuple, X)) == sorted(map(tuple, expected))


def test_idx_folder_layout_uses_official_test_set(tmp_path: Path) -> None:
    train_x, train_y = idx_arrays(20, seed=1)
    test_x, test_y = idx_arrays(9, seed=2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train_x, compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", train_y, compress=True)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", test_x)  # the dotted spelling
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", test_y)
    ds = load_dataset(make_cfg(name="idx", path=str(tmp_path), val_fraction=0.25,
                               standardize=False))
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (15, 5, 9)
    np.testing.assert_allclose(ds.X_test, test_x.reshape(9, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, test_y)


def test_idx_folder_missing_files_lists_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="idx", path=str(tmp_path)))
    assert "train-images-idx3-ubyte" in str(err.value)
    assert "train-images.idx3-ubyte.gz" in str(err.value)
    assert "dataset.path" in str(err.value)


def test_idx_truncated_file_names_file_and_sizes(tmp_path: Path) -> None:
    images, labels = idx_arrays(10)
    img = write_idx(tmp_path / "im.idx3", images)
    img.write_bytes(img.read_bytes()[:-7])
    lab = write_idx(tmp_path / "lb.idx1", labels)
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="idx", images=str(img), labels=str(lab)))
    message = str(err.value)
    assert str(img) in message and "dataset.images" in message
    assert "216" in message and "209" in message  # 16 + 10*4*5 expected, 7 fewer found


def test_idx_wrong_magic_names_file(tmp_path: Path) -> None:
    images, _ = idx_arrays(4)
    bad = write_idx(tmp_path / "bad.idx3", images, magic=0x12340803)
    with pytest.raises(ConfigError) as err:
        read_idx(bad, key="dataset.images")
    assert str(bad) in str(err.value) and "0x12340803" in str(err.value)


def test_idx_labels_file_given_as_images_is_rejected(tmp_path: Path) -> None:
    _, labels = idx_arrays(10)
    lab = write_idx(tmp_path / "lb.idx1", labels)
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="idx", images=str(lab), labels=str(lab)))
    assert str(lab) in str(err.value) and "0x00000803" in str(err.value)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    images, labels = idx_arrays(10)
    img = write_idx(tmp_path / "im.idx3", images)
    lab = write_idx(tmp_path / "lb.idx1", labels[:8])
    with pytest.raises(ConfigError, match="10 images .* 8 labels"):
        load_dataset(make_cfg(name="idx", images=str(img), labels=str(lab)))


def test_idx_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.idx3"
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="idx", images=str(missing), labels=str(missing)))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


# --- CSV -------------------------------------------------------------------------------


def test_csv_maps_labels_and_keeps_original_classes(tmp_path: Path) -> None:
    n = 40
    frame = pd.DataFrame({"a": np.arange(n, dtype=float), "b": np.arange(n) % 7,
                          "label": np.where(np.arange(n) % 2 == 0, "yes", "no")})
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    ds = load_dataset(make_cfg(name="csv", path=str(path), target="label",
                               standardize=False))
    assert ds.classes == ("no", "yes") and ds.n_classes == 2 and ds.n_features == 2
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (26, 6, 8)
    # the label of each row follows its feature 'a' (even rows are "yes" -> 1)
    X = np.concatenate([ds.X_train, ds.X_val, ds.X_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    np.testing.assert_array_equal(y, (X[:, 0].astype(int) % 2 == 0).astype(np.int64))


def test_csv_missing_target_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"alpha": [1, 2], "beta": [3, 4]}).to_csv(path, index=False)
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="csv", path=str(path), target="gamma"))
    message = str(err.value)
    assert "dataset.target" in message and "alpha, beta" in message and "gamma" in message


def test_csv_non_numeric_feature_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "colour": ["r", "g", "b", "r"],
                  "y": [0, 1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="csv", path=str(path), target="y"))
    assert "colour" in str(err.value) and str(path) in str(err.value)


def test_csv_rows_with_missing_values_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "y": [0, 1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"missing values \(lines 3\)"):
        load_dataset(make_cfg(name="csv", path=str(path), target="y"))


def test_csv_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="csv", path=str(path), target="y"))
    assert str(path) in str(err.value) and "dataset.path" in str(err.value)


# --- splits, standardization, determinism ----------------------------------------------


def test_split_sizes_follow_fractions() -> None:
    ds = load_dataset(make_cfg(name="moons", n_samples=500, val_fraction=0.1,
                               test_fraction=0.3))
    # test = round(500 * 0.3); val = round(350 * 0.1) of what remains
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (315, 35, 150)


def test_zero_fractions_give_empty_holdouts() -> None:
    ds = load_dataset(make_cfg(name="moons", n_samples=50, val_fraction=0.0,
                               test_fraction=0.0))
    assert ds.X_train.shape == (50, 2) and ds.X_val.shape == (0, 2)
    assert ds.X_test.shape == (0, 2)


def test_split_is_stratified() -> None:
    ds = load_dataset(make_cfg(name="digits", test_fraction=0.25))
    totals = np.bincount(np.concatenate([ds.y_train, ds.y_val, ds.y_test]), minlength=10)
    in_test = np.bincount(ds.y_test, minlength=10)
    # each class contributes its own share, up to rounding
    assert np.all(np.abs(in_test - totals * 0.25) < 1.0)


def test_max_train_keeps_that_many_rows() -> None:
    ds = load_dataset(make_cfg(name="moons", n_samples=200, max_train=17))
    assert ds.X_train.shape == (17, 2) and len(ds.y_val) == 32 and len(ds.y_test) == 40


def test_standardization_uses_train_statistics_only() -> None:
    cfg = make_cfg(name="moons", n_samples=300, noise=0.3)
    raw = load_dataset({**cfg, "standardize": False}, dtype="float64")
    scaled = load_dataset(cfg, dtype="float64")
    np.testing.assert_allclose(scaled.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled.X_train.std(axis=0), 1.0, rtol=1e-12)
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    np.testing.assert_allclose(scaled.X_val, (raw.X_val - mean) / std, rtol=1e-12)
    np.testing.assert_allclose(scaled.X_test, (raw.X_test - mean) / std, rtol=1e-12)


def test_constant_feature_is_not_divided_by_zero() -> None:
    ds = load_dataset(make_cfg(name="digits"))
    assert np.isfinite(ds.X_train).all() and np.isfinite(ds.X_test).all()


def test_same_cfg_gives_identical_arrays() -> None:
    cfg = make_cfg(name="classification", n_samples=200)
    first, second = load_dataset(cfg), load_dataset(cfg)
    for a, b in zip(all_arrays(first), all_arrays(second)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_different_split_seed_gives_different_split() -> None:
    a = load_dataset(make_cfg(name="digits", split_seed=0), dtype="float64")
    b = load_dataset(make_cfg(name="digits", split_seed=1), dtype="float64")
    assert len(a.y_test) == len(b.y_test)
    assert not np.array_equal(a.X_test, b.X_test)


def test_float64_dtype_is_honoured() -> None:
    ds = load_dataset(make_cfg(name="moons", n_samples=100), dtype="float64")
    assert all(x.dtype == np.float64 for x in (ds.X_train, ds.X_val, ds.X_test))
    assert ds.y_train.dtype == np.int64


def test_describe_is_one_line_with_sizes() -> None:
    ds = load_dataset(make_cfg(name="moons", n_samples=100))
    text = ds.describe()
    assert "\n" not in text and "moons" in text
    assert "2 features" in text and "train 64" in text and "test 20" in text


# --- validation ------------------------------------------------------------------------


def test_unknown_name_lists_the_datasets() -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(make_cfg(name="cifar"))
    assert "dataset.name" in str(err.value) and "'cifar'" in str(err.value)
    assert all(name in str(err.value) for name in DATASETS)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"val_fraction": 1.0}, "dataset.val_fraction"),
        ({"test_fraction": -0.1}, "dataset.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "dataset.val_fraction"),
        ({"n_samples": 5}, "dataset.n_samples"),
        ({"noise": -0.1}, "dataset.noise"),
        ({"max_train": 0}, "dataset.max_train"),
        ({"split_seed": -1}, "dataset.split_seed"),
        ({"name": "classification", "n_informative": 21}, "dataset.n_informative"),
        ({"name": "classification", "n_classes": 1}, "dataset.n_classes"),
        ({"name": "classification", "noise": 1.5}, "dataset.noise"),
        ({"name": "csv"}, "dataset.path"),
        ({"name": "idx"}, "dataset.path"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_dataset(make_cfg(**overrides))


def test_non_float_dtype_is_rejected() -> None:
    with pytest.raises(ConfigError, match="dtype"):
        load_dataset(make_cfg(name="xor"), dtype="int32")


def test_training_split_needs_two_classes() -> None:
    with pytest.raises(ConfigError, match="at least 2 classes"):
        load_dataset(make_cfg(name="xor", max_train=1))
