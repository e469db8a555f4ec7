"""Image-classification data for the MNIST auxiliary-logit reproduction (numpy only, no torch).

    subliminal reproduce aux-logits [--data PATH]

Without PATH: scikit-learn's 8x8 digits (ships with scikit-learn, so it works offline), split
80/20 stratified with a fixed seed. PATH may be
- a directory holding the four standard IDX files (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally
  `.gz`) — MNIST, Fashion-MNIST (Debian: `apt-get install dataset-fashion-mnist`, files under
  /usr/share/datasets/fashion-mnist) and KMNIST all ship like this;
- an `.npz` with arrays `x_train`, `y_train`, `x_test`, `y_test` (the Keras `mnist.npz` layout).
Images are flattened and scaled to [-1, 1] with the training set's min and max, so the uniform
noise the students see covers the same box as the real inputs.
"""

from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from subliminal.errors import SubliminalError

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# IDX type codes (third header byte) to numpy big-endian dtypes.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Split:
    x_train: np.ndarray  # float32 [n, d] in [-1, 1]
    y_train: np.ndarray  # int64 [n]
    x_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as an array; any malformation names the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the name
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise SubliminalError(f"{path}: cannot read IDX file ({e})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise SubliminalError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4) if len(raw) >= 4 + 4 * ndim else None
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize:
        raise SubliminalError(f"{path}: IDX file is truncated or its size does not match its"
                              " header")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise SubliminalError(f"{folder}: no {name}[.gz] there; --data wants a directory of the four"
                          f" IDX files ({', '.join(IDX_NAMES)}) or an .npz with"
                          f" {', '.join(NPZ_KEYS)}")


def _load_npz(path: Path) -> list[np.ndarray]:
    if not zipfile.is_zipfile(path):  # else numpy falls back to pickle and blames that
        raise SubliminalError(f"{path}: not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise SubliminalError(f"{path}: .npz lacks {', '.join(missing)} (needs"
                                      f" {', '.join(NPZ_KEYS)})")
            return [z[k] for k in NPZ_KEYS]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise SubliminalError(f"{path}: cannot read as .npz ({e})") from None


def _scale(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x_train = x_train.reshape(len(x_train), -1).astype(np.float32)
    x_test = x_test.reshape(len(x_test), -1).astype(np.float32)
    lo, hi = float(x_train.min()), float(x_train.max())
    span = hi - lo if hi > lo else 1.0
    return (x_train - lo) / span * 2 - 1, (x_test - lo) / span * 2 - 1


def _check(path: Path | str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    x_train, y_train, x_test, y_test = arrays
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise SubliminalError(f"{path}: image and label counts differ"
                              f" ({len(x_train)}/{len(y_train)} train,"
                              f" {len(x_test)}/{len(y_test)} test)")
    if x_train.ndim < 2 or x_train.shape[1:] != x_test.shape[1:] or y_train.ndim != 1:
        raise SubliminalError(f"{path}: expected images [n, ...] and labels [n], got"
                              f" {x_train.shape}, {y_train.shape}, {x_test.shape}")
    for y in (y_train, y_test):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise SubliminalError(f"{path}: labels must be non-negative integers")
    x_train, x_test = _scale(x_train, x_test)
    return [x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)]


def load_digits_split(seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits, stratified 80/20 split (the split seed is fixed data)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        d.data, d.target, test_size=0.2, stratify=d.target, random_state=seed)
    return Split(*_check("digits", [x_train, y_train, x_test, y_test]), name="sklearn-digits-8x8")


def load_data(path: str | Path | None) -> Split:
    """The dataset --data names (see the module docstring); None means scikit-learn digits."""
    if path is None or str(path) == "":
        return load_digits_split()
    path = Path(path)
    if path.is_dir():
        arrays = [read_idx(_find_idx(path, name)) for name in IDX_NAMES]
    elif path.is_file() and path.suffix == ".npz":
        arrays = _load_npz(path)
    elif path.exists():
        raise SubliminalError(f"{path}: --data wants a directory of MNIST IDX files or an .npz"
                              f" with {', '.join(NPZ_KEYS)}")
    else:
        raise SubliminalError(f"{path}: no such file or directory")
    return Split(*_check(path, arrays), name=str(path))
