"""Datasets for the dropout experiments: loading, splitting and standardization.

Every loader returns a :class:`Dataset` with train / validation / test splits. All
randomness comes from ``dataset.split_seed`` so that every run of a study sees exactly the
same split, and the same config always yields bitwise-identical arrays. Nothing is ever
downloaded: the generated and bundled datasets are built locally, ``idx`` and ``csv`` read
the user's files.
"""

from __future__ import annotations

import gzip
import math
import os
import random
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from dropout_lab.errors import ConfigError, bad_value

DATASETS = ("xor", "digits", "mnist1d", "moons", "classification", "idx", "csv")

_DEFAULTS: dict[str, Any] = {
    "name": None,
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

# The truth table of the 2015 post; the third column is the constant bias input.
_XOR_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
_XOR_Y = np.array([0, 1, 1, 0], dtype=np.int64)

# mnist1d takes ~2.5 s to generate; a study loads it once per run, so keep it per process.
_MNIST1D_CACHE: dict[tuple, dict[str, np.ndarray]] = {}

# IDX type codes (third header byte) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing arrays field-wise is meaningless
class Dataset:
    """A classification dataset already split into train, validation and test arrays."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    classes: tuple
    # Standardisation fitted on train, (n_features,) each; None when the features are used raw.
    # A deployed model applies (x - mean) / scale to raw inputs.
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        """Number of input features (columns of X)."""
        return int(self.X_train.shape[1])

    def describe(self) -> str:
        """One line: name, feature and class counts, split sizes."""
        return (
            f"{self.name}: {self.n_features} features, {self.n_classes} classes, "
            f"train {len(self.y_train)} / val {len(self.y_val)} / test {len(self.y_test)}"
        )


# ---------------------------------------------------------------------------------------
# input checks


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, (float, np.floating)) and math.isfinite(value))


def _int_at_least(cfg: Mapping[str, Any], key: str, low: int) -> int:
    value = cfg[key]
    if not _is_int(value) or value < low:
        raise bad_value(f"dataset.{key}", value, f"an integer >= {low}")
    return int(value)


def _fraction(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise bad_value(f"dataset.{key}", value, "a number in [0, 1)")
    return float(value)


def _check_fraction_sum(val_fraction: float, test_fraction: float) -> None:
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"invalid value for 'dataset.val_fraction' and 'dataset.test_fraction': got "
            f"{val_fraction!r} + {test_fraction!r} = {val_fraction + test_fraction!r}; "
            f"allowed: their sum must be below 1 so that rows are left for training."
        )


def _file_path(value: Any, key: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise bad_value(key, value, "a file path (string)")
    return os.path.expanduser(os.fspath(value))


def _file_error(key: str, path: str, problem: str, expected: str) -> ConfigError:
    return ConfigError(f"invalid file for '{key}': {path!r} {problem}; expected {expected}.")


def _resolve_dtype(dtype: str | np.dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or resolved.kind != "f":
        raise bad_value("dtype", dtype, "a floating-point dtype such as 'float32' or 'float64'")
    return resolved


# ---------------------------------------------------------------------------------------
# public entry point


def load_dataset(cfg: Mapping[str, Any], dtype: str | np.dtype = "float32") -> Dataset:
    """Load, split and (optionally) standardize the dataset described by ``cfg``.

    ``cfg`` is the ``dataset`` config section as a plain mapping; missing keys take the
    documented defaults. Any invalid value or unreadable data file raises ConfigError.
    """
    if not isinstance(cfg, Mapping):
        raise bad_value("dataset", cfg, "a mapping with the dataset settings")
    cfg = {**_DEFAULTS, **cfg}
    np_dtype = _resolve_dtype(dtype)

    name = cfg["name"]
    if name not in DATASETS:
        raise bad_value("dataset.name", name, ", ".join(DATASETS))
    val_fraction = _fraction(cfg, "val_fraction")
    test_fraction = _fraction(cfg, "test_fraction")
    seed = cfg["split_seed"]
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise bad_value("dataset.split_seed", seed, "an integer in [0, 2**32)")
    seed = int(seed)
    standardize = cfg["standardize"]
    if not isinstance(standardize, (bool, np.bool_)):
        raise bad_value("dataset.standardize", standardize, "true or false")
    max_train = cfg["max_train"]
    if max_train is not None:
        max_train = _int_at_least(cfg, "max_train", 1)

    rng = np.random.default_rng(seed)

    if name == "xor":
        # The post's table is the whole dataset: no held-out rows, raw 0/1 inputs.
        X, y = _XOR_X.copy(), _XOR_Y.copy()
        empty_X, empty_y = X[:0], y[:0]
        splits = (X, y, empty_X, empty_y, empty_X, empty_y)
        classes: tuple = (0, 1)
        standardize = False
    elif name == "mnist1d":
        X, y, X_test, y_test = _mnist1d_arrays(seed)
        classes = tuple(range(10))
        splits = _split_with_test(X, y, X_test, y_test, val_fraction, rng)
    else:
        loaded = _LOADERS[name](cfg, seed)
        X, y, classes = loaded[0], loaded[1], loaded[2]
        if len(loaded) == 5:  # an official test set came with the data
            splits = _split_with_test(X, y, loaded[3], loaded[4], val_fraction, rng)
        else:
            _check_fraction_sum(val_fraction, test_fraction)
            splits = _split_three(X, y, val_fraction, test_fraction, rng)

    X_train, y_train, X_val, y_val, X_test, y_test = splits
    if max_train is not None:
        # The training rows are already shuffled, so a prefix is a random subset.
        X_train, y_train = X_train[:max_train], y_train[:max_train]
    _check_training_classes(name, y_train, classes)

    mean = scale = None
    if standardize:
        X_train, X_val, X_test, mean, scale = _standardize(X_train, X_val, X_test)

    def as_x(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float64).astype(np_dtype)

    def as_y(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a).astype(np.int64)

    return Dataset(
        name=name,
        X_train=as_x(X_train),
        y_train=as_y(y_train),
        X_val=as_x(X_val),
        y_val=as_y(y_val),
        X_test=as_x(X_test),
        y_test=as_y(y_test),
        n_classes=len(classes),
        classes=tuple(classes),
        mean=mean,
        scale=scale,
    )


# ---------------------------------------------------------------------------------------
# splitting and scaling


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding; split sizes should not depend on parity.
    return int(math.floor(x + 0.5))


def _stratified_holdout(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return (kept, held) row indices; exactly round(n * fraction) rows are held out.

    Each class contributes in proportion to its size (largest remainder), so small
    validation/test sets keep the class balance of the pool.
    """
    n = len(y)
    perm = rng.permutation(n)
    n_held = _round_half_up(n * fraction)
    if n_held == 0:
        return perm, perm[:0]
    labels, counts = np.unique(y, return_counts=True)
    quota = counts * fraction
    take = np.floor(quota).astype(np.int64)
    leftover = n_held - int(take.sum())
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:leftover]] += 1
    y_perm = y[perm]
    held_mask = np.zeros(n, dtype=bool)
    for label, k in zip(labels, take):
        held_mask[np.flatnonzero(y_perm == label)[:k]] = True
    return perm[~held_mask], perm[held_mask]


