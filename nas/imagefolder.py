"""Image folders: a user's own images, one sub-folder per class, decoded with Pillow.

::

    ROOT/cat/0001.png            ROOT/train/cat/0001.jpg
    ROOT/cat/0002.png      or    ROOT/train/dog/...
    ROOT/dog/0003.jpg            ROOT/val/cat/...    (or valid/, validation/; optional)
                                 ROOT/test/cat/...   (optional)

Class names are the sub-folders' names in sorted order (label 0 is the first). Images are found in each
class folder and below it, by suffix (:data:`SUFFIXES`); other files are skipped. Every image is converted
to ``L`` (one channel) or ``RGB`` (three) and resized (bilinear) to the network's input; with resizing off
they must all have one size. This module reads folders and decodes images; :mod:`nas.data` splits them
and builds the :class:`~nas.data.Splits`. Each problem a user can fix (a folder with no classes, an empty
class, an image Pillow cannot decode, mixed sizes) is one :class:`~nas.errors.DataError` naming the file.

Small folders are decoded once into memory (then they train as fast as the built-in datasets); large
ones are an :class:`ImageFiles` dataset streamed from disk by a DataLoader with ``workers`` processes
(:func:`stream`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nas.errors import DataError

#: The file suffixes read as images (case-insensitive).
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
#: The folder names of a pre-split image folder, by split.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
#: Decoded float32 bytes up to which ``in_memory: auto`` holds a folder in memory.
MEMORY_BYTES = 1 << 30
#: The batches the per-channel statistics are summed over (in memory and streamed alike).
STATS_BATCH = 256
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P")


@dataclass(frozen=True)
class FolderOptions:
    """How to read an image folder: ``size`` ``(H, W)`` to resize to (None: keep, all images alike),
    ``channels`` 1 or 3 (None: 3 when the first image of any class has colour, else 1), ``in_memory``
    (None: when the decoded folder fits :data:`MEMORY_BYTES`), ``workers`` DataLoader processes for
    decoding and streaming (0: in this process)."""

    size: tuple[int, int] | None = None
    channels: int | None = None
    in_memory: bool | None = None
    workers: int = 0


@dataclass(frozen=True)
class Part:
    """The images of one split as found on disk: files and their labels."""

    files: tuple[Path, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class FolderIndex:
    """A scanned folder: its classes, and either one ``pool`` part or ``train`` (with ``val``/``test`` when
    the folder has them)."""

    root: Path
    classes: tuple[str, ...]
    parts: dict[str, Part]


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                  and not p.name.startswith("."))


def _scan_part(folder: Path, classes: Sequence[str] | None) -> tuple[tuple[str, ...], Part]:
    """The class folders of ``folder`` and their images; ``classes``: the training split's, which a
    validation or test folder may not go beyond."""
    dirs = _class_dirs(folder)
    if not dirs:
        loose = "; its images must go in one sub-folder per class" if _images(folder) else ""
        raise DataError(f"image folder {str(folder)!r} has no class sub-folders{loose} (ROOT/cat/1.png, "
                        f"ROOT/dog/2.png, ...).")
    names = tuple(d.name for d in dirs)
    if classes is not None:
        extra = [n for n in names if n not in classes]
        if extra:
            raise DataError(f"class folder {str(folder / extra[0])!r} has no counterpart in the training split "
                            f"(classes {list(classes)}); rename or remove it.")
    elif len(dirs) < 2:
        raise DataError(f"image folder {str(folder)!r} has one class folder ({names[0]!r}); a classifier needs "
                        f"two or more.")
    files, labels = [], []
    for d in dirs:
        found = _images(d)
        if not found:
            raise DataError(f"class folder {str(d)!r} holds no images ({', '.join(SUFFIXES[:4])}, ...); add some "
                            f"or remove the folder.")
        label = (classes or names).index(d.name)
        files += found
        labels += [label] * len(found)
    return names, Part(tuple(files), np.asarray(labels, dtype=np.int64))


def scan(root: Path) -> FolderIndex:
    """The classes and image files under ``root`` (see the module docstring for the two layouts)."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {str(root)!r} {what}; give a folder of class sub-folders "
                        f"(dataset: {{name: imagefolder, root: DIR}} or --dataset imagefolder --data-root DIR).")
    if not (root / "train").is_dir():
        classes, pool = _scan_part(root, None)
        return FolderIndex(root, classes, {"pool": pool})
    classes, train = _scan_part(root / "train", None)
    parts = {"train": train}
    for split in ("val", "test"):
        for name in SPLIT_FOLDERS[split]:
            if (root / name).is_dir():
                parts[split] = _scan_part(root / name, classes)[1]
                break
    return FolderIndex(root, classes, parts)


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {str(path)!r}: not an image Pillow can decode (damaged, or another "
                        f"kind of file named {path.suffix}); replace or remove the file.") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}; replace or remove the file.") from None


def guess_channels(files: Iterable[Path]) -> int:
    """3 when any of ``files`` (the first image of each class) has colour, else 1."""
    for path in files:
        with _open(path) as im:
            if im.mode not in _GREY_MODES:
                return 3
    return 1


def check_headers(files: Iterable[Path]) -> None:
    """Each file opens as an image (its header only: fast), or a DataError names the first that does not;
    a streamed folder checks the images it does not decode at the start, so a bad file stops the search
    before the first trial."""
    for path in files:
        with _open(path):
            pass


