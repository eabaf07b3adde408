"""Datasets: a small registry of local image datasets with fixed, seeded splits.

Every dataset is read from disk (or generated) and split the same way each time:

- ``train`` / ``val`` come from the dataset's training pool: ``val`` is a
  stratified 10% drawn with ``seed``; the search trains on ``train`` and prunes
  on ``val``.
- ``test`` is the dataset's official test set when it has one (Fashion-MNIST,
  CIFAR-10); otherwise a stratified 20% drawn with a *fixed* seed, so changing
  ``seed`` never moves test images into training. Only final reports read it.

Images are float32 ``(N, C, H, W)``, scaled to [0, 1] and then standardised per
channel with the mean and standard deviation of the ``train`` split; labels are
int64. Nothing is ever downloaded: a missing dataset raises
:class:`~nas.errors.DataError` naming the folders it searched and how to get it.

Registered datasets:

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, ships inside
  scikit-learn): the embedded default.
- ``fashion-mnist``: 28x28 IDX files (``*-idx?-ubyte[.gz]``) from
  ``$NAS_DATA/fashion-mnist`` or ``/usr/share/datasets/fashion-mnist`` (Debian
  package ``dataset-fashion-mnist``).
- ``cifar10``: the python-pickle batches (``data_batch_*``, ``test_batch``) from
  ``root`` or ``$NAS_DATA/cifar10``.
- ``synthetic``: 1,500 generated 8x8 images of 10 noisy class prototypes, for
  fast tests (a small net reaches about 95% validation accuracy in seconds).
- ``imagefolder``: a user's own images, one sub-folder per class under ``root``
  (:mod:`nas.imagefolder`), resized to the network's input; its ``train/``,
  ``val/`` and ``test/`` folders when it has them, else split as above. Held in
  memory when small, else streamed from disk (:class:`~nas.imagefolder.ImageFiles`).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from nas.augment import Augment
from nas.errors import DataError
from nas.imagefolder import MEMORY_BYTES, STATS_BATCH, FolderIndex, FolderOptions, ImageFiles, Part, channel_stats
from nas.imagefolder import check_headers, decode, first_size, guess_channels, moments, scan

#: Fraction of the training pool held out for validation (stratified, seeded).
VAL_FRACTION = 0.1
#: Fraction held out as the test set for datasets without an official one.
TEST_FRACTION = 0.2
#: Seed of that test hold-out; fixed so that no ``seed`` moves test images into training.
TEST_SEED = 12345

if TYPE_CHECKING:
    from nas.experiment import DatasetConfig

SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: The name of a user's image folder (:mod:`nas.imagefolder`).
IMAGEFOLDER = "imagefolder"


@dataclass(frozen=True)
class Splits:
    """One dataset split three ways; ``input_shape`` is ``(C, H, W)`` without the batch."""

    name: str
    #: In-memory tensors, or an image folder's :class:`~nas.imagefolder.ImageFiles` streamed from disk.
    train: Dataset[tuple[torch.Tensor, ...]]
    val: Dataset[tuple[torch.Tensor, ...]]
    test: Dataset[tuple[torch.Tensor, ...]]
    input_shape: tuple[int, ...]
    num_classes: int
    #: Per-channel mean and standard deviation (of [0, 1]-scaled pixels) used to standardise.
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    #: Where the files were read from ("" for embedded or generated data).
    source: str = ""
    #: What :func:`nas.train.train` does to each training batch (None: nothing).
    augment: Augment | None = None
    #: Class names by label, where the dataset has them (an image folder's sub-folders).
    classes: tuple[str, ...] = ()

    @property
    def normalization(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``: what run folders, checkpoints and exported models record, and
        :func:`load_dataset`'s ``normalization`` takes back."""
        return {"mean": list(self.mean), "std": list(self.std)}


class _Raw(NamedTuple):
    """A dataset as read: uint8 or float images in [0, 1] scale, and labels."""

    x_pool: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    y_pool: np.ndarray  # (N,) int64
    x_test: np.ndarray | None  # official test set, or None to hold out TEST_FRACTION of the pool
    y_test: np.ndarray | None
    num_classes: int
    source: str


_Loader = Callable[[Path | None], _Raw]
_REGISTRY: dict[str, _Loader] = {}


