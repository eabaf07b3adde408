"""Search spaces: YAML files validated on load, sampled into :class:`~nas.spec.Candidate`.

A space file names a ``family`` and gives, for every decision, the list of
allowed values. The YAML is the only definition of a space: sampling,
validation and (through :func:`nas.ops`) every cost model derive from it.

Families:

- ``mobilenetv2``: stem conv, stages of inverted-residual blocks (per stage:
  depth and output width; per block: expansion, kernel, convolution kind and
  groups, sampled only for blocks the stage's depth keeps), 1x1 head conv,
  global average pooling, classifier; a global width multiplier.
- ``lenet``: LeNet-300-100 (MLP) and LeNet-5 (conv) with lightly varied widths,
  for reproducing Deep Compression.

Every space also has a ``compression`` section sampled with the architecture
(:mod:`nas.space_compression`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from nas.errors import SpaceError, describe_validation_error
from nas.graph import layer_ops
from nas.space_compression import Chooser, CompressionConfig, _Strict
from nas.spec import (
    ArchSpec,
    Candidate,
    Conv,
    ConvKind,
    Detector,
    Flatten,
    GlobalAvgPool,
    InvertedResidual,
    Layer,
    Linear,
    MaxPool,
)

#: Where the built-in spaces live (installed as package data).
BUILTIN_DIR = Path(__file__).parent / "search_spaces"

PositiveInt = Annotated[int, Field(ge=1)]
Choices = Annotated[list[PositiveInt], Field(min_length=1)]
FloatChoices = Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
OddKernel = Annotated[int, Field(ge=1, le=11, multiple_of=1)]
Act = Literal["relu", "relu6"]


class StemConfig(_Strict):
    channels: PositiveInt
    kernel: PositiveInt = 3
    stride: PositiveInt = 1
    act: Act = "relu6"


class StageConfig(_Strict):
    depth: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    width: Choices
    expansion: FloatChoices
    kernel: Annotated[list[Literal[1, 3, 5, 7]], Field(min_length=1)]
    conv: Annotated[list[ConvKind], Field(min_length=1)] = ["depthwise"]
    groups: list[PositiveInt] = []
    stride: Literal[1, 2] = 1
    act: Act = "relu6"
    #: MobileNetV2's linear bottleneck (no activation after the projection); false for MobileNetV1.
    linear: bool = True
    #: Residual add where shapes allow; false for MobileNetV1.
    residual: bool = True

    @model_validator(mode="after")
    def _groups_match_conv(self) -> StageConfig:
        if "grouped" in self.conv and not self.groups:
            raise ValueError("conv allows 'grouped', so groups must list at least one group count, e.g. [2, 4]")
        if self.groups and "grouped" not in self.conv:
            raise ValueError(f"groups={self.groups} is given but conv={self.conv} has no 'grouped'")
        return self


class HeadConfig(_Strict):
    """The 1x1 conv before pooling; MobileNetV2 widens it only for multipliers above 1."""

    channels: Choices


class SourceConfig(_Strict):
    """A feature map for detection heads: a block's expansion output or output, or the last layer."""

    at: Literal["expansion", "output", "last"]
    stage: int | None = None
    block: int = 0

    @model_validator(mode="after")
    def _stage_given(self) -> SourceConfig:
        if (self.at == "last") != (self.stage is None):
            raise ValueError("give 'stage' (and optionally 'block') for at: expansion/output, and neither for at: last")
        return self


class DetectorConfig(_Strict):
    """SSD (3x3 conv heads and extras) or SSDLite (depthwise-separable) prediction layers."""

    kind: Literal["ssd", "ssdlite"]
    num_classes: PositiveInt  # background included, e.g. 81 for COCO's 80 classes
    anchors: Annotated[list[PositiveInt], Field(min_length=1)]
    sources: Annotated[list[SourceConfig], Field(min_length=1)]
    extras: list[Annotated[int, Field(ge=2, multiple_of=2)]] = []

    @model_validator(mode="after")
    def _one_anchor_count_per_map(self) -> DetectorConfig:
        maps = len(self.sources) + len(self.extras)
        if len(self.anchors) != maps:
            raise ValueError(f"anchors needs one entry per feature map ({len(self.sources)} sources + "
                             f"{len(self.extras)} extras = {maps}), but has {len(self.anchors)}")
        return self


