"""Datasets: registry, seeded splits, IDX and CIFAR-10 readers, clear errors."""

from __future__ import annotations

import collections
import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data import Splits, available_datasets, check_fits, fit_input, load_dataset
from nas.errors import DataError, NasError


def test_registry_lists_the_four_datasets() -> None:
    assert {"digits", "fashion-mnist", "cifar10", "synthetic"} <= set(available_datasets())


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_embedded_splits_shapes_dtypes_and_sizes(name: str) -> None:
    s = load_dataset(name)
    assert isinstance(s, Splits) and s.name == name
    assert s.input_shape == (1, 8, 8) and s.num_classes == 10
    for part in (s.train, s.val, s.test):
        x, y = part.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert tuple(x.shape[1:]) == s.input_shape and len(x) == len(y) > 0
        assert set(y.unique().tolist()) == set(range(10))  # stratified: every class in every split
    # The train split is standardised with its own statistics.
    x = s.train.tensors[0]
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2


def test_splits_are_seeded_and_test_never_moves() -> None:
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(a.val.tensors[1], b.val.tensors[1]) and torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    # The test set is the same images whatever the seed (only normalisation statistics may differ).
    assert torch.equal(a.test.tensors[1], c.test.tensors[1])
    assert len(a.train) + len(a.val) + len(a.test) == 1797


def test_unknown_dataset_lists_the_available_ones() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnist2'.*digits"):
        load_dataset("mnist2")


def test_missing_fashion_mnist_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(NasError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, DataError)
    assert str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg and "\n" not in msg


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fashion_folder(folder: Path, n_train: int = 40, n_test: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 0x803)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10, 0x801)


def test_fashion_mnist_idx_from_nas_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fashion_folder(tmp_path / "fashion-mnist")
    monkeypatch.setenv("NAS_DATA", str(tmp_path))
    s = load_dataset("fashion-mnist")
    assert s.input_shape == (1, 28, 28) and len(s.test) == 20 and len(s.train) + len(s.val) == 40
    assert len(s.val) == 10  # at least one image of every class, even at 4 images per class
    assert set(s.val.tensors[1].tolist()) == set(range(10))


def test_truncated_idx_file_is_a_clear_error(tmp_path: Path) -> None:
    _fashion_folder(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:-100]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_wrong_idx_magic_is_a_clear_error(tmp_path: Path) -> None:
    _fashion_folder(tmp_path)
    # Swap images and labels: the magic numbers no longer match.
    (tmp_path / "train-labels-idx1-ubyte.gz").replace(tmp_path / "x")
    (tmp_path / "train-images-idx3-ubyte.gz").replace(tmp_path / "train-labels-idx1-ubyte.gz")
    (tmp_path / "x").replace(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="magic number"):
        load_dataset("fashion-mnist", root=tmp_path)


def _cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [i % 10 for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"data": data, b"labels": labels, b"filenames": [b"x"] * n}, f)
    return data, labels


def test_cifar10_tiny_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    d1, _ = _cifar_batch(folder / "data_batch_1", 30, 1)
    _cifar_batch(folder / "data_batch_2", 20, 2)
    dt, lt = _cifar_batch(folder / "test_batch", 10, 3)
    s = load_dataset("cifar10", root=tmp_path)
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10
    assert len(s.train) + len(s.val) == 50 and len(s.test) == 10
    assert s.test.tensors[1].tolist() == lt
    # Channel-major layout as documented: the first 1024 bytes are the red plane.
    red = torch.from_numpy(dt[:, :1024].reshape(10, 32, 32).astype(np.float32) / 255)
    restored = s.test.tensors[0][:, 0] * s.std[0] + s.mean[0]
    assert torch.allclose(restored, red, atol=1e-5)


def test_cifar10_pickle_with_other_globals_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump(collections.OrderedDict(data=1), f)
    _cifar_batch(tmp_path / "test_batch", 10, 3)
    with pytest.raises(DataError, match="refusing to unpickle collections.OrderedDict"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_cifar10_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz") as info:
        load_dataset("cifar10")
    assert str(tmp_path / "cifar10") in str(info.value)


def test_fit_input_flattens_for_mlps_and_refuses_wrong_sizes() -> None:
    x = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 8, 8)
    assert fit_input(x, (64,)).shape == (2, 64)
    assert fit_input(x, (1, 8, 8)) is x
    with pytest.raises(DataError, match=r"input_shape \(784,\)"):
        fit_input(x, (784,))
    s = load_dataset("synthetic")
    check_fits(s, (64,), 10)
    with pytest.raises(DataError, match=r"takes input 1x28x28 but dataset 'synthetic' has images 1x8x8; draw it for "
                                        r"this dataset with `--space SPACE --seed N`"):
        check_fits(s, (1, 28, 28), 10)
    with pytest.raises(DataError, match="10 classes"):
        check_fits(s, (1, 8, 8), 7)


@pytest.mark.slow
def test_installed_fashion_mnist() -> None:
    try:
        s = load_dataset("fashion-mnist")
    except DataError as exc:
        pytest.skip(str(exc))
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert s.input_shape == (1, 28, 28)