def _register(name: str) -> Callable[[_Loader], _Loader]:
    def deco(fn: _Loader) -> _Loader:
        _REGISTRY[name] = fn
        return fn
    return deco


def available_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts (whether or not their files are installed)."""
    return sorted(_REGISTRY)


# --------------------------------------------------------------------------- digits / synthetic


@_register("digits")
def _digits(root: Path | None) -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _Raw(x, np.asarray(bunch.target, dtype=np.int64), None, None, 10, "scikit-learn (embedded)")


@_register("synthetic")
def _synthetic(root: Path | None) -> _Raw:
    """10 classes of 8x8 images: a fixed random prototype per class plus Gaussian noise."""
    rng = np.random.default_rng(20240501)
    classes, per_class = 10, 150
    protos = rng.uniform(0.0, 1.0, size=(classes, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    x = protos[y] + rng.normal(0.0, 0.35, size=(len(y), 1, 8, 8)).astype(np.float32)
    order = rng.permutation(len(y))
    return _Raw(np.clip(x[order], 0.0, 1.0), y[order], None, None, classes, "generated")


# --------------------------------------------------------------------------- fashion-mnist (IDX)

_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def _search_dirs(subdir: str, root: Path | None, system: bool) -> list[Path]:
    """Folders to look in: ``root`` (and ``root/subdir``) if given, else ``$NAS_DATA/subdir`` and the system folder."""
    if root is not None:
        return [root, root / subdir]
    dirs = []
    env = os.environ.get("NAS_DATA")
    if env:
        dirs.append(Path(env) / subdir)
    if system:
        dirs.append(SYSTEM_DATA_DIR / subdir)
    return dirs


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (big-endian header: magic, then one uint32 per dimension; uint8 data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {str(path)!r}: {exc}; the file is damaged, reinstall it.") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(f"{str(path)!r} is not an IDX file of the expected kind: magic number must be "
                        f"{magic:#010x}, but got {found if found is None else hex(found)}.")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(f"{str(path)!r} is truncated or padded: header dims {dims} need {expected} bytes of data, "
                        f"but the file has {len(data) - header}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@_register("fashion-mnist")
def _fashion_mnist(root: Path | None) -> _Raw:
    dirs = _search_dirs("fashion-mnist", root, system=True)
    for d in dirs:
        found = {}
        for key, stem in _FASHION_FILES.items():
            for candidate in (d / f"{stem}.gz", d / stem):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_FASHION_FILES):
            x_tr = _read_idx(found["x_train"], 0x803)
            y_tr = _read_idx(found["y_train"], 0x801)
            x_te = _read_idx(found["x_test"], 0x803)
            y_te = _read_idx(found["y_test"], 0x801)
            for xs, ys, part in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
                if len(xs) != len(ys):
                    raise DataError(f"fashion-mnist in {str(d)!r}: {part} images ({len(xs)}) and labels "
                                    f"({len(ys)}) differ in number.")
            scale = np.float32(1 / 255)
            return _Raw((x_tr[:, None] * scale).astype(np.float32), y_tr.astype(np.int64),
                        (x_te[:, None] * scale).astype(np.float32), y_te.astype(np.int64), 10, str(d))
    raise DataError(
        f"dataset 'fashion-mnist' not found: looked for {sorted(_FASHION_FILES.values())} (.gz or plain) in "
        f"{[str(d) for d in dirs]}. Install it with `apt-get install dataset-fashion-mnist`, or put the four IDX "
        f"files in $NAS_DATA/fashion-mnist (or pass root= / --data-root). Nothing is downloaded at run time.")


# --------------------------------------------------------------------------- cifar10 (python pickles)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10's documented python batches hold: dicts, lists,
    strings, numbers and plain numpy arrays. Any other global (a class, a function)
    is refused, so a hostile file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: a CIFAR-10 batch holds only a dict of numpy arrays "
                        f"and lists.")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # a damaged pickle raises many kinds of errors
        raise DataError(f"cannot read CIFAR-10 batch {str(path)!r}: {type(exc).__name__}: {exc}.") from None
    if not isinstance(batch, dict):
        raise DataError(f"{str(path)!r}: a CIFAR-10 batch must be a dict, but got {type(batch).__name__}.")
    get = lambda key: batch.get(key.encode(), batch.get(key))  # noqa: E731  (keys are bytes in the original files)
    data, labels = get("data"), get("labels")
    if data is None or labels is None:
        raise DataError(f"{str(path)!r}: a CIFAR-10 batch needs keys 'data' and 'labels', but has "
                        f"{sorted(map(str, batch))}.")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{str(path)!r}: 'data' must be uint8 of shape (N, 3072) matching {len(labels)} labels, "
                        f"but got {data.dtype} {data.shape}.")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{str(path)!r}: labels must be in [0, 9], but got range [{labels.min()}, {labels.max()}].")
    return data.reshape(-1, 3, 32, 32), labels


@_register("cifar10")
def _cifar10(root: Path | None) -> _Raw:
    dirs = _search_dirs("cifar10", root, system=False)
    dirs += [d / "cifar-10-batches-py" for d in dirs]
    for d in dirs:
        train_files = sorted(d.glob("data_batch_*"))
        if train_files and (d / "test_batch").is_file():
            parts = [_read_cifar_batch(p) for p in train_files]
            x_te, y_te = _read_cifar_batch(d / "test_batch")
            x_tr = np.concatenate([p[0] for p in parts])
            y_tr = np.concatenate([p[1] for p in parts])
            scale = np.float32(1 / 255)
            return _Raw((x_tr * scale).astype(np.float32), y_tr, (x_te * scale).astype(np.float32), y_te, 10, str(d))
    where = [str(d) for d in dirs] or ["(nowhere: $NAS_DATA is not set and no root was given)"]
    raise DataError(
        f"dataset 'cifar10' not found: looked for data_batch_* and test_batch in {where}. Download "
        f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a machine with internet, "
        f"extract it into $NAS_DATA/cifar10 (or pass root= / --data-root). Nothing is downloaded at run time.")


# --------------------------------------------------------------------------- splitting


def _stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out): ``round(fraction * n_c)`` of every class ``c`` held out, seeded
    (at least one of every class with two or more images, so tiny datasets still validate)."""
    rng = np.random.default_rng(seed)
    keep, hold = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = max(1, int(round(fraction * len(idx)))) if len(idx) >= 2 else 0
        hold.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(hold))


