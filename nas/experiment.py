"""Experiment files: what ``nas search`` searches, on what, for how long.

An experiment is a small YAML file, validated with pydantic; every mistake is
one line naming the file, the field and what is allowed::

    name: demo                    # run folder results/demo/ and Optuna study name
    space: mobilenetv2-tiny       # built-in space name or YAML file
    dataset: digits               # or {name: fashion-mnist, root: /data}, or a folder of class sub-folders:
                                  # {name: imagefolder, root: images/, workers: 2, augment: {crop: 4, flip: true}}
    objectives:                   # accuracy up; latency_ms, madds, params, size_kb down
      - accuracy
      - latency_ms                # on the first profile; {latency_ms: raspberry-pi-4} for another
      - size_kb
    profiles: [reference-cpu]     # hardware profiles for latency (a name: built-in, built, plugin; or a file)
    constraints:                  # hard limits; cheap ones are checked before any training
      latency_ms: {max: 5}
      size_kb: {max: 100}
    budget: {trials: 40, minutes: 30}  # whichever ends first; either alone; no budget section: 40 trials
    sampler: nsga2                # nsga2 | nsga3 | tpe | random (default: tpe with evaluator: supernet, else nsga2)
    proxy: {epochs: 3, pruner: median}
    winners: {top: 3, epochs: 10}
    resources: {cpus: 1, gpus: 0} # per trial, for --backend ray (default: proxy.threads CPUs, no GPU)
    device: cpu                   # where every stage trains: cpu (default) | auto (a GPU if there is one) | cuda[:N]
    amp: true                     # mixed precision (float16 autocast, gradient scaling) on CUDA; ignored on the CPU
    evaluator: train              # what scores accuracy: train (short proxy training, the default) or supernet
    supernet: {epochs: 10}        # `nas supernet train` and evaluator: supernet (the checkpoint path, training)
    seed: 0

Paths in the file (``space``, ``dataset.root``, profile files ending in .json/.yaml) are read
relative to the file's own folder; absolute paths are taken as they are.

Objective and constraint names are the columns of the run's ``trials.csv``
(docs/run-folder.md). Costs are of the candidate as compressed by its own
settings where that applies (``size_kb`` is the Deep Compression estimate);
MAdds, parameters and latency are of the dense architecture.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas.augment import Augment
from nas.device import DEFAULT_DEVICE, check_device_name
from nas.errors import NasError, describe_validation_error
from nas.imagefolder import FolderOptions
from nas.objectives import KINDS, Constraint, Objective


class ExperimentError(NasError):
    """An experiment file is missing, malformed or asks for something that does not exist."""


#: Settings a resumed run may change.
RESUMABLE = ("budget", "workers", "storage", "winners", "description", "resources", "device", "amp")
#: Batches of training images batch norm is recalibrated on after the proxy's compressed epoch (issue 15).
RECALIBRATION_BATCHES = 4
#: The proxy's compressed epoch's peak learning rate, as a multiple of ``proxy.lr`` (issue 15).
COMPRESSED_LR_FACTOR = 1.0
#: ``proxy:`` keys added after runs existed, with their defaults: left out of :attr:`Experiment.digest` there.
LATER_PROXY_KEYS: dict[str, object] = {"importance_samples": None, "lowrank_penalty": 0.0,
                                       "recalibration_batches": RECALIBRATION_BATCHES,
                                       "compressed_lr_factor": COMPRESSED_LR_FACTOR}
SAMPLERS = ("nsga2", "nsga3", "tpe", "random")
#: The default sampler per evaluator, from results/bench/search_supernet.json: with the supernet evaluator
#: (200 trials, mobilenetv2-tiny/digits) multi-objective TPE reached random search's final hypervolume at
#: trial 16, NSGA-II (population 20) at 72; final hypervolume 0.62 / 0.58 / random 0.44. The train
#: evaluator keeps NSGA-II, its default before (TPE led there too, results/bench/search.json, but a
#: changed default would change every old run's digest).
SAMPLER_FOR = {"supernet": "tpe"}
PRUNERS = ("median", "halving", "hyperband", "none")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Dataset settings only an image folder reads.
FOLDER_KEYS = ("image_size", "channels", "resize", "in_memory", "workers")


class DatasetConfig(_Strict):
    """The dataset, its split seed and train-time ``augment`` (any image dataset). An ``imagefolder``
    (``root``: the folder) is resized to ``image_size`` (an int or [H, W]; default: the space's input) and
    converted to ``channels`` (default: the space's), unless ``resize: false`` (images as they are, all one
    size); held in memory when it fits (``in_memory: auto``), else streamed by ``workers`` processes."""

    name: str = "digits"
    root: str | None = None
    split_seed: int = 0
    image_size: int | tuple[int, int] | None = None
    channels: Literal[1, 3] | None = None
    resize: bool = True
    in_memory: bool | Literal["auto"] = "auto"
    workers: int = Field(default=0, ge=0)
    augment: Augment = Augment()

    @model_validator(mode="after")
    def _folder_keys(self) -> DatasetConfig:
        given = [k for k in FOLDER_KEYS if getattr(self, k) != type(self).model_fields[k].default]
        if self.name != "imagefolder" and given:
            raise ValueError(f"{given[0]} is a setting of image folders (name: imagefolder), not of {self.name!r}")
        if not self.resize and self.image_size is not None:
            raise ValueError("image_size resizes the images, but resize is false: give one of them")
        size = (self.image_size,) * 2 if isinstance(self.image_size, int) else self.image_size
        if size is not None and min(size) < 1:
            raise ValueError(f"image_size must be positive, but got {self.image_size}")
        return self

    def folder(self, input_shape: tuple[int, ...] | None = None) -> FolderOptions | None:
        """How to read the image folder for a network taking ``input_shape`` (None: not an image folder)."""
        if self.name != "imagefolder":
            return None
        image = input_shape if input_shape is not None and len(input_shape) == 3 else None
        size = (self.image_size,) * 2 if isinstance(self.image_size, int) else self.image_size
        if self.resize and size is None and image is not None:
            size = (image[1], image[2])
        channels = self.channels or (image[0] if self.resize and image is not None and image[0] in (1, 3) else None)
        return FolderOptions(size=tuple(size) if size else None, channels=channels,  # type: ignore[arg-type]
                             in_memory=None if self.in_memory == "auto" else bool(self.in_memory),
                             workers=self.workers)


class Limit(_Strict):
    """``{max: v}`` for a cost, ``{min: v}`` for accuracy (one of them)."""

    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one(self) -> Limit:
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of max or min")
        return self


#: The trials of an experiment without a ``budget`` section.
DEFAULT_TRIALS = 40


class Budget(_Strict):
    """When a search ends: after ``trials`` trials (in total, over all sessions), after ``minutes`` of
    searching, or whichever comes first when both are given. Either may be given alone: a minutes-only
    budget has no trial limit. An experiment without a ``budget`` section runs :data:`DEFAULT_TRIALS`
    trials; ``budget: {}`` says nothing and is refused."""

    trials: int | None = Field(default=None, ge=1)
    minutes: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _some(self) -> Budget:
        if self.trials is None and self.minutes is None:
            raise ValueError("give trials, minutes or both (e.g. {trials: 40} or {minutes: 30}); a search needs "
                             f"an end (leave the budget section out for {DEFAULT_TRIALS} trials)")
        return self


class ProxyConfig(_Strict):
    """Short training that scores accuracy; ``pruner`` stops weak candidates after early epochs."""

    epochs: int = Field(default=3, ge=1)
    max_samples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=0.05, gt=0)
    pruner: Literal["median", "halving", "hyperband", "none"] = "median"
    max_seconds: float | None = Field(default=None, gt=0)
    threads: int = Field(default=1, ge=1)  # per worker; small networks train fastest on one thread
    #: The last epoch trains the candidate with its compression applied: accuracy is the compressed model's.
    compressed: bool = True
    #: Training images the ``activation`` channel importance counts over, exactly (streamed); None: all of them.
    importance_samples: int | None = Field(default=None, ge=1)
    #: Low-rank regularization's weight (:class:`nas.factoring.LowRankPenalty`) for candidates with a
    #: ``lowrank_ratio``, in the dense epochs; 0: off (it costs one SVD per layer per step).
    lowrank_penalty: float = Field(default=0.0, ge=0)
    #: After the compressed epoch, batch norm's running statistics are re-estimated on this many batches of
    #: ``batch_size`` training images before its validation; 0: not (the recipe before issue 15).
    recalibration_batches: int = Field(default=RECALIBRATION_BATCHES, ge=0)
    #: The compressed epoch's peak learning rate (a cosine schedule of its own) as a multiple of ``lr``.
    compressed_lr_factor: float = Field(default=COMPRESSED_LR_FACTOR, gt=0)


class ResourcesConfig(_Strict):
    """What one trial reserves on a Ray cluster (``nas search --backend ray``): CPUs (default
    ``proxy.threads``) and GPUs (fractions allowed; Ray sets ``CUDA_VISIBLE_DEVICES`` for the trial)."""

    cpus: float | None = Field(default=None, gt=0)
    gpus: float = Field(default=0, ge=0)


class WinnersConfig(_Strict):
    """``nas finetune RUN``: K candidates spread along the front, trained longer, distilled, compressed."""

    top: int = Field(default=3, ge=1)
    epochs: int = Field(default=10, ge=1)
    teacher_epochs: int = Field(default=15, ge=1)
    recovery_epochs: int = Field(default=1, ge=0)
    #: The recovery fine-tune's peak learning rate after each compression stage, annealed to 0 (cosine) over
    #: that recovery's own steps; None: the training lr (``nas.winners.RECOVERY_LR_SHARE`` of it).
    recovery_lr: float | None = Field(default=None, gt=0)
    #: Training batches (of the winners' batch size) batch norm is recalibrated on after each compression
    #: stage and recovery (:func:`nas.train.recalibrate`); 0: off (the running averages as trained).
    recalibration_batches: int = Field(default=8, ge=0)
    at_end: bool = False
    #: Liu et al.'s Rethinking baseline for winners with structured pruning: the pruned architecture also
    #: trained from scratch, on the same epochs (``epochs``: Scratch-E) or the same MAdds (``madds``: Scratch-B,
    #: at most twice the epochs), or ``off``; the better on validation is kept (:mod:`nas.winners`).
    scratch: Literal["epochs", "madds", "off"] = "epochs"
    #: Low-rank regularization's weight for winners with a ``lowrank_ratio`` while they distil; 0: off.
    lowrank_penalty: float = Field(default=0.0, ge=0)


class SupernetConfig(_Strict):
    """``nas supernet train EXPERIMENT`` and ``evaluator: supernet`` (:mod:`nas.supernet`).

    ``checkpoint``: the supernet's safetensors file, relative to the experiment file's folder (default
    ``<name>.supernet.safetensors`` beside it). Training: ``epochs`` over ``max_samples`` training images
    per epoch (all when not given), the first ``warmup_epochs`` on the largest network only (then hidden
    channels are sorted by importance), the rest by the sandwich rule (largest, smallest and
    ``random_children`` random children per step, distilled from the largest); in a ``compressed_share``
    of the steps the children carry a compression setting drawn from the space. Evaluation: each child's
    batch norm is recalibrated on ``recalibration_batches`` training batches of ``batch_size``."""

    checkpoint: str | None = None
    epochs: int = Field(default=10, ge=1)
    warmup_epochs: int = Field(default=1, ge=0)
    max_samples: int | None = Field(default=None, ge=2)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=0.05, gt=0)
    random_children: int = Field(default=2, ge=0)
    compressed_share: float = Field(default=0.25, ge=0, le=1)
    recalibration_batches: int = Field(default=4, ge=1)
    #: Validation images a trial is scored on (the first ones); None: the whole validation split.
    eval_samples: int | None = Field(default=None, ge=1)
    threads: int = Field(default=1, ge=1)


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    space: str
    dataset: DatasetConfig | None = None
    objectives: list[str | dict[str, str]] = Field(default_factory=lambda: ["accuracy", "latency_ms"], min_length=1)
    profiles: list[str] = Field(default_factory=lambda: ["reference-cpu"])
    constraints: dict[str, Limit] = Field(default_factory=dict)
    budget: Budget = Budget(trials=DEFAULT_TRIALS)
    #: Not given (or null): multi-objective TPE with the supernet evaluator, NSGA-II with the others
    #: (:data:`SAMPLER_FOR`, filled in by ``_default_sampler``).
    sampler: Literal["nsga2", "nsga3", "tpe", "random"] = "nsga2"
    population: int | None = Field(default=None, ge=2)
    proxy: ProxyConfig = ProxyConfig()
    winners: WinnersConfig = WinnersConfig()
    resources: ResourcesConfig = ResourcesConfig()
    seed: int = 0
    #: What scores a candidate's accuracy: a name in the evaluator registry (nas.search.evaluators).
    evaluator: str = Field(default="train", pattern=r"^[a-z][a-z0-9_-]*$")
    supernet: SupernetConfig = SupernetConfig()
    storage: str | None = None
    workers: int = Field(default=1, ge=1)
    description: str = ""
    #: Where the proxy, the supernet, the winners and their compression train (nas.device); the commands'
    #: --device overrides it. Not part of the study's identity: a run may resume on another machine.
    device: str = DEFAULT_DEVICE
    amp: bool = True

    @model_validator(mode="before")
    @classmethod
    def _default_sampler(cls, data: Any) -> Any:
        """Resolved here, so that the digest, run.json and the search all see the sampler that runs."""
        if isinstance(data, dict) and data.get("sampler") is None:
            data = {**data, "sampler": SAMPLER_FOR.get(str(data.get("evaluator", "train")), "nsga2")}
        return data

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return check_device_name(value)
        except NasError as exc:
            raise ValueError(str(exc).removeprefix("device ").rstrip(".")) from None


class Experiment:
    """A validated experiment file: its config plus the objectives and constraints it names."""

    def __init__(self, config: ExperimentConfig, source: str = "<memory>", text: str = "",
                 base: str | Path | None = None) -> None:
        self.config = config
        self.source = source
        self.text = text
        #: The folder the file's relative paths are read from: the file's own, unless given (a run folder's
        #: copy reads them from where the original was).
        self.base = Path(base) if base is not None else (None if source.startswith("<") else Path(source).parent)
        self.objectives = self._objectives()
        self.constraints = self._constraints()

    def with_config(self, config: ExperimentConfig) -> Experiment:
        """The same file with other settings (command-line overrides), its paths read from the same folder."""
        return Experiment(config, self.source, self.text, self.base)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dataset(self) -> DatasetConfig | None:
        """The dataset to train on and whose input shape the space takes; digits when training and none given."""
        if self.config.dataset is None and self.needs_training:
            return DatasetConfig()
        ds = self.config.dataset
        if ds is not None and ds.root is not None:  # a folder named in the file: read from the file's folder
            ds = ds.model_copy(update={"root": self.path_of(ds.root)})
        return ds

    @property
    def needs_training(self) -> bool:
        return any(not KINDS[o.kind].cheap for o in self.objectives) or not all(c.cheap for c in self.constraints)

    @property
    def digest(self) -> str:
        """A hash of the settings that define the study's trials: resuming with other values would mix
        incomparable trials. Budget, workers, storage, winners and description may change between sessions."""
        kept = self.config.model_dump(mode="json", exclude=set(RESUMABLE))
        if kept["dataset"] is not None:  # settings added later: at their defaults, old runs' digests stay
            defaults = DatasetConfig().model_dump(mode="json")
            for key in (*FOLDER_KEYS, "augment"):
                if kept["dataset"][key] == defaults[key] or key in ("in_memory", "workers"):  # these change no trial
                    del kept["dataset"][key]
        if kept["evaluator"] != "supernet":  # the supernet section came later and only its evaluator reads it
            del kept["supernet"]
        elif kept["supernet"]["eval_samples"] is None:  # added later still: at its default, supernet runs resume
            del kept["supernet"]["eval_samples"]
        if kept["evaluator"] == "train":  # the default before evaluators could be chosen: old runs still resume
            del kept["evaluator"]
        for key, default in LATER_PROXY_KEYS.items():  # proxy keys added later: at their defaults, old runs resume
            if kept["proxy"].get(key) == default:
                del kept["proxy"][key]
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def profile_names(self) -> list[str]:
        """Every hardware profile the experiment names: ``profiles``, then those of latency objectives."""
        names = list(self.config.profiles)
        for o in self.objectives:
            if o.profile and o.profile not in names:
                names.append(o.profile)
        return names

    @property
    def priced_profiles(self) -> list[str]:
        """The profiles an objective or a constraint asks for latency on: only these must price the space's
        candidates (another profile's latency is recorded where it can price a candidate, else left empty)."""
        names = [o.profile for o in self.objectives if o.profile]
        for c in self.constraints:
            kind, _, profile = c.name.partition(":")
            if kind == "latency_ms":  # plain latency_ms is on the first profile
                names.append(profile or self.config.profiles[0])
        return list(dict.fromkeys(names))

    @property
    def supernet_checkpoint(self) -> str:
        """The supernet's file (``supernet.checkpoint``), read relative to the experiment file's folder."""
        return self.path_of(self.config.supernet.checkpoint or f"{self.name}.supernet.safetensors")

    def resolve(self, path: str) -> str:
        """A file named in the experiment (a space or profile file), relative to the experiment file's folder;
        names without a .yaml/.yml/.json suffix are names (built-in, plugin) and left alone."""
        return self.path_of(path) if path.endswith((".yaml", ".yml", ".json")) else path

    def path_of(self, path: str) -> str:
        """A path named in the experiment, relative to its folder (:attr:`base`); absolute paths as they are."""
        if self.base is None or Path(path).expanduser().is_absolute():
            return str(Path(path).expanduser())
        return os.path.normpath(self.base / path)  # examples/../results/x as results/x in messages

    def _objectives(self) -> list[Objective]:
        profiles = self.config.profiles
        latency_profiles = []
        for entry in self.config.objectives:
            if isinstance(entry, dict):
                if len(entry) != 1 or "latency_ms" not in entry:
                    raise self._error(f"objectives: {entry!r} is not an objective; a mapping names a profile for "
                                      "latency, e.g. {latency_ms: raspberry-pi-4}")
                latency_profiles.append(entry["latency_ms"])
            elif entry == "latency_ms":
                if not profiles:
                    raise self._error("objectives: latency_ms needs a hardware profile, but profiles is empty")
                latency_profiles.append(profiles[0])
        out = []
        for entry in self.config.objectives:
            kind = "latency_ms" if isinstance(entry, dict) else entry
            if kind not in KINDS:
                raise self._error(f"objectives: unknown objective {kind!r}; choose from {sorted(KINDS)}")
            profile = None
            name = kind
            if KINDS[kind].per_profile:
                profile = entry["latency_ms"] if isinstance(entry, dict) else profiles[0]
                if len(latency_profiles) > 1:
                    name = f"latency_ms:{profile}"
            if any(o.name == name for o in out):
                raise self._error(f"objectives: {name!r} is listed twice")
            out.append(Objective.of(name, profile))
        return out

    def _constraints(self) -> list[Constraint]:
        names = {o.name for o in self.objectives} | set(KINDS)
        names |= {f"latency_ms:{p}" for p in self.config.profiles}
        out = []
        for name, limit in self.config.constraints.items():
            if name not in names:
                raise self._error(f"constraints: unknown name {name!r}; choose from {sorted(names)}")
            if name == "latency_ms" and not self.config.profiles:
                raise self._error("constraints: latency_ms needs a hardware profile, but profiles is empty")
            if name == "accuracy":
                if limit.min is None:
                    raise self._error("constraints.accuracy: give {min: fraction}, accuracy is maximised")
                out.append(Constraint(name, ">=", limit.min))
            else:
                if limit.max is None:
                    raise self._error(f"constraints.{name}: give {{max: value}}, {name} is minimised")
                out.append(Constraint(name, "<=", limit.max))
        return out

    def _error(self, message: str) -> ExperimentError:
        return ExperimentError(f"{self.source}: {message}.")


def parse_experiment(text: str, source: str = "<memory>", base: str | Path | None = None) -> Experiment:
    """Validate experiment YAML text; errors are :class:`ExperimentError` naming ``source``. Its relative
    paths are read from ``base`` (default: the folder of ``source``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ExperimentError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: an experiment must be a mapping (name: ..., space: ...), "
                              f"but the file holds {type(data).__name__}.")
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError(f"{source}: {describe_validation_error(exc)}.") from None
    return Experiment(config, source, text, base)


def load_experiment(path: str | Path, base: str | Path | None = None) -> Experiment:
    """Read and validate an experiment file (see the module docstring for the format); ``base``: the folder
    its relative paths are read from, when not its own (a run folder's copy of the file)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(f"experiment file {str(p)!r} does not exist.") from None
    except OSError as exc:
        raise ExperimentError(f"cannot read experiment file {str(p)!r}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise ExperimentError(f"experiment file {str(p)!r} is not UTF-8 text (a binary or damaged file?).") from None
    return parse_experiment(text, str(p), base)
