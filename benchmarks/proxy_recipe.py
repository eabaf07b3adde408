"""Benchmark: does the trained proxy (``evaluator: train``) rank compressed candidates? Recipes compared (Fashion-MNIST)

Fresh random candidates of a mobilenetv2-tiny-like space at 28x28 (``supernet_fidelity.fidelity_space``,
its compression section kept; seeds drawn from the OS and listed in the JSON; a draw that compresses
nothing is drawn again) are each trained the way ``nas search`` trains a trial (:func:`nas.search.proxy_setup`
and :func:`nas.search.proxy_train`: ``proxy.epochs`` 3 on the first ``--samples`` training images, the last
epoch with the candidate's compression applied) under each recipe of ``RECIPES``:

- old: the compressed epoch at ``proxy.lr``, its validation accuracy with the running statistics it leaves
  (``recalibration_batches: 0``, ``compressed_lr_factor: 1``), the recipe before issue 15;
- the others: batch norm recalibrated on 4 training batches after it, and the compressed epoch's peak
  learning rate at 1, 3 or 10 times ``proxy.lr``.

The dense epochs run once per candidate and each recipe's compressed epoch continues a copy, as
``resume_train`` continues a trial; the first candidate also runs the default recipe in one
``proxy_train`` call, and the JSON records that both agree.

For each: (a) the dense accuracy after the dense epochs vs the score after the compressed one, (b) the
Spearman and Kendall correlation of the score with a longer reference, (c) seconds per trial. The reference
is a longer pipeline like the winners': ``--ref-epochs`` dense epochs on the first ``--ref-samples``
training images, then :func:`nas.compress.compress_with_recovery` (one recovery epoch per stage at the
proxy's learning rate, as ``nas finetune`` does by default), batch norm recalibrated, test accuracy on the
first ``--eval`` test images.

Run: ``nice -n 10 .venv/bin/python benchmarks/proxy_recipe.py`` (about 20 minutes on one core of a shared
2-core machine); ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import replace

import torch
from _common import write_result
from scipy.stats import kendalltau, spearmanr
from supernet_fidelity import fidelity_space
from torch.utils.data import TensorDataset

from nas import build_model
from nas.compress import compress_with_recovery, stages
from nas.compress.recovery import at_chance
from nas.data import Splits, first_inputs, load_dataset
from nas.experiment import COMPRESSED_LR_FACTOR, RECALIBRATION_BATCHES, parse_experiment
from nas.search import proxy_setup, proxy_train
from nas.spec import Candidate
from nas.supernet import recalibrate
from nas.train import TrainConfig, evaluate, train


def subset(splits: Splits, train_n: int, eval_n: int) -> Splits:
    return replace(splits, train=TensorDataset(*(t[:train_n] for t in splits.train.tensors)),
                   val=TensorDataset(*(t[:eval_n] for t in splits.val.tensors)),
                   test=TensorDataset(*(t[:eval_n] for t in splits.test.tensors)))


def compressing(space, rng: random.SystemRandom) -> tuple[int, Candidate]:
    while True:
        seed = rng.randrange(2**31)
        candidate = space.random(seed)
        if stages(candidate.compression):
            return seed, candidate


#: (name, proxy.recalibration_batches, proxy.compressed_lr_factor); the first is the recipe before issue 15.
RECIPES = (("old", 0, 1.0), ("recalibrated", 4, 1.0), ("recalibrated, lr x3", 4, 3.0),
           ("recalibrated, lr x10", 4, 10.0))


def proxy_trials(experiment, candidate: Candidate, number: int, splits: Splits, identity: bool
                 ) -> tuple[float, dict]:
    """Trial ``number`` under every recipe: the dense epochs once (as :func:`proxy_train` runs them), then each
    recipe's compressed epoch on a copy, as :func:`nas.search.proxy.resume_train` continues a trial after its
    dense epochs. Returns the dense accuracy and, per recipe, the score and the seconds of the whole trial.
    With ``identity``, the default recipe also runs as one ``proxy_train`` call, to show both agree."""
    model, config = proxy_setup(experiment, candidate, number, 1)
    start = time.perf_counter()
    dense = train(model, splits, replace(config, epochs=config.epochs - 1))
    dense_s = time.perf_counter() - start
    out = {}
    for name, batches, factor in RECIPES:
        t = time.perf_counter()
        last = proxy_train(copy.deepcopy(model), candidate, splits, replace(config, epochs=1), lambda e, a: None,
                           True, recalibration_batches=batches, compressed_lr_factor=factor)
        out[name] = {"score": round(last.val_accuracy, 4), "failed": last.failed,
                     "at_chance": bool(at_chance(last.val_accuracy, splits)),
                     "seconds": round(dense_s + time.perf_counter() - t, 1)}
    if identity:
        model, config = proxy_setup(experiment, candidate, number, 1)
        whole = proxy_train(model, candidate, splits, config, lambda e, a: None, True)
        out["identity"] = {"one_call": round(whole.val_accuracy, 4), "equal": all(
            abs(whole.val_accuracy - out[name]["score"]) < 1e-4 for name, b, f in RECIPES
            if (b, f) == (RECALIBRATION_BATCHES, COMPRESSED_LR_FACTOR))}
    return dense.val_accuracy, out


def reference(candidate: Candidate, seed: int, splits: Splits, epochs: int, lr: float) -> dict:
    torch.manual_seed(seed)
    model = build_model(candidate.arch)
    start = time.perf_counter()
    config = TrainConfig(epochs=epochs, batch_size=64, lr=lr, seed=seed, threads=1, progress=False)
    dense = train(model, splits, config)
    compressed, steps = compress_with_recovery(model, candidate.compression, splits, replace(config, epochs=1))
    raw = evaluate(compressed, splits.test)
    recalibrate(compressed, first_inputs(splits.train, RECALIBRATION_BATCHES * 64), RECALIBRATION_BATCHES, 64)
    return {"dense_val": round(dense.val_accuracy, 4), "test": round(evaluate(compressed, splits.test), 4),
            "test_without_recalibration": round(raw, 4), "failed": dense.failed or next(
                (s["failed"] for s in steps if s["failed"]), None), "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2000, help="proxy training images")
    parser.add_argument("--ref-samples", type=int, default=3000, help="reference training images")
    parser.add_argument("--ref-epochs", type=int, default=2)
    parser.add_argument("--eval", type=int, default=1000, help="validation and test images scored")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="candidate seeds (default: fresh)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.candidates, args.samples, args.ref_samples, args.ref_epochs, args.eval = 3, 128, 128, 1, 128
    torch.set_num_threads(1)
    full = load_dataset("fashion-mnist")
    proxy_splits = subset(full, args.samples, args.eval)
    ref_splits = subset(full, args.ref_samples, args.eval)
    space = fidelity_space()
    experiment = parse_experiment("name: proxy-recipe\nspace: mobilenetv2-tiny\ndataset: fashion-mnist\n")
    rng = random.SystemRandom()
    drawn = ([(s, space.random(s)) for s in args.seeds] if args.seeds
             else [compressing(space, rng) for _ in range(args.candidates)])

    rows = []
    start = time.perf_counter()
    for number, (seed, candidate) in enumerate(drawn):
        dense, recipes = proxy_trials(experiment, candidate, number, proxy_splits, number == 0)
        rows.append({"seed": seed, "compression": candidate.compression.to_dict(),
                     "stages": [name for name, _ in stages(candidate.compression)], "dense_val": round(dense, 4),
                     **recipes, "reference": reference(candidate, seed, ref_splits, args.ref_epochs,
                                                       experiment.config.proxy.lr)})
        print(rows[-1], flush=True)
        if not args.quick:
            report(rows, args, space, experiment, start, len(drawn))

    if args.quick:
        report(rows, args, space, experiment, start, len(drawn), write=False)


def report(rows: list[dict], args: argparse.Namespace, space, experiment, start: float, asked: int,
           write: bool = True) -> None:
    """The statistics of the candidates done so far; written (JSON and README row) after each one from the
    third on, so that a run stopped early leaves what it measured, marked with how many of ``asked`` it did."""
    if len(rows) < 3:
        return
    ref = [r["reference"]["test"] for r in rows]
    stats = {}
    for name, _, _ in RECIPES:
        score = [r[name]["score"] for r in rows]
        drops = [r["dense_val"] - r[name]["score"] for r in rows]
        stats[name] = {"spearman": round(float(spearmanr(score, ref).statistic), 3),
                       "kendall": round(float(kendalltau(score, ref).statistic), 3),
                       "mean_drop_points": round(sum(drops) / len(drops) * 100, 1),
                       "at_chance": sum(r[name]["at_chance"] for r in rows),
                       "failed": sum(bool(r[name]["failed"]) for r in rows),
                       "mean_score": round(sum(score) / len(score), 4),
                       "seconds_per_trial": round(sum(r[name]["seconds"] for r in rows) / len(rows), 1)}
    minutes = (time.perf_counter() - start) / 60
    data = {"space": space.config.model_dump(mode="json"), "dataset": "fashion-mnist",
            "seeds": [r["seed"] for r in rows], "candidates_done": len(rows), "candidates_asked": asked,
            "proxy": {"epochs": experiment.config.proxy.epochs, "lr": experiment.config.proxy.lr,
                      "train_images": args.samples, "val_images": args.eval,
                      "recalibration_batches": RECALIBRATION_BATCHES},
            "reference": {"dense_epochs": args.ref_epochs, "train_images": args.ref_samples,
                          "recovery": "compress_with_recovery, 1 epoch per stage at the proxy lr, then batch norm "
                                      "recalibrated", "test_images": args.eval},
            "recipes": [{"name": n, "recalibration_batches": b, "compressed_lr_factor": f}
                        for n, b, f in RECIPES],
            "candidates": rows, "stats": stats, "identity_recipe": {"recalibration_batches": RECALIBRATION_BATCHES,
                                                            "compressed_lr_factor": COMPRESSED_LR_FACTOR},
            "minutes": round(minutes, 1),
            "note": "old = the compressed epoch's validation accuracy with the running statistics it leaves; "
                    "the others recalibrate batch norm after it and train it at a multiple of the learning rate; "
                    "one core, on a machine shared with other jobs"}
    parts = [f"{name}: Spearman {st['spearman']:.2f}, Kendall {st['kendall']:.2f}, mean {st['mean_score']:.1%}, "
             f"{st['mean_drop_points']:.0f} points below the dense epochs, {st['at_chance']} at chance, "
             f"{st['seconds_per_trial']:.0f} s/trial" for name, st in stats.items()]
    summary = (f"trained proxy (3 epochs x {args.samples} Fashion-MNIST images, last compressed) on {len(rows)} fresh "
               f"compressed candidates (of {asked} asked) vs a longer reference (test, Spearman): " + "; ".join(parts)
               + f"; {minutes:.1f} min")
    print(summary)
    if write:
        write_result("proxy_recipe", data, summary)


if __name__ == "__main__":
    main()