@lru_cache(maxsize=4)
def _load_raw(name: str, root: Path | None, nas_data: str | None) -> _Raw:
    """Read once per (dataset, folder, ``$NAS_DATA``); the loaders read ``$NAS_DATA`` themselves."""
    return _REGISTRY[name](root)


Normalization = dict[str, list[float]]


def load_dataset(name: str, *, seed: int = 0, root: str | Path | None = None, folder: FolderOptions | None = None,
                 augment: Augment | None = None, normalization: Normalization | None = None) -> Splits:
    """Load dataset ``name`` and split it into train / val / test (see the module docstring).

    ``seed`` chooses the validation split; ``root`` is a folder to read the files
    from instead of ``$NAS_DATA`` and the system folder (for ``imagefolder``, the
    image folder itself, read as ``folder`` says). ``augment``: what training does
    to each batch. ``normalization``: the ``{"mean", "std"}`` to standardise with
    (a run's or a checkpoint's, :attr:`Splits.normalization`) instead of the
    training split's own. Raw files are read once per process and cached. Raises
    :class:`~nas.errors.DataError` when the name is unknown or the files are
    missing or damaged.
    """
    augment = augment if augment is not None and augment.active else None
    if name == IMAGEFOLDER:
        if root is None:
            raise DataError("dataset 'imagefolder' needs its folder: dataset: {name: imagefolder, root: DIR} in the "
                            "experiment file, or --dataset imagefolder --data-root DIR.")
        return _image_folder(Path(root).expanduser().resolve(), seed, folder or FolderOptions(), augment,
                             normalization)
    if name not in _REGISTRY:
        raise DataError(f"unknown dataset {name!r}; available: {available_datasets()}.")
    raw = _load_raw(name, None if root is None else Path(root).expanduser().resolve(), os.environ.get("NAS_DATA"))
    if raw.x_test is None or raw.y_test is None:
        pool_idx, test_idx = _stratified_holdout(raw.y_pool, TEST_FRACTION, TEST_SEED)
        x_pool, y_pool = raw.x_pool[pool_idx], raw.y_pool[pool_idx]
        x_test, y_test = raw.x_pool[test_idx], raw.y_pool[test_idx]
    else:
        x_pool, y_pool, x_test, y_test = raw.x_pool, raw.y_pool, raw.x_test, raw.y_test
    train_idx, val_idx = _stratified_holdout(y_pool, VAL_FRACTION, seed)
    if len(train_idx) == 0:
        raise DataError(f"dataset {name!r} from {raw.source!r} has too few images ({len(y_pool)}) to split.")
    parts = {"train": (x_pool[train_idx], y_pool[train_idx]), "val": (x_pool[val_idx], y_pool[val_idx]),
             "test": (x_test, y_test)}
    return _in_memory(name, parts, raw.num_classes, raw.source, normalization, augment)