class _SpaceBase(_Strict):
    name: str
    description: str = ""
    input_shape: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)]
    num_classes: PositiveInt = 10
    compression: CompressionConfig = CompressionConfig()


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (MobileNetV2's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2Space(_SpaceBase):
    """Inverted-residual networks; ``family: mobilenetv1`` marks files that use V1 blocks
    (``expansion: [1]``, ``linear: false``, ``residual: false``), which the same schema expresses."""

    family: Literal["mobilenetv2", "mobilenetv1"]
    width_multiplier: FloatChoices = [1.0]
    channel_divisor: PositiveInt = 8
    stem: StemConfig
    stages: Annotated[list[StageConfig], Field(min_length=1)]
    head: HeadConfig | None = None
    #: Global average pooling and a linear classifier; false for a detector backbone.
    classifier: bool = True
    detector: DetectorConfig | None = None

    @model_validator(mode="after")
    def _detector_or_classifier(self) -> MobileNetV2Space:
        if (self.detector is None) != self.classifier:
            raise ValueError("a network has either 'classifier: true' or a 'detector' section, not both or neither")
        for k, src in enumerate(self.detector.sources if self.detector else []):
            if src.stage is None:
                continue
            if not 0 <= src.stage < len(self.stages):
                raise ValueError(f"detector.sources.{k}.stage must be in [0, {len(self.stages)}), got {src.stage}")
            stage = self.stages[src.stage]
            if src.block >= min(stage.depth):
                raise ValueError(f"detector.sources.{k}: block {src.block} does not exist in every choice of "
                                 f"stages[{src.stage}].depth {stage.depth}")
            if src.at == "expansion" and 1 in stage.expansion:
                raise ValueError(f"detector.sources.{k}: at 'expansion' needs an expansion conv, but "
                                 f"stages[{src.stage}].expansion allows 1")
        return self

    @model_validator(mode="after")
    def _groups_divide_channels(self) -> MobileNetV2Space:
        """Every grouped conv any choice can produce must split its hidden width evenly."""
        widths = lambda c: {make_divisible(c * m, self.channel_divisor) for m in self.width_multiplier}  # noqa: E731
        inputs = widths(self.stem.channels)
        for i, stage in enumerate(self.stages):
            outputs = set().union(*(widths(w) for w in stage.width))
            # The first block sees the previous output; later blocks see this stage's width.
            stage_inputs = inputs | outputs if max(stage.depth) > 1 else inputs
            for cin in sorted(stage_inputs):
                for e in stage.expansion:
                    hidden = int(round(cin * e))
                    bad = [g for g in stage.groups if hidden % g]
                    if bad:
                        raise ValueError(
                            f"stages[{i}].groups: {bad} do not divide the hidden width {hidden} "
                            f"(input {cin} channels x expansion {e}); every combination of choices must "
                            f"build, so use group counts that divide every hidden width, or change "
                            f"width/expansion/width_multiplier")
            inputs = outputs | inputs if 0 in stage.depth else outputs
        return self

    def build(self, choose: Chooser) -> ArchSpec:
        mult = choose("width_multiplier", self.width_multiplier)
        div = self.channel_divisor
        stem = self.stem
        layers: list[Layer] = [Conv(make_divisible(stem.channels * mult, div), stem.kernel, stem.stride, act=stem.act)]
        positions: dict[tuple[int, int], int] = {}
        for i, stage in enumerate(self.stages):
            depth = choose(f"s{i}.depth", stage.depth)
            width = make_divisible(choose(f"s{i}.width", stage.width) * mult, div) if depth else 0
            for j in range(depth):
                p = f"s{i}.b{j}"
                conv = choose(f"{p}.conv", stage.conv)
                positions[i, j] = len(layers)
                layers.append(InvertedResidual(
                    out=width,
                    expansion=choose(f"{p}.expansion", stage.expansion),
                    kernel=choose(f"{p}.kernel", stage.kernel),
                    stride=stage.stride if j == 0 else 1,
                    conv=conv,
                    groups=choose(f"{p}.groups", stage.groups) if conv == "grouped" else 1,
                    act=stage.act,
                    linear=stage.linear,
                    residual=stage.residual,
                ))
        if self.head is not None:
            head = choose("head.channels", self.head.channels)
            layers.append(Conv(make_divisible(head * max(1.0, mult), div), 1, act=stem.act))
        if self.classifier:
            layers += [GlobalAvgPool(), Linear(self.num_classes)]
        detector = None
        if self.detector is not None:
            d = self.detector
            detector = Detector(d.num_classes, tuple(d.anchors), tuple(
                _source_name(src, positions, len(layers)) for src in d.sources), tuple(d.extras), d.kind == "ssdlite")
        return ArchSpec(tuple(self.input_shape), tuple(layers), self.family, detector)


    def layer_inputs(self) -> set[tuple[Layer, tuple[int, ...]]]:
        """Every (layer, input shape) any point of the space contains: what a latency table
        must hold. Exact, stage by stage, without enumerating whole networks."""
        div, out = self.channel_divisor, set()
        c, h, w = self.input_shape
        states = set()  # (multiplier, channels, height, width) entering the next stage
        for mult in self.width_multiplier:
            stem = Conv(make_divisible(self.stem.channels * mult, div), self.stem.kernel, self.stem.stride,
                        act=self.stem.act)
            out.add((stem, (c, h, w)))
            states.add((mult, *layer_ops(stem, "", (c, h, w))[1]))
        for stage in self.stages:
            new_states = set(states) if 0 in stage.depth else set()
            if max(stage.depth) == 0:
                continue
            for mult, cin, hh, ww in states:
                for width in stage.width:
                    width = make_divisible(width * mult, div)
                    first = self._blocks(stage, width, stage.stride)
                    out.update((block, (cin, hh, ww)) for block in first)
                    after = layer_ops(first[0], "", (cin, hh, ww))[1]  # the same for every first block
                    if max(stage.depth) > 1:
                        out.update((block, after) for block in self._blocks(stage, width, 1))
                    new_states.add((mult, *after))
            states = new_states
        for mult, cin, hh, ww in states:
            shape: tuple[int, ...] = (cin, hh, ww)
            if self.head is not None:
                for head in self.head.channels:
                    conv = Conv(make_divisible(head * max(1.0, mult), div), 1, act=self.stem.act)
                    out.add((conv, shape))
                    if self.classifier:
                        tail_shape = layer_ops(conv, "", shape)[1]
                        out.add((GlobalAvgPool(), tail_shape))
                        out.add((Linear(self.num_classes), (tail_shape[0],)))
            elif self.classifier:
                out.add((GlobalAvgPool(), shape))
                out.add((Linear(self.num_classes), (cin,)))
        return out

    @staticmethod
    def _blocks(stage: StageConfig, width: int, stride: int) -> list[InvertedResidual]:
        convs = [(conv, g) for conv in stage.conv for g in (stage.groups if conv == "grouped" else [1])]
        return [InvertedResidual(out=width, expansion=e, kernel=k, stride=stride, conv=conv, groups=g, act=stage.act,
                                 linear=stage.linear, residual=stage.residual)
                for e in stage.expansion for k in stage.kernel for conv, g in convs]


def _source_name(src: SourceConfig, positions: dict[tuple[int, int], int], n_layers: int) -> str:
    """The module name (see :func:`nas.ops`) whose output feeds a detection head."""
    if src.at == "last":
        return f"layers.{n_layers - 1}"
    layer = positions[src.stage, src.block]  # type: ignore[index]  # validated: the block exists
    return f"layers.{layer}.0.2" if src.at == "expansion" else f"layers.{layer}"


class MlpConfig(_Strict):
    hidden: Annotated[list[Annotated[list[PositiveInt], Field(min_length=1)]], Field(min_length=1)]


class LeNet5Config(_Strict):
    channels: Annotated[list[Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]], Field(min_length=1)]
    kernel: Annotated[list[Literal[3, 5]], Field(min_length=1)] = [5]
    fc: Annotated[list[list[PositiveInt]], Field(min_length=1)]