def _split_three(
    X: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Hold out test_fraction of all rows, then val_fraction of what remains."""
    pool, test = _stratified_holdout(y, test_fraction, rng)
    keep, val = _stratified_holdout(y[pool], val_fraction, rng)
    train, val = pool[keep], pool[val]
    return X[train], y[train], X[val], y[val], X[test], y[test]


def _split_with_test(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    val_fraction: float, rng: np.random.Generator,
) -> tuple[np.ndarray, ...]:
    """Keep the official test set; hold out val_fraction of the training rows."""
    train, val = _stratified_holdout(y, val_fraction, rng)
    return X[train], y[train], X[val], y[val], X_test, y_test


def _standardize(
    X_train: np.ndarray, X_val: np.ndarray, X_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Z-score with train statistics only, so val/test leak nothing into the fit."""
    X_train = np.asarray(X_train, dtype=np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0  # constant features (e.g. blank border pixels) stay at 0
    return (
        (X_train - mean) / std,
        (np.asarray(X_val, dtype=np.float64) - mean) / std,
        (np.asarray(X_test, dtype=np.float64) - mean) / std,
        mean,
        std,
    )


def _check_training_classes(name: str, y_train: np.ndarray, classes: tuple) -> None:
    present = np.unique(y_train)
    if len(present) < 2:
        found = [classes[i] for i in present]
        raise ConfigError(
            f"invalid split for dataset '{name}': the training split has "
            f"{len(y_train)} row(s) with {len(present)} class(es) {found!r}; expected at "
            f"least 2 classes. Provide more data or a target with several classes, or "
            f"lower 'dataset.val_fraction' / 'dataset.test_fraction' or raise "
            f"'dataset.max_train'."
        )


# ---------------------------------------------------------------------------------------
# bundled and generated datasets


def _load_digits(cfg: Mapping[str, Any], seed: int) -> tuple:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64), tuple(range(10))


def _generator_size(cfg: Mapping[str, Any]) -> int:
    return _int_at_least(cfg, "n_samples", 10)


def _load_moons(cfg: Mapping[str, Any], seed: int) -> tuple:
    n_samples = _generator_size(cfg)
    noise = cfg["noise"]
    if not _is_real(noise) or noise < 0:
        raise bad_value("dataset.noise", noise, "a number >= 0 (std of the Gaussian noise)")
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=n_samples, noise=float(noise), random_state=seed)
    return X.astype(np.float64), y.astype(np.int64), (0, 1)