def load_configured(ds: DatasetConfig, input_shape: tuple[int, ...] | None = None,
                    normalization: Normalization | None = None, root: str | None = None) -> Splits:
    """:func:`load_dataset` of an experiment's (or a command line's) dataset settings, an image folder read
    for a network taking ``input_shape``; ``root`` replaces the settings' folder."""
    return load_dataset(ds.name, seed=ds.split_seed, root=root or ds.root, folder=ds.folder(input_shape),
                        augment=ds.augment, normalization=normalization)


def _stats(x_train: np.ndarray, normalization: Normalization | None) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel mean and std to standardise with: ``normalization``'s, else the training split's."""
    channels = x_train.shape[1]
    if normalization is not None:
        mean, std = (np.asarray(normalization[k], dtype=np.float64) for k in ("mean", "std"))
        if len(mean) != channels or len(std) != channels:
            raise DataError(f"the recorded normalisation has {len(mean)} channels but the images have {channels}; "
                            f"give the dataset the model was trained on.")
        return mean, std
    return (x_train.mean(axis=(0, 2, 3), dtype=np.float64),
            np.maximum(x_train.std(axis=(0, 2, 3), dtype=np.float64), 1e-6))


def _in_memory(name: str, parts: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int, source: str,
               normalization: Normalization | None, augment: Augment | None, classes: tuple[str, ...] = ()
               ) -> Splits:
    """Splits of in-memory ``[0, 1]`` images ``{split: (x, y)}``, standardised per channel."""
    x_train = parts["train"][0]
    mean, std = _stats(x_train, normalization)

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        xs = (x - mean[None, :, None, None].astype(np.float32)) / std[None, :, None, None].astype(np.float32)
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32)),
                             torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))

    return Splits(name=name, train=tensors(*parts["train"]), val=tensors(*parts["val"]), test=tensors(*parts["test"]),
                  input_shape=tuple(int(d) for d in x_train.shape[1:]), num_classes=num_classes,
                  mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), source=source,
                  augment=augment, classes=classes)


def _take(part: Part, idx: np.ndarray) -> Part:
    return Part(tuple(part.files[i] for i in idx), part.labels[idx])


def _folder_parts(index: FolderIndex, seed: int) -> dict[str, Part]:
    """train / val / test of a scanned folder: its own split folders where it has them, else stratified
    hold-outs (test with :data:`TEST_SEED`, then val with ``seed``), as for the built-in datasets."""
    parts = dict(index.parts)
    pool = parts.pop("pool", None) or parts.pop("train")
    if "test" not in parts:
        keep, test = _stratified_holdout(pool.labels, TEST_FRACTION, TEST_SEED)
        pool, parts["test"] = _take(pool, keep), _take(pool, test)
    if "val" not in parts:
        keep, val = _stratified_holdout(pool.labels, VAL_FRACTION, seed)
        pool, parts["val"] = _take(pool, keep), _take(pool, val)
    if len(pool.files) < 2 or not parts["val"].files or not parts["test"].files:
        raise DataError(f"image folder {str(index.root)!r} has too few images ({len(pool.files)} for training, "
                        f"{len(parts['val'].files)} for validation, {len(parts['test'].files)} for test) to train "
                        f"on; give each class at least 3.")
    return {"train": pool, **parts}


def _image_folder(root: Path, seed: int, options: FolderOptions, augment: Augment | None,
                  normalization: Normalization | None) -> Splits:
    """The splits of an image folder: decoded into memory when small (or ``in_memory``), else streamed."""
    index = scan(root)
    parts = _folder_parts(index, seed)
    every = [f for p in parts.values() for f in p.files]
    first = [p.files[list(p.labels).index(c)] for p in parts.values() for c in np.unique(p.labels)]
    channels = options.channels or guess_channels(first)
    size = options.size or first_size(every)
    in_memory = options.in_memory
    if in_memory is None:
        in_memory = len(every) * channels * size[0] * size[1] * 4 <= MEMORY_BYTES
    source, name, classes = str(root), IMAGEFOLDER, index.classes
    if in_memory:
        pixels = {k: decode(p, channels, size, options.workers) for k, p in parts.items()}
        if normalization is None:  # summed as a streamed folder's are: both standardise alike, to the bit
            mean, std = moments(torch.from_numpy(pixels["train"]).split(STATS_BATCH), channels)
            normalization = {"mean": list(mean), "std": list(std)}
        arrays = {k: (x.astype(np.float32) / np.float32(255), parts[k].labels) for k, x in pixels.items()}
        return _in_memory(name, arrays, len(classes), source, normalization, augment, classes)
    if normalization is None:  # decodes every training image once: a bad one is found now
        mean, std = channel_stats(parts["train"], channels, size, options.workers)
        normalization = {"mean": list(mean), "std": list(std)}
        check_headers([*parts["val"].files, *parts["test"].files])
    else:
        check_headers(every)
    mean, std = _stats(np.zeros((1, channels, 1, 1)), normalization)
    files = {k: ImageFiles(p, channels, size, tuple(mean), tuple(std), options.workers) for k, p in parts.items()}
    return Splits(name=name, train=files["train"], val=files["val"], test=files["test"], input_shape=(channels, *size),
                  num_classes=len(classes), mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                  source=source, augment=augment, classes=classes)


def first_inputs(dataset: Dataset[tuple[torch.Tensor, ...]], n: int) -> torch.Tensor:
    """The inputs of the first ``n`` samples of ``dataset`` as one batch (calibration, channel importance)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][:n]
    return torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])  # type: ignore[arg-type]