def first_size(files: Sequence[Path]) -> tuple[int, int]:
    """``(H, W)`` shared by every file (headers only), or a DataError naming the first that differs."""
    with _open(files[0]) as im:
        w, h = im.size
    for path in files[1:]:
        with _open(path) as im:
            if im.size != (w, h):
                raise DataError(f"image {str(path)!r} is {im.size[0]}x{im.size[1]} but {str(files[0])!r} is "
                                f"{w}x{h}: with resizing off (resize: false) every image must have one size; "
                                f"drop resize: false to have them resized to the network's input.")
    return h, w


def read_image(path: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 ``(C, H, W)``: converted to L or RGB, resized (bilinear) to ``size`` ``(H, W)``."""
    try:
        with _open(path) as im:
            mode = "RGB" if channels == 3 else "L"
            im = im if im.mode == mode else im.convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.array(im, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or damaged data, found while decoding
        raise DataError(f"cannot decode image {str(path)!r}: {exc}; replace or remove the file.") from None
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


class ImageFiles(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images decoded from disk at each access: ``(standardised float32 (C, H, W), label)``; with ``raw``,
    ``(uint8 (C, H, W), label)``. ``workers``: the DataLoader processes :func:`stream` reads it with."""

    def __init__(self, part: Part, channels: int, size: tuple[int, int], mean: Sequence[float] = (),
                 std: Sequence[float] = (), workers: int = 0, raw: bool = False) -> None:
        self.files, self.labels = part.files, torch.from_numpy(part.labels)
        self.channels, self.size, self.workers, self.raw = channels, size, workers, raw
        self.mean = torch.tensor(mean or [0.0] * channels, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std or [1.0] * channels, dtype=torch.float32).view(-1, 1, 1)
        self.shape = (channels, *size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(read_image(self.files[i], self.channels, self.size))
        return (x if self.raw else self.standardise(x)), self.labels[i]

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (one or a batch) as the network sees them: the in-memory datasets' arithmetic in
        float32, so both give the same tensors."""
        return x.float().div_(255.0).sub_(self.mean).div_(self.std)

    def as_raw(self) -> ImageFiles:
        """The same files read as uint8 (a DataLoader then moves a quarter of the bytes)."""
        raw = copy.copy(self)
        raw.raw = True
        return raw


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def stream(dataset: Dataset[tuple[torch.Tensor, ...]], batches: Iterable[Sequence[int]], workers: int = 0
           ) -> Iterator[tuple[torch.Tensor, ...]]:
    """The batches of ``dataset`` at the index lists ``batches``, read by a DataLoader with ``workers``
    processes (one torch thread each). A DataError raised in a worker comes back as one line."""
    # Images travel as uint8 and are standardised a batch at a time: a quarter of the bytes between
    # processes, and one tensor operation a batch instead of one an image.
    images = dataset if isinstance(dataset, ImageFiles) and not dataset.raw else None
    # Its own generator: the workers' seeds are not drawn from torch's global one, which stays the caller's.
    loader = DataLoader(images.as_raw() if images is not None else dataset, batch_sampler=list(batches),
                        num_workers=workers, worker_init_fn=_one_thread, generator=torch.Generator().manual_seed(0))
    try:
        for batch in loader:
            yield (images.standardise(batch[0]), *batch[1:]) if images is not None else tuple(batch)
    except DataError as exc:
        lines = str(exc).strip().splitlines()
        raise DataError(lines[-1].removeprefix("nas.errors.DataError: ")) from None


def sequential(n: int, batch_size: int) -> list[list[int]]:
    """Index lists of ``batch_size`` covering ``range(n)`` in order (evaluation, statistics)."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def in_order(dataset: Dataset[tuple[torch.Tensor, ...]], batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The whole of any dataset in order, in batches of ``batch_size``: sliced from a TensorDataset's
    tensors, else streamed with the dataset's ``workers`` (evaluation)."""
    if isinstance(dataset, TensorDataset):
        n = len(dataset.tensors[0])
        yield from (tuple(t[i:i + batch_size] for t in dataset.tensors) for i in range(0, n, batch_size))
        return
    yield from stream(dataset, sequential(len(dataset), batch_size),  # type: ignore[arg-type]
                      getattr(dataset, "workers", 0))


def decode(part: Part, channels: int, size: tuple[int, int], workers: int = 0) -> np.ndarray:
    """Every image of ``part`` decoded into uint8 ``(N, C, H, W)``, by ``workers`` processes."""
    out = np.empty((len(part.files), channels, *size), dtype=np.uint8)
    data = ImageFiles(part, channels, size, workers=workers, raw=True)
    start = 0
    for x, _ in stream(data, sequential(len(data), 256), workers):
        out[start:start + len(x)] = x.numpy()
        start += len(x)
    return out


def moments(batches: Iterable[torch.Tensor], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 image batches scaled to [0, 1], summed in float64
    batch by batch: the same batches give the same figures to the last bit, however they were read."""
    total, squares, n = np.zeros(channels), np.zeros(channels), 0
    for x in batches:
        v = x.double().div_(255.0)
        total += v.sum(dim=(0, 2, 3)).numpy()
        squares += v.pow(2).sum(dim=(0, 2, 3)).numpy()
        n += v.numel() // channels
    mean = total / max(n, 1)
    return mean, np.maximum(np.sqrt(np.maximum(squares / max(n, 1) - mean ** 2, 0.0)), 1e-6)


def channel_stats(part: Part, channels: int, size: tuple[int, int], workers: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`moments` of ``part``'s images in one streamed pass (batches of :data:`STATS_BATCH`)."""
    data = ImageFiles(part, channels, size, workers=workers, raw=True)
    return moments((x for x, _ in stream(data, sequential(len(data), STATS_BATCH), workers)), channels)
