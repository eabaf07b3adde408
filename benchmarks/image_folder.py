"""Image folders: Fashion-MNIST written out as PNG files, read back as `nas` reads a user's folder.

1. Writes ``--train`` training images (the first of Fashion-MNIST's pool, ten classes) and ``--test``
   test images as PNG files into ``train/<class>/`` and ``test/<class>/`` of a temporary folder.
2. Throughput of one training epoch's data loading (batches of 64 in the training loop's seeded order,
   :func:`nas.train.epoch_batches`), images/s: the folder decoded into memory (in-memory tensors, the
   baseline; its one-time decoding is timed too), and streamed from disk by a DataLoader with 0, 1 and 2
   worker processes, each as a ratio to the in-memory figure; and the cost of train-time augmentation
   (crop 2 + flip) on in-memory batches.
3. The same short ``nas search`` (space ``lenet``, 28x28 grey: the images keep their size; dense proxy
   accuracy, ``proxy.compressed: false``) through the ``nas`` command on the folder, once streamed with 2
   workers and once held in memory: the trials' accuracies must agree (the streamed batches are the
   in-memory ones), and the wall times give the cost of streaming inside a real search; and the baseline,
   the built-in Fashion-MNIST tensors with as many training images per epoch (``proxy.max_samples``):
   the best accuracy on the folder as a ratio to it. Seed 0 for all.

One torch thread, run under ``nice -n 10``. Writes ``results/bench/image_folder.json`` and its README row::

    nice -n 10 .venv/bin/python benchmarks/image_folder.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from _common import write_result
from PIL import Image

from nas.augment import Augment, augment_batch
from nas.data import load_dataset
from nas.imagefolder import FolderOptions
from nas.train import Plan, TrainConfig, epoch_batches

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def write_pngs(root: Path, n_train: int, n_test: int) -> float:
    """Fashion-MNIST's first ``n_train`` pool and ``n_test`` test images as PNG files; returns seconds."""
    start = time.perf_counter()
    fm = load_dataset("fashion-mnist")
    for split, data, n in (("train", fm.train, n_train), ("test", fm.test, n_test)):
        x, y = data.tensors
        pixels = ((x[:n] * fm.std[0] + fm.mean[0]) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        for i, (image, label) in enumerate(zip(pixels, y[:n].tolist())):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0]).save(folder / f"{i:05d}.png")
    return time.perf_counter() - start


def epoch_rate(dataset, batch_size: int = 64, augment: Augment | None = None, mean=(), std=()) -> float:
    """Images per second of one epoch of training batches (optionally augmented)."""
    plan = Plan(len(dataset), TrainConfig(batch_size=batch_size))
    generator = torch.Generator().manual_seed(0)
    start, seen = time.perf_counter(), 0
    for x, *_ in epoch_batches(dataset, plan, generator, plan.steps_per_epoch):
        if augment is not None:
            x = augment_batch(x, augment, mean, std, generator)
        seen += len(x)
    return seen / (time.perf_counter() - start)


def throughput(root: Path) -> dict:
    options = dict(size=(28, 28), channels=1)
    start = time.perf_counter()
    memory = load_dataset("imagefolder", root=root, folder=FolderOptions(**options, in_memory=True))
    decode_s = time.perf_counter() - start
    base = epoch_rate(memory.train)
    rows = {"in_memory": {"images_per_s": base, "ratio": 1.0, "one_time_decode_s": decode_s}}
    aug = epoch_rate(memory.train, augment=Augment(crop=2, flip=True), mean=memory.mean, std=memory.std)
    rows["in_memory_augmented"] = {"images_per_s": aug, "ratio": aug / base, "augment": {"crop": 2, "flip": True}}
    for workers in (0, 1, 2):
        streamed = load_dataset("imagefolder", root=root, normalization=memory.normalization,
                                folder=FolderOptions(**options, in_memory=False, workers=workers))
        rate = epoch_rate(streamed.train)
        rows[f"streamed_{workers}_workers"] = {"images_per_s": rate, "ratio": rate / base}
        print(f"streamed, {workers} workers: {rate:,.0f} images/s ({rate / base:.4f}x in-memory)", flush=True)
    rows["train_images"] = len(memory.train)
    return rows