def _load_classification(cfg: Mapping[str, Any], seed: int) -> tuple:
    """sklearn's make_classification with 2 clusters per class.

    Up to 2 redundant features (sklearn's default) are used when the non-informative
    columns leave room for them, so n_informative may go up to n_features.
    """
    n_samples = _generator_size(cfg)
    n_features = _int_at_least(cfg, "n_features", 1)
    n_informative = _int_at_least(cfg, "n_informative", 1)
    n_classes = _int_at_least(cfg, "n_classes", 2)
    flip_y = cfg["noise"]
    if not _is_real(flip_y) or not 0.0 <= flip_y <= 1.0:
        raise bad_value(
            "dataset.noise", flip_y,
            "a number in [0, 1] (for 'classification' it is the fraction of flipped labels)",
        )
    if n_informative > n_features:
        raise bad_value(
            "dataset.n_informative", n_informative,
            f"an integer in [1, dataset.n_features] = [1, {n_features}]",
        )
    clusters_per_class = 2
    if n_classes * clusters_per_class > 2**n_informative:
        raise ConfigError(
            f"invalid value for 'dataset.n_classes': got {n_classes} with "
            f"dataset.n_informative = {n_informative}; allowed: n_classes * 2 clusters per "
            f"class <= 2 ** n_informative = {2**n_informative}. Raise dataset.n_informative "
            f"or lower dataset.n_classes."
        )
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=min(2, n_features - n_informative),
        n_classes=n_classes,
        n_clusters_per_class=clusters_per_class,
        flip_y=float(flip_y),
        random_state=seed,
    )
    return X.astype(np.float64), y.astype(np.int64), tuple(range(n_classes))