def _choose_list(choose: Chooser, name: str, options: list[list[int]]) -> list[int]:
    """Choose among lists of ints; the choice is recorded as a string like ``"300-100"``,
    since Optuna's persistent storages take only scalar categorical choices."""
    picked = choose(name, ["-".join(map(str, option)) for option in options])
    return [int(n) for n in picked.split("-") if n]


class LeNetSpace(_SpaceBase):
    family: Literal["lenet"]
    variants: Annotated[list[Literal["lenet-300-100", "lenet-5"]], Field(min_length=1)]
    mlp: MlpConfig | None = None
    conv: LeNet5Config | None = None

    @model_validator(mode="after")
    def _variant_sections(self) -> LeNetSpace:
        if "lenet-300-100" in self.variants and self.mlp is None:
            raise ValueError("variants include 'lenet-300-100', so an 'mlp' section with 'hidden' is required")
        if "lenet-5" in self.variants and self.conv is None:
            raise ValueError("variants include 'lenet-5', so a 'conv' section is required")
        if self.conv is not None:
            c, h, w = self.input_shape
            for k in self.conv.kernel:
                side = ((min(h, w) - k + 1) // 2 - k + 1) // 2
                if side < 1:
                    raise ValueError(f"conv.kernel {k} does not fit input {h}x{w} (two {k}x{k} convs and 2x2 pools)")
        return self

    def build(self, choose: Chooser) -> ArchSpec:
        variant = choose("variant", self.variants)
        c, h, w = self.input_shape
        layers: list[Layer] = []
        if variant == "lenet-300-100":
            assert self.mlp is not None
            hidden = _choose_list(choose, "mlp.hidden", self.mlp.hidden)
            layers += [Linear(n, act="relu") for n in hidden]
            layers.append(Linear(self.num_classes))
            return ArchSpec((c * h * w,), tuple(layers), "lenet-300-100")
        assert self.conv is not None
        c1, c2 = _choose_list(choose, "conv.channels", self.conv.channels)
        k = choose("conv.kernel", self.conv.kernel)
        fc = _choose_list(choose, "conv.fc", self.conv.fc)
        for channels in (c1, c2):
            layers += [Conv(channels, k, bn=False, act="relu", padding=0), MaxPool(2)]
        layers.append(Flatten())
        layers += [Linear(n, act="relu") for n in fc]
        layers.append(Linear(self.num_classes))
        return ArchSpec((c, h, w), tuple(layers), "lenet-5")


SpaceConfig = Annotated[Union[MobileNetV2Space, LeNetSpace], Field(discriminator="family")]
FAMILIES = ("mobilenetv2", "mobilenetv1", "lenet")


def all_architectures(build: Callable[[Chooser], ArchSpec], limit: int = 100_000) -> list[ArchSpec]:
    """Every architecture ``build`` can produce, by depth-first replay over its decisions.

    Meant for small spaces (LeNet's handful of variants); raises :class:`SpaceError`
    past ``limit`` points rather than running for ever.
    """
    found: list[ArchSpec] = []
    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        path: list[int] = []

        def choose(name: str, options: Sequence[Any]) -> Any:
            k = len(path)
            if k < len(prefix):
                index = prefix[k]
            else:
                index = 0
                stack.extend(path + [alt] for alt in range(1, len(options)))
            path.append(index)
            return options[index]

        found.append(build(choose))
        if len(found) > limit:
            raise SpaceError(f"the space has more than {limit} architectures; enumerate it per layer instead.")
    return found


class Space:
    """A validated search space; draws :class:`Candidate` objects.

    Parameter names are stable (``width_multiplier``, ``s2.depth``,
    ``s2.b1.kernel``, ``compression.sparsity`` ...), so Optuna studies over the
    same space file can be resumed and compared.
    """

    def __init__(self, config: MobileNetV2Space | LeNetSpace, source: str = "<memory>") -> None:
        self.config = config
        self.source = source

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.config.input_shape)

    def _draw(self, choose: Chooser) -> Candidate:
        arch = self.config.build(choose)
        return Candidate(arch, self.config.compression.sample(choose))

    def layer_inputs(self) -> set[tuple[Layer, tuple[int, ...]]]:
        """Every (layer, input shape) that some network of the space contains."""
        if isinstance(self.config, MobileNetV2Space):
            return self.config.layer_inputs()
        out: set[tuple[Layer, tuple[int, ...]]] = set()
        for arch in all_architectures(self.config.build):
            shape = arch.input_shape
            for layer in arch.layers:
                out.add((layer, shape))
                shape = layer_ops(layer, "", shape)[1]
        return out

    @property
    def is_fixed(self) -> bool:
        """True when the space is a single point (every decision has one choice), like
        the published architectures ``mobilenetv2-1.0-224`` or ``ssdlite-mobilenetv2``."""
        widths: list[int] = []
        self._draw(lambda name, options: widths.append(len(options)) or options[0])
        return max(widths, default=1) == 1

    def sample(self, trial: Any) -> Candidate:
        """Draw through an ``optuna.Trial`` (categorical parameters, conditional on depth/variant)."""
        return self._draw(lambda name, options: trial.suggest_categorical(name, list(options)))

    def random(self, seed: int | None = None) -> Candidate:
        """Draw uniformly at random, without a trial: the same decisions as :meth:`sample`."""
        rng = random.Random(seed)
        return self._draw(lambda name, options: options[rng.randrange(len(options))])

    def with_input(self, input_shape: Sequence[int], num_classes: int) -> Space:
        """The same space for another input resolution / class count (re-validated); itself when it already
        has them."""
        if self.input_shape == tuple(input_shape) and self.config.num_classes == num_classes:
            return self
        data = self.config.model_dump() | {"input_shape": list(input_shape), "num_classes": num_classes}
        return Space(_validate(data, f"{self.source} (input {tuple(input_shape)})"), self.source)

    def __repr__(self) -> str:
        return f"Space(name={self.name!r}, family={self.config.family!r}, source={self.source!r})"


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped with ``nas``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def _validate(data: Any, source: str) -> MobileNetV2Space | LeNetSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: a search space must be a YAML mapping, but the file holds {type(data).__name__}.")
    family = data.get("family")
    if family not in FAMILIES:
        raise SpaceError(f"{source}: family: must be one of {list(FAMILIES)} (given: {family!r}).")
    model = LeNetSpace if family == "lenet" else MobileNetV2Space
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(f"{source}: {describe_validation_error(exc)}") from None


def load_space(path_or_name: str | Path) -> Space:
    """Load and validate a search space: a YAML file path, or a built-in name (``nas.builtin_spaces()``).

    Raises :class:`~nas.errors.SpaceError` naming the file, the field and the
    allowed values when the file is missing, malformed or describes networks
    that cannot be built.
    """
    path = Path(path_or_name)
    looks_like_file = path.suffix in (".yaml", ".yml") or len(path.parts) > 1
    if not path.is_file() and not looks_like_file:
        path = BUILTIN_DIR / f"{path_or_name}.yaml"
        if not path.exists():
            raise SpaceError(f"unknown search space {str(path_or_name)!r}; built-in spaces: {builtin_spaces()}, "
                             f"or give the path to a YAML file.")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        where = str(path) if path.is_absolute() else f"{str(path)!r} (resolved: {path.resolve()})"
        raise SpaceError(f"cannot read search space file {where}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise SpaceError(f"search space file {str(path)!r} is not UTF-8 text (a binary or damaged file?).") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    return Space(_validate(data, str(path)), str(path))