def search(tmp: Path, root: Path, mode: str, trials: int, epochs: int, samples: int) -> dict:
    """One `nas search` of ``mode``: the folder ``streamed`` (2 workers) or in ``memory``, or the ``built-in``
    Fashion-MNIST tensors with ``proxy.max_samples`` = ``samples`` per epoch (as many images as the folder's)."""
    name = f"folder-{mode}"
    exp = tmp / f"{name}.yaml"
    proxy = {"epochs": epochs, "pruner": "none", "batch_size": 64, "compressed": False}  # dense accuracy
    if mode == "built-in":
        dataset: dict = {"name": "fashion-mnist"}
        proxy["max_samples"] = samples * epochs
    else:
        dataset = {"name": "imagefolder", "root": str(root), "in_memory": mode == "memory",
                   "workers": 0 if mode == "memory" else 2}
    exp.write_text(yaml.safe_dump({"name": name, "space": "lenet", "dataset": dataset, "proxy": proxy,
                                   "objectives": ["accuracy", "size_kb"], "budget": {"trials": trials}, "seed": 0}))
    out = tmp / name
    start = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / "nas"), "search", str(exp), "--out", str(out),
                             "--no-progress"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"nas search failed ({result.returncode}): {result.stderr.strip()}")
    import pandas as pd

    trials_csv = pd.read_csv(out / "trials.csv")
    return {"wall_s": wall, "states": trials_csv["state"].tolist(), "accuracy": trials_csv["accuracy"].tolist(),
            "front": int(trials_csv["pareto"].sum()), "normalization": json.loads((out / "normalization.json").read_text()),
            "summary": result.stdout.strip().splitlines()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=2_000)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nas-image-folder-") as tmp:
        root = Path(tmp) / "fashion-png"
        write_s = write_pngs(root, args.train, args.test)
        print(f"wrote {args.train + args.test} PNG files in {write_s:.0f} s", flush=True)
        rates = throughput(root)
        runs = {mode: search(Path(tmp), root, mode, args.trials, args.epochs, rates["train_images"])
                for mode in ("streamed", "memory", "built-in")}
    same = runs["streamed"]["accuracy"] == runs["memory"]["accuracy"]
    best, baseline = max(runs["streamed"]["accuracy"]), max(runs["built-in"]["accuracy"])
    minutes = (time.perf_counter() - started) / 60
    data = {"train_images": args.train, "test_images": args.test, "png_write_s": write_s, "throughput": rates,
            "search": {"space": "lenet", "trials": args.trials, "proxy_epochs": args.epochs, **runs,
                       "same_accuracies": same, "best_accuracy_ratio_folder_over_builtin": best / baseline,
                       "wall_ratio_streamed_over_memory": runs["streamed"]["wall_s"] / runs["memory"]["wall_s"]},
            "load_average_at_start": load, "minutes": minutes}
    r = rates
    summary = (f"Fashion-MNIST as {args.train:,} + {args.test:,} PNG files, one epoch's batches of 64, images/s: "
               f"in memory {r['in_memory']['images_per_s']:,.0f} (decoded once in {r['in_memory']['one_time_decode_s']:.0f} s; "
               f"with crop+flip {r['in_memory_augmented']['images_per_s']:,.0f}), streamed with 0/1/2 workers "
               + "/".join(f"{r[f'streamed_{w}_workers']['images_per_s']:,.0f}" for w in (0, 1, 2))
               + " (" + "/".join(f"{r[f'streamed_{w}_workers']['ratio']:.3f}x" for w in (0, 1, 2)) + " in-memory); "
               f"`nas search` lenet on the folder, {args.trials} trials x {args.epochs} epoch: streamed (2 workers) "
               f"{runs['streamed']['wall_s']:.0f} s vs in memory {runs['memory']['wall_s']:.0f} s, trial accuracies "
               f"identical: {'yes' if same else 'no'}; best val accuracy {best:.1%} vs {baseline:.1%} on the built-in "
               f"tensors (as many images; **{best / baseline:.2f}x**); shared 2-core machine, load {load:.1f}; "
               f"{minutes:.1f} min")
    print(summary)
    write_result("image_folder", data, summary)


if __name__ == "__main__":
    main()