def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mnist1d arrays, generated locally (never downloaded) and cached per process.

    split_seed 0 keeps mnist1d's default args (seed 42), i.e. the published standard
    dataset; any other split_seed regenerates the data with that seed.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if seed != 0:
        args.seed = seed
    key = tuple(sorted((k, repr(v)) for k, v in vars(args).items()))
    if key not in _MNIST1D_CACHE:
        # make_dataset reseeds the global random modules; restore them so loading data
        # does not silently change the randomness of the caller.
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            data = make_dataset(args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        arrays = {
            "x": np.asarray(data["x"], dtype=np.float64),
            "y": np.asarray(data["y"], dtype=np.int64),
            "x_test": np.asarray(data["x_test"], dtype=np.float64),
            "y_test": np.asarray(data["y_test"], dtype=np.int64),
        }
        for a in arrays.values():
            a.setflags(write=False)  # shared across loads: never modify in place
        _MNIST1D_CACHE[key] = arrays
    cached = _MNIST1D_CACHE[key]
    return cached["x"], cached["y"], cached["x_test"], cached["y_test"]


# ---------------------------------------------------------------------------------------
# IDX files (MNIST / Fashion-MNIST)


def read_idx(path: str | os.PathLike, *, key: str = "dataset.path") -> np.ndarray:
    """Read an IDX file (raw or gzipped) into an array in native byte order.

    Checks the magic number (two zero bytes, a type code, the number of dimensions) and
    that the file holds exactly the bytes its header declares. ``key`` is the config key
    named in error messages.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _file_error(key, path, "does not exist", "an IDX file") from None
    except OSError as exc:
        raise _file_error(key, path, f"cannot be read ({exc.strerror or exc})",
                          "a readable IDX file") from None
    if data[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the file name
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _file_error(key, path, f"is a damaged or truncated gzip file ({exc})",
                              "a complete gzip-compressed IDX file") from None
    if len(data) < 4:
        raise _file_error(key, path, f"is truncated: {len(data)} bytes, shorter than the "
                          "4-byte IDX magic number", "an IDX file")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise _file_error(
            key, path, f"has magic number 0x{magic:08X}, which is not an IDX header",
            "0x0000TTDD with type code TT in {08, 09, 0B, 0C, 0D, 0E} and DD >= 1 dimensions "
            "(MNIST images 0x00000803, labels 0x00000801)",
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _file_error(key, path, f"is truncated: the {ndim}-dimension header needs "
                          f"{header} bytes but the file has {len(data)}", "an IDX file")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise _file_error(
            key, path,
            f"{problem}: its header declares shape {dims} of {dtype.name}, which needs "
            f"{expected} bytes, but the file has {len(data)} bytes (uncompressed)",
            "a complete IDX file",
        )
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def _read_idx_expecting(path: str, key: str, magic: int) -> np.ndarray:
    """read_idx plus a check that the file is the expected kind (images vs labels)."""
    arr = read_idx(path, key=key)
    want_ndim = magic & 0xFF
    if arr.dtype != np.uint8 or arr.ndim != want_ndim:
        code = next(c for c, d in _IDX_DTYPES.items() if d.kind == arr.dtype.kind
                    and d.itemsize == arr.dtype.itemsize)
        kind = "images" if magic == _IDX_IMAGES_MAGIC else "labels"
        raise _file_error(
            key, path, f"has magic number 0x{(code << 8) | arr.ndim:08X} ({arr.dtype.name}, "
            f"{arr.ndim} dimension(s))",
            f"an IDX {kind} file with magic number 0x{magic:08X}",
        )
    return arr


def _idx_candidates(prefix: str, kind: str, ndim: int) -> list[str]:
    # Both spellings are in circulation: train-images-idx3-ubyte and train-images.idx3-ubyte.
    names = []
    for sep in ("-", "."):
        base = f"{prefix}-{kind}{sep}idx{ndim}-ubyte"
        names += [base, base + ".gz"]
    return names


def _find_in_folder(folder: str, prefix: str, kind: str, ndim: int) -> str | None:
    for name in _idx_candidates(prefix, kind, ndim):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _idx_pair(images_path: str, labels_path: str, images_key: str,
              labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx_expecting(images_path, images_key, _IDX_IMAGES_MAGIC)
    labels = _read_idx_expecting(labels_path, labels_key, _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise ConfigError(
            f"invalid files for '{images_key}' and '{labels_key}': {images_path!r} holds "
            f"{len(images)} images but {labels_path!r} holds {len(labels)} labels; expected "
            f"the same count in both."
        )
    # Flatten to (n, rows*cols) and scale the 0..255 bytes to [0, 1].
    return images.reshape(len(images), -1).astype(np.float64) / 255.0, labels.astype(np.int64)


def _idx_files(cfg: Mapping[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """The (images, labels, images_key, labels_key) sets to read: train, then maybe test."""
    explicit = {k: cfg[k] for k in ("images", "labels", "test_images", "test_labels")
                if cfg[k] is not None}
    if cfg["path"] is not None and explicit:
        raise ConfigError(
            f"invalid value for 'dataset.path': got {cfg['path']!r} together with "
            f"{', '.join('dataset.' + k for k in explicit)}; allowed: either a folder in "
            f"dataset.path or explicit dataset.images + dataset.labels files, not both."
        )
    if cfg["path"] is not None:
        folder = _file_path(cfg["path"], "dataset.path")
        if not os.path.isdir(folder):
            raise bad_value("dataset.path", folder,
                            "for 'idx', an existing folder holding the MNIST-style IDX files")
        sets = []
        for prefix in ("train", "t10k"):
            found = {kind: _find_in_folder(folder, prefix, kind, n)
                     for kind, n in (("images", 3), ("labels", 1))}
            if prefix == "t10k" and not any(found.values()):
                break  # no official test set: it is split off the training files
            for kind, n in (("images", 3), ("labels", 1)):
                if found[kind] is None:
                    raise ConfigError(
                        f"invalid value for 'dataset.path': folder {folder!r} has no "
                        f"{prefix} {kind} file; looked for "
                        f"{', '.join(_idx_candidates(prefix, kind, n))}."
                    )
            sets.append((found["images"], found["labels"], "dataset.path", "dataset.path"))
        return tuple(sets)
    if "images" not in explicit or "labels" not in explicit:
        raise ConfigError(
            "invalid value for 'dataset.path': got None; the 'idx' dataset needs either "
            "dataset.path (a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte "
            "and optionally the t10k files) or both dataset.images and dataset.labels."
        )
    if ("test_images" in explicit) != ("test_labels" in explicit):
        missing = "test_labels" if "test_images" in explicit else "test_images"
        raise bad_value(f"dataset.{missing}", None,
                        "a file path; dataset.test_images and dataset.test_labels go together")
    sets = [(_file_path(cfg["images"], "dataset.images"),
             _file_path(cfg["labels"], "dataset.labels"), "dataset.images", "dataset.labels")]
    if "test_images" in explicit:
        sets.append((_file_path(cfg["test_images"], "dataset.test_images"),
                     _file_path(cfg["test_labels"], "dataset.test_labels"),
                     "dataset.test_images", "dataset.test_labels"))
    return tuple(sets)


def _load_idx(cfg: Mapping[str, Any], seed: int) -> tuple:
    sets = _idx_files(cfg)
    X, y = _idx_pair(*sets[0])
    if len(sets) == 1:
        classes, codes = np.unique(y, return_inverse=True)
        return X, codes.astype(np.int64), tuple(int(c) for c in classes)
    X_test, y_test = _idx_pair(*sets[1])
    if X_test.shape[1] != X.shape[1]:
        raise ConfigError(
            f"invalid file for '{sets[1][2]}': {sets[1][0]!r} has {X_test.shape[1]} pixels "
            f"per image but the training images {sets[0][0]!r} have {X.shape[1]}; expected "
            f"the same image size."
        )
    classes, codes = np.unique(np.concatenate([y, y_test]), return_inverse=True)
    codes = codes.astype(np.int64)
    return X, codes[: len(y)], tuple(int(c) for c in classes), X_test, codes[len(y):]


# ---------------------------------------------------------------------------------------
# CSV files


def _sorted_labels(values: list) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed types: any fixed order will do
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _load_csv(cfg: Mapping[str, Any], seed: int) -> tuple:
    """Features are every column except ``target``; they must all be numeric.

    Rows with missing values are rejected rather than dropped, so the data a study
    trains on is exactly the file the user gave.
    """
    if cfg["path"] is None:
        raise bad_value("dataset.path", None, "for 'csv', the path of a CSV file")
    path = _file_path(cfg["path"], "dataset.path")
    target = cfg["target"]
    if not isinstance(target, str) or not target:
        raise bad_value("dataset.target", target, "for 'csv', the name of the label column")
    if not os.path.isfile(path):
        problem = "is a folder" if os.path.isdir(path) else "does not exist"
        raise _file_error("dataset.path", path, problem, "a CSV file")
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pandas parse errors are ValueErrors
        raise _file_error("dataset.path", path, f"cannot be parsed as CSV ({exc})",
                          "a comma-separated file with a header row") from None

    columns = [str(c) for c in frame.columns]
    if target not in frame.columns:
        raise bad_value("dataset.target", target,
                        f"a column of {path!r}; columns found: {', '.join(columns) or 'none'}")
    if len(frame) == 0:
        raise _file_error("dataset.path", path, "has a header but no data rows",
                          "one row per example below the header")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise _file_error("dataset.path", path, f"has no columns besides the target "
                          f"{target!r}", "at least one numeric feature column")
    non_numeric = [str(c) for c in features.columns
                   if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise _file_error("dataset.path", path,
                          f"has non-numeric feature column(s): {', '.join(non_numeric)}",
                          "numeric features (encode categories as numbers or drop them)")
    missing = frame.isna().any(axis=1).to_numpy()
    if missing.any():
        lines = (np.flatnonzero(missing) + 2).tolist()  # +2: 1-based, after the header
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        raise _file_error("dataset.path", path,
                          f"has {len(lines)} row(s) with missing values (lines {shown})",
                          "no empty cells (clean or drop those rows first)")
    X = features.to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        raise _file_error("dataset.path", path, "has infinite feature values",
                          "finite numbers")

    labels = frame[target]
    if pd.api.types.is_float_dtype(labels) and not (labels == np.round(labels)).all():
        raise _file_error("dataset.path", path,
                          f"has non-integer numbers in the target column {target!r}",
                          "class labels (a regression target cannot be classified)")
    originals = [v.item() if isinstance(v, np.generic) else v for v in pd.unique(labels)]
    classes = _sorted_labels(originals)
    if len(classes) < 2:
        raise _file_error("dataset.path", path,
                          f"has a single value {classes!r} in the target column {target!r}",
                          "at least 2 classes")
    index = {label: i for i, label in enumerate(classes)}
    y = labels.map(index).to_numpy(dtype=np.int64)
    return X, y, tuple(classes)


_LOADERS: dict[str, Callable[[Mapping[str, Any], int], tuple]] = {
    "digits": _load_digits,
    "moons": _load_moons,
    "classification": _load_classification,
    "idx": _load_idx,
    "csv": _load_csv,
}
