"""``run.json``: what a run was started with, typed (docs/run-folder.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nas.errors import NasError
from nas.objectives import Constraint, Objective


@dataclass(frozen=True)
class RunInfo:
    """The contents of ``run.json``. Keys this version does not know are kept in ``extra`` and written back."""

    name: str
    objectives: tuple[Objective, ...]
    study_name: str = ""
    storage: str = ""
    space: str = ""
    dataset: str | None = None
    sampler: str = ""
    seed: int = 0
    budget: dict[str, Any] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    profiles: dict[str, Any] = field(default_factory=dict)
    evaluator: str = "train"
    digest: str = ""
    #: A hash of the search space the run was started with (after fitting it to the dataset): a resume refuses
    #: a space file edited since. Empty in runs made before it was kept (not checked then).
    space_digest: str = ""
    #: The folder of the experiment file the run was started from: its relative paths (space, dataset root,
    #: profile files) are read from there by every later command.
    experiment_dir: str = ""
    nas_version: str = ""
    command: str = ""
    cwd: str = ""  # the folder the command was run in: its relative paths start there
    created: str = ""
    #: Where the last session trained: the device the local backend resolved (``cpu``, ``cuda:0 (NVIDIA ...)``),
    #: or the experiment's setting for Ray (each trial resolves it on its node: its ``device`` attribute).
    device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.study_name:
            object.__setattr__(self, "study_name", self.name)

    @property
    def objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def objective(self, name: str) -> Objective:
        for o in self.objectives:
            if o.name == name:
                return o
        raise NasError(f"run {self.name!r}: no objective {name!r}; the run has {self.objective_names}.")

    @property
    def latency_profile(self) -> str:
        """The run's latency profile: the first latency objective's, else the first profile, else reference-cpu."""
        for o in self.objectives:
            if o.kind == "latency_ms":
                return o.profile or o.name.partition(":")[2] or "reference-cpu"
        return next(iter(self.profiles), "reference-cpu")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "study_name": self.study_name, "storage": self.storage, "space": self.space,
                "dataset": self.dataset, "sampler": self.sampler, "seed": self.seed, "budget": dict(self.budget),
                "objectives": [o.to_dict() for o in self.objectives],
                "constraints": [c.to_dict() for c in self.constraints], "profiles": dict(self.profiles),
                "evaluator": self.evaluator, "digest": self.digest, "space_digest": self.space_digest,
                "experiment_dir": self.experiment_dir, "nas_version": self.nas_version,
                "command": self.command, "created": self.created,
                **({"cwd": self.cwd} if self.cwd else {}), **({"device": self.device} if self.device else {}),
                **self.extra}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "run.json") -> RunInfo:
        if not isinstance(d, dict):
            raise NasError(f"{where}: not a run description (a JSON object), but {type(d).__name__}; "
                           f"see docs/run-folder.md.")
        if not d.get("objectives") or not isinstance(d["objectives"], list):
            raise NasError(f"{where}: 'objectives' is missing or empty; see docs/run-folder.md.")
        try:
            known = {k: d[k] for k in ("study_name", "storage", "space", "dataset", "sampler", "seed", "budget",
                                       "profiles", "evaluator", "digest", "space_digest", "experiment_dir",
                                       "nas_version", "command", "created", "cwd", "device")
                     if d.get(k) is not None}
            return cls(name=str(d.get("name") or ""),
                       objectives=tuple(Objective.from_dict(o) for o in d["objectives"]),
                       constraints=tuple(Constraint.from_dict(c) for c in d.get("constraints") or ()),
                       extra={k: v for k, v in d.items() if k not in cls.__dataclass_fields__}, **known)
        except (KeyError, TypeError, ValueError) as exc:
            raise NasError(f"{where}: not a run description ({type(exc).__name__}: {exc}); "
                           f"see docs/run-folder.md.") from None
