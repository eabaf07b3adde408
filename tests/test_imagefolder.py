"""Issue 18 item 1: a user's image folder (class sub-folders of PNG/JPEG/BMP files) through the `nas` command:
searched, trained, fine-tuned and compressed with one normalisation, augmented in training only, and its
bad files reported in one line naming the file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.augment import Augment, augment_batch
from nas.checkpoint import read_checkpoint
from nas.data import load_dataset
from nas.imagefolder import FolderOptions

from _runs import nas_cmd, study_of, write, without_warnings

CLASSES = ("circle", "stripes", "dark")


def _image(label: int, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """An RGB picture of class ``label``: a bright disc, vertical stripes, or a dark noisy field."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    if label == 0:
        base = 200.0 * (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (min(h, w) / 3) ** 2)
    elif label == 1:
        base = 220.0 * ((xx // 2) % 2)
    else:
        base = np.full((h, w), 40.0)
    rgb = base[..., None] + rng.normal(0, 15, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: int = 12, seed: int = 0, sizes: tuple[tuple[int, int], ...] = ((12, 10), (9, 9)),
                ) -> Path:
    """``root/<class>/<i>.<png|bmp|jpg>``: mixed sizes and formats, some greyscale."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = Image.fromarray(_image(label, rng, sizes[i % len(sizes)]))
            if i % 4 == 3:
                im = im.convert("L")
            im.save(root / name / f"{i:03d}.{('png', 'bmp', 'png', 'jpg')[i % 4]}")
    return root


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nas_cmd(*args), capture_output=True, text=True, timeout=300, cwd=cwd)


def train_folder(folder: Path, out: Path, *extra: str) -> dict:
    result = run("train", "--space", "mobilenetv2-tiny", "--dataset", "imagefolder", "--data-root", str(folder),
                 "--epochs", "1", "--threads", "1", "--no-progress", "-o", str(out), *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def expected_stats(files: list[Path], channels: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std computed here, straight from Pillow, to check what nas records."""
    mode = "RGB" if channels == 3 else "L"
    x = np.stack([np.asarray(Image.open(f).convert(mode).resize(size[::-1], Image.Resampling.BILINEAR),
                             dtype=np.float64).reshape(size[0], size[1], channels) for f in files]) / 255
    return x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))


# --------------------------------------------------------------------------- the whole path through the command


@pytest.mark.slow
def test_search_on_a_presplit_folder_streamed_with_workers(tmp_path: Path) -> None:
    """train/ val/ test/ folders are the splits; the folder is streamed by a worker, the space's 1x8x8 input is
    what the images become, and normalization.json holds the training split's own statistics."""
    for split, n, seed in (("train", 10, 1), ("val", 3, 2), ("test", 3, 3)):
        make_folder(tmp_path / "images" / split, per_class=n, seed=seed)
    exp = write(tmp_path, {"name": "folder", "space": "mobilenetv2-tiny", "objectives": ["accuracy", "madds"],
                           "dataset": {"name": "imagefolder", "root": "images", "in_memory": False, "workers": 1,
                                       "augment": {"crop": 1, "flip": True}},
                           "budget": {"trials": 2}, "proxy": {"epochs": 2, "pruner": "none", "batch_size": 16}})
    result = run("search", str(exp), "--out", str(tmp_path / "run"), "--no-progress", cwd=tmp_path / "images")
    assert result.returncode == 0, result.stderr
    trials = [line.split(",") for line in (tmp_path / "run" / "trials.csv").read_text().splitlines()]
    assert [row[1] for row in trials[1:]] == ["COMPLETE", "COMPLETE"]
    study = study_of(tmp_path / "run", "folder")
    arch = json.loads(study.trials[0].user_attrs["candidate"])["arch"]
    assert arch["input_shape"] == [1, 8, 8] and arch["layers"][-1]["out"] == 3
    recorded = json.loads((tmp_path / "run" / "normalization.json").read_text())
    files = sorted((tmp_path / "images" / "train").rglob("*.*"))
    mean, std = expected_stats(files, 1, (8, 8))
    assert recorded["mean"] == pytest.approx(mean, abs=1e-6) and recorded["std"] == pytest.approx(std, abs=1e-6)


