"""What a worker prepares once before its first trial, and hands to everything that needs it.

:func:`prepare` loads the space (fitted to the dataset's input shape and classes), the dataset's
splits when the evaluator trains, and the hardware profiles, and checks that every profile can
price the space's candidates: a table that lacks the space's operators is a bad input, not a
search whose every trial fails. Scoring and evaluators receive the :class:`Setup`; none of them
loads anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nas.compressed import running
from nas.errors import HardwareError
from nas.experiment import Experiment

if TYPE_CHECKING:
    from nas.data import Splits
    from nas.hardware import HardwareProfile, LutProfile
    from nas.space import Space
    from nas.spec import ArchSpec

#: Random candidates (seeds 0..N-1) every latency profile must price when a search starts.
COVERAGE_SAMPLES = 16


@dataclass(frozen=True)
class Setup:
    """An experiment made ready: its space, its dataset's splits (None when not loaded), its profiles."""

    experiment: Experiment
    space: Space
    profiles: dict[str, HardwareProfile]
    splits: Splits | None = None

    @property
    def first_profile(self) -> str | None:
        return next(iter(self.profiles), None)


def prepare(experiment: Experiment, data: bool = True, normalization: dict[str, list[float]] | None = None) -> Setup:
    """The :class:`Setup` of ``experiment``; ``data=False`` keeps no splits (the driver of a Ray search
    needs the space's shapes, not the training data). An image folder is read at the space's input shape;
    ``normalization``: the run's recorded per-channel mean and std (a resumed run standardises as before)."""
    from nas.data import load_configured
    from nas.hardware import get_profile
    from nas.space import load_space

    space_file = experiment.resolve(experiment.config.space)
    space = load_space(space_file)
    splits = None
    ds = experiment.dataset
    if ds is not None:  # the dataset sets the input shape and class count
        splits = load_configured(ds, space.input_shape, normalization)
        space = space.with_input(splits.input_shape, splits.num_classes)
    try:
        profiles = {name: get_profile(experiment.resolve(name)) for name in experiment.profile_names}
    except HardwareError as exc:  # the experiment file names the profile: say which file
        raise HardwareError(f"{experiment.source}: {exc}") from None
    check_coverage(space, {name: profiles[name] for name in experiment.priced_profiles}, space_file)
    return Setup(experiment, space, profiles, splits if data else None)


def check_coverage(space: Space, profiles: dict[str, HardwareProfile], space_file: str = "SPACE") -> None:
    """Each profile prices the space's first COVERAGE_SAMPLES random candidates, or a HardwareError says which
    (for a measured table: the command that measures what it lacks, at the space's input shape; ``space_file``
    is how that command names the space).

    Only the profiles an objective or constraint uses are checked (:attr:`Experiment.priced_profiles`).
    A measured table must hold every layer of the uncompressed candidates exactly. A space that
    samples ``quantization: int8`` also needs int8 prices (a measured table's int8
    entries): the first candidate is priced in int8 too, whatever it drew."""
    from nas.hardware.lut import LutProfile

    int8 = "int8" in space.config.compression.quantization
    for name, profile in profiles.items():
        for seed in range(COVERAGE_SAMPLES):
            candidate = space.random(seed)
            if isinstance(profile, LutProfile):
                # A table must hold the space's own layers; only the layers compression adds
                # (pruned channel counts, factorized layers) are interpolated by latency_ms.
                _check_table(name, profile, space, candidate.arch, seed, space_file)
            arch = running(candidate)
            try:
                profile.latency_ms(arch)
                if int8 and seed == 0:
                    profile.latency_ms(replace(arch, precision="int8"))
            except HardwareError as exc:
                raise HardwareError(f"profile {name!r} cannot price candidates of space {space.name!r} "
                                    f"(seed {seed}): {exc}") from None


def _check_table(name: str, profile: LutProfile, space: Space, arch: ArchSpec, seed: int, space_file: str) -> None:
    """The table holds every layer of ``arch`` (a candidate of ``space``), or the error says how to measure them."""
    from nas.hardware.lut import shape_key

    missing = profile.missing(arch)
    if missing:
        raise HardwareError(
            f"profile {name!r} ({profile.path}) cannot price candidates of space {space.name!r} at input "
            f"{shape_key(arch.input_shape)} with {arch.num_classes} classes (seed {seed}): it has no entry for "
            f"{len(missing)} of their layers, e.g. {missing[0]!r}; {profile.coverage()}. "
            f"{profile.build_hint(arch, space_file)}.")