def head(dataset: Dataset[tuple[torch.Tensor, ...]], n: int | None) -> Dataset[tuple[torch.Tensor, ...]]:
    """The first ``n`` samples of ``dataset`` (all of it when ``n`` is None or not smaller)."""
    if n is None or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:n] for t in dataset.tensors))
    return Subset(dataset, range(n))


# --------------------------------------------------------------------------- fitting data to an architecture


def fit_input(x: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Reshape a batch ``(N, C, H, W)`` to ``(N, *input_shape)``: flattens images for MLPs
    (``input_shape == (features,)``); a no-op when the shapes already agree."""
    if tuple(x.shape[1:]) == tuple(input_shape):
        return x
    per_sample = int(np.prod(x.shape[1:]))
    if per_sample != int(np.prod(input_shape)):
        raise DataError(f"a batch of shape {tuple(x.shape[1:])} ({per_sample} values per sample) cannot feed an "
                        f"architecture with input_shape {tuple(input_shape)}.")
    return x.reshape(x.shape[0], *input_shape)


def check_fits(splits: Splits, input_shape: tuple[int, ...], num_classes: int, what: str = "the candidate",
               fix: str = "") -> None:
    """Raise :class:`DataError` unless a network with ``input_shape`` and ``num_classes`` outputs can learn ``splits``.

    ``what`` names the network at fault in the message (``"the teacher checkpoint t.safetensors"``) and
    ``fix`` says how to get one that fits; by default, drawing the candidate for the dataset with
    ``--space`` (which fits the space to the dataset's input and classes, as a search does).
    """
    fix = fix or (f"draw it for this dataset with `--space SPACE --seed N` instead (the space is then fitted to "
                  f"the dataset's input and classes), or search an experiment file with `dataset: {splits.name}`")
    data_values = int(np.prod(splits.input_shape))
    if tuple(input_shape) != splits.input_shape and int(np.prod(input_shape)) != data_values:
        raise DataError(f"{what} takes input {'x'.join(map(str, input_shape))} but dataset {splits.name!r} has "
                        f"images {'x'.join(map(str, splits.input_shape))}; {fix}.")
    if num_classes != splits.num_classes:
        raise DataError(f"{what} has {num_classes} outputs but dataset {splits.name!r} has "
                        f"{splits.num_classes} classes; {fix}.")