@pytest.mark.slow
def test_train_finetune_and_compress_reuse_the_checkpoints_normalisation(tmp_path: Path) -> None:
    """`nas train` records the folder's mean/std in the checkpoint; `nas finetune --init` on a folder with other
    statistics standardises as the checkpoint did, and `nas compress` ranks channels on those inputs."""
    folder = make_folder(tmp_path / "a")
    summary = train_folder(folder, tmp_path / "m.safetensors", "--augment", '{"crop": 2, "flip": true, "cutout": 3}')
    assert summary["dataset"] == "imagefolder" and len(summary["normalization"]["mean"]) == 1
    meta = read_checkpoint(tmp_path / "m.safetensors")[1]
    assert meta["extra"]["normalization"] == summary["normalization"]
    assert meta["candidate"]["arch"]["input_shape"] == [1, 8, 8]
    brighter = make_folder(tmp_path / "b", seed=5)
    for f in brighter.rglob("*.*"):  # other statistics: the folder's own mean would differ
        im = Image.open(f)
        Image.eval(im, lambda v: min(255, v + 60)).save(f)
    result = run("finetune", "--init", str(tmp_path / "m.safetensors"), "--dataset", "imagefolder", "--data-root",
                 str(brighter), "--epochs", "1", "--threads", "1", "--no-progress", "-o",
                 str(tmp_path / "f.safetensors"))
    assert result.returncode == 0, result.stderr
    tuned = json.loads(result.stdout.strip().splitlines()[-1])
    assert tuned["normalization"] == summary["normalization"]
    own = train_folder(brighter, tmp_path / "own.safetensors")["normalization"]
    assert own["mean"][0] > summary["normalization"]["mean"][0] + 0.1  # the folder's own would have been this
    result = run("compress", str(tmp_path / "m.safetensors"), "--spec", '{"channel_ratio": 0.25, '
                 '"channel_importance": "activation"}', "--dataset", "imagefolder", "--data-root", str(folder))
    assert result.returncode == 0, result.stderr
    assert "total" in result.stdout


def test_in_memory_and_streamed_folders_give_the_same_splits(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs")
    opts = dict(size=(8, 8), channels=3)
    memory = load_dataset("imagefolder", root=folder, folder=FolderOptions(**opts, in_memory=True))
    streamed = load_dataset("imagefolder", root=folder, folder=FolderOptions(**opts, in_memory=False, workers=1))
    assert memory.classes == streamed.classes == tuple(sorted(CLASSES))
    assert memory.input_shape == streamed.input_shape == (3, 8, 8)
    assert memory.mean == streamed.mean and memory.std == streamed.std  # summed alike: equal to the bit
    for a, b in ((memory.train, streamed.train), (memory.val, streamed.val), (memory.test, streamed.test)):
        assert len(a) == len(b)
        x = torch.stack([b[i][0] for i in range(len(b))])
        assert torch.allclose(a.tensors[0], x, atol=1e-4)
        assert a.tensors[1].tolist() == [int(b[i][1]) for i in range(len(b))]
    assert len(memory.test) == 3 * round(0.2 * 12)  # stratified: TEST_FRACTION of every class


def test_streamed_training_reads_the_same_batches_as_in_memory(tmp_path: Path) -> None:
    """The DataLoader reads the tensors path's seeded order: one run each way ends with the same weights."""
    import nas
    from nas.train import TrainConfig, train

    folder = make_folder(tmp_path / "imgs")
    space = nas.load_space("mobilenetv2-tiny").with_input((1, 8, 8), 3)
    results = []
    for in_memory in (True, False):
        splits = load_dataset("imagefolder", root=folder, folder=FolderOptions((8, 8), 1, in_memory, 1),
                              augment=Augment(crop=1, flip=True))
        torch.manual_seed(0)
        model = nas.build_model(space.random(0).arch)
        train(model, splits, TrainConfig(epochs=2, batch_size=8, seed=3, progress=False))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(results[0], results[1])


# --------------------------------------------------------------------------- augmentation


def test_augmentation_moves_flips_and_masks_only_in_training() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(augment_batch(x, Augment(), (0.0,), (1.0,), g), x)
    flipped = augment_batch(x.repeat(32, 1, 1, 1), Augment(flip=True), (0.0,), (1.0,), g)
    same = [torch.equal(f, o) for f, o in zip(flipped, x.repeat(32, 1, 1, 1))]
    mirrored = [torch.equal(f, o.flip(2)) for f, o in zip(flipped, x.repeat(32, 1, 1, 1))]
    assert all(s or m for s, m in zip(same, mirrored)) and 12 < sum(mirrored) < 52  # of 64, about half
    shifted = augment_batch(x.repeat(32, 1, 1, 1) + 1, Augment(crop=1), (0.0,), (1.0,), g)
    assert shifted.shape == (64, 1, 4, 4) and (shifted == 0).any()  # the black border shows where it moved
    assert all(set(s.unique().tolist()) - {0.0} <= set((o + 1).unique().tolist())
               for s, o in zip(shifted, x.repeat(32, 1, 1, 1)))
    cut = augment_batch(torch.ones(8, 3, 6, 6), Augment(cutout=2), (0.5,) * 3, (0.5,) * 3, g)
    assert ((cut == 0).sum(dim=(1, 2, 3)) > 0).all()  # the square is the mean: 0 once standardised


@pytest.mark.parametrize("args, words", [
    (("--augment", '{"rotate": 10}'), "--augment rotate: Extra inputs are not permitted"),
    (("--data-workers", "2"), "--data-workers is a setting of image folders"),
])
def test_bad_data_options_are_one_line(tmp_path: Path, args: tuple[str, ...], words: str) -> None:
    result = run("train", "--space", "mobilenetv2-tiny", *args, "-o", str(tmp_path / "m.safetensors"))
    assert result.returncode == 2
    err = without_warnings(result.stderr)
    assert err.count("\n") == 1 and err.startswith(f"nas: error: {words}"), err


# --------------------------------------------------------------------------- errors: one line naming the file


def _bad_image(root: Path) -> Path:
    bad = root / CLASSES[1] / "005.png"
    bad.write_text("this is not a PNG")
    return bad


def _truncated(root: Path) -> Path:
    bad = root / CLASSES[0] / "002.png"
    bad.write_bytes(bad.read_bytes()[:80])
    return bad


def _empty_class(root: Path) -> Path:
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    return root / "empty"


def _no_classes(root: Path) -> Path:
    for f in list(root.rglob("*.*")):
        f.rename(root / f"{f.parent.name}-{f.name}")
    for d in CLASSES:
        (root / d).rmdir()
    return root


def _one_class(root: Path) -> Path:
    for d in CLASSES[1:]:
        for f in (root / d).iterdir():
            f.unlink()
        (root / d).rmdir()
    return root


@pytest.mark.parametrize("spoil, words, workers", [
    (_bad_image, "not an image Pillow can decode", "0"),
    (_bad_image, "not an image Pillow can decode", "2"),  # raised in a DataLoader worker: still one line
    (_truncated, "cannot decode image", "0"),
    (_truncated, "cannot decode image", "2"),
    (_empty_class, "holds no images", "0"),
    (_no_classes, "has no class sub-folders", "0"),
    (_one_class, "needs two or more", "0"),
])
def test_bad_folders_are_one_line_naming_the_file(tmp_path: Path, spoil, words: str, workers: str) -> None:
    folder = make_folder(tmp_path / "imgs")
    named = spoil(folder)
    result = run("train", "--space", "mobilenetv2-tiny", "--dataset", "imagefolder", "--data-root", str(folder),
                 "--data-workers", workers, "--epochs", "1", "-o", str(tmp_path / "m.safetensors"))
    assert result.returncode == 2, result.stderr
    err = without_warnings(result.stderr)
    assert err.count("\n") == 1 and err.startswith("nas: error: "), err
    assert words in err and str(named) in err, err
    assert not (tmp_path / "m.safetensors").exists()


def test_mixed_sizes_without_resizing_name_the_odd_file(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", sizes=((10, 10),))
    odd = folder / CLASSES[2] / "007.png"
    Image.new("RGB", (9, 11)).save(odd)
    exp = write(tmp_path, {"name": "mixed", "space": "mobilenetv2-tiny", "objectives": ["accuracy", "madds"],
                           "dataset": {"name": "imagefolder", "root": "imgs", "resize": False},
                           "budget": {"trials": 1}, "proxy": {"epochs": 1, "pruner": "none"}})
    result = run("search", str(exp), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 2
    err = without_warnings(result.stderr)
    assert err.count("\n") == 1 and str(odd) in err and "9x11" in err and "resize: false" in err, err
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("dataset, words", [
    ({"name": "digits", "workers": 2}, "workers is a setting of image folders"),
    ({"name": "imagefolder", "root": "imgs", "resize": False, "image_size": 8}, "resize is false"),
    ({"name": "imagefolder", "root": "nowhere"}, "does not exist"),
    ({"name": "imagefolder"}, "needs its folder"),
])
def test_experiment_dataset_settings_are_checked(tmp_path: Path, dataset: dict, words: str) -> None:
    make_folder(tmp_path / "imgs", per_class=3)
    exp = write(tmp_path, {"name": "bad", "space": "mobilenetv2-tiny", "objectives": ["accuracy", "madds"],
                           "dataset": dataset, "budget": {"trials": 1}})
    result = run("search", str(exp), "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 2
    err = without_warnings(result.stderr)
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.slow
def test_winners_of_a_folder_search_carry_the_runs_normalisation(tmp_path: Path) -> None:
    """`nas finetune RUN` on an image-folder run: the teacher, the winner's checkpoint and its ONNX file record
    the run's normalization.json, and the ONNX file's class names are the folder's."""
    import onnx

    make_folder(tmp_path / "imgs")
    exp = write(tmp_path, {"name": "win", "space": "mobilenetv2-tiny", "objectives": ["accuracy", "madds"],
                           "dataset": {"name": "imagefolder", "root": "imgs", "augment": {"flip": True}},
                           "budget": {"trials": 2}, "proxy": {"epochs": 1, "pruner": "none", "batch_size": 16}})
    out = tmp_path / "run"
    result = run("search", str(exp), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    result = run("finetune", str(out), "--top", "1", "--epochs", "1", "--teacher-epochs", "1", "--recovery-epochs",
                 "0", "--no-progress")
    assert result.returncode in (0, 1), result.stderr  # 1: a winner at chance accuracy on this tiny folder
    recorded = json.loads((out / "normalization.json").read_text())
    winner = next((out / "winners").glob("1-trial*"))
    assert read_checkpoint(winner / "model.safetensors")[1]["extra"]["normalization"] == recorded
    assert read_checkpoint(out / "winners" / "teacher.safetensors")[1]["extra"]["normalization"] == recorded
    props = {p.key: json.loads(p.value) for p in onnx.load(str(winner / "model.onnx")).metadata_props}
    assert props["mean"] == recorded["mean"] and props["std"] == recorded["std"]
    assert props["classes"] == sorted(CLASSES) and props["dataset"] == "imagefolder"


def test_dataset_settings_keep_old_digests_and_survive_a_round_trip() -> None:
    """Runs started before the image-folder settings existed still resume (their digest, taken with the code
    of 6ea5711, is unchanged), and a config dumped and read back (as the Ray driver hands it to each trial)
    is accepted with the same digest."""
    from nas.experiment import Experiment, ExperimentConfig, parse_experiment

    old = parse_experiment("name: a\nspace: mobilenetv2-tiny\ndataset: {name: fashion-mnist, split_seed: 3}\n")
    assert old.digest == "7af5da8251ff5511"
    for text in ("name: a\nspace: mobilenetv2-tiny\ndataset: digits\n",
                 "name: a\nspace: s.yaml\ndataset: {name: imagefolder, root: d, workers: 2, augment: {crop: 2}}\n"):
        exp = parse_experiment(text)
        again = Experiment(ExperimentConfig.model_validate(exp.config.model_dump(mode="json")))
        assert again.digest == exp.digest
    augmented = parse_experiment("name: a\nspace: mobilenetv2-tiny\ndataset: {name: digits, augment: {flip: true}}\n")
    streamed = parse_experiment("name: a\nspace: mobilenetv2-tiny\ndataset: {name: imagefolder, root: d, workers: 2}\n")
    assert augmented.digest != parse_experiment("name: a\nspace: mobilenetv2-tiny\ndataset: digits\n").digest
    assert streamed.digest == parse_experiment("name: a\nspace: mobilenetv2-tiny\ndataset: {name: imagefolder, "
                                               "root: d}\n").digest  # workers change no trial: a resume may set them
