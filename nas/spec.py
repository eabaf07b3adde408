"""Plain, frozen, JSON round-trippable descriptions of one candidate.

An :class:`ArchSpec` is a sequence of layers (stem conv, inverted-residual blocks,
pooling, linear layers) over an input of fixed shape; it is what
:func:`nas.build_model`, :func:`nas.ops` and every cost model read. A
:class:`CompressionSpec` holds the compression settings drawn together with the
architecture. A :class:`Candidate` is the pair.

Specs never hold torch objects, so they are cheap to create, hash and compare,
and ``Candidate.from_dict(c.to_dict()) == c`` always holds.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

from nas.errors import SpecError

Activation = Literal["relu", "relu6", "none"]
ConvKind = Literal["depthwise", "grouped", "full"]
Quantization = Literal["none", "binary", "ternary", "int8"]
Precision = Literal["float32", "int8"]
ChannelImportance = Literal["l1", "l2", "activation"]
BinaryRounding = Literal["sign", "stochastic"]

ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "none")
CONV_KINDS: tuple[str, ...] = ("depthwise", "grouped", "full")
QUANTIZATIONS: tuple[str, ...] = ("none", "binary", "ternary", "int8")
PRECISIONS: tuple[str, ...] = ("float32", "int8")
CHANNEL_IMPORTANCES: tuple[str, ...] = ("l1", "l2", "activation")
BINARY_ROUNDINGS: tuple[str, ...] = ("sign", "stochastic")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


def _positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        _check(isinstance(value, int) and value >= 1, f"{owner}.{name} must be a positive integer, but got {value!r}.")


def _activation(owner: str, act: str) -> None:
    _check(act in ACTIVATIONS, f"{owner}.act must be one of {list(ACTIVATIONS)}, but got {act!r}.")


@dataclass(frozen=True)
class Conv:
    """A 2-d convolution (``same`` padding) with optional batch norm and activation.

    With ``bn`` the convolution has no bias (batch norm supplies it); without it
    the convolution carries a bias, as in LeNet-5.
    """

    type: ClassVar[str] = "conv"
    out: int
    kernel: int = 3
    stride: int = 1
    groups: int = 1
    bn: bool = True
    act: Activation = "relu6"
    padding: int | None = None  # None: kernel // 2 ("same" for odd kernels at stride 1)

    def __post_init__(self) -> None:
        _positive("conv", out=self.out, kernel=self.kernel, stride=self.stride, groups=self.groups)
        _activation("conv", self.act)
        _check(self.out % self.groups == 0, f"conv.groups={self.groups} must divide conv.out={self.out}.")
        _check(self.padding is None or self.padding >= 0, f"conv.padding must be >= 0, but got {self.padding}.")

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding


@dataclass(frozen=True)
class InvertedResidual:
    """A MobileNetV2 block: 1x1 expansion, k x k spatial conv, 1x1 linear projection.

    ``expansion`` multiplies the *input* channels to get the hidden width (no
    expansion conv when it is 1). ``conv`` chooses the spatial convolution:
    depthwise (groups = hidden), grouped (``groups``) or full (groups = 1).
    ``linear`` keeps the projection free of activation (the linear bottleneck);
    the residual add is used when ``residual`` is set and stride and channels
    allow it. ``expansion=1, linear=False, residual=False`` is MobileNetV1's
    depthwise-separable block.
    """

    type: ClassVar[str] = "inverted_residual"
    out: int
    expansion: float = 6
    kernel: int = 3
    stride: int = 1
    conv: ConvKind = "depthwise"
    groups: int = 1
    act: Activation = "relu6"
    linear: bool = True
    residual: bool = True

    def __post_init__(self) -> None:
        _positive("inverted_residual", out=self.out, kernel=self.kernel, stride=self.stride, groups=self.groups)
        _activation("inverted_residual", self.act)
        _check(self.conv in CONV_KINDS, f"inverted_residual.conv must be one of {list(CONV_KINDS)}, but got {self.conv!r}.")
        _check(self.expansion > 0, f"inverted_residual.expansion must be > 0, but got {self.expansion}.")

    def hidden(self, cin: int) -> int:
        """Hidden (expanded) width for ``cin`` input channels, as torchvision rounds it."""
        return int(round(cin * self.expansion))

    def spatial_groups(self, cin: int) -> int:
        hidden = self.hidden(cin)
        return {"depthwise": hidden, "grouped": self.groups, "full": 1}[self.conv]

    def has_residual(self, cin: int) -> bool:
        return self.residual and self.stride == 1 and cin == self.out


@dataclass(frozen=True)
class MaxPool:
    type: ClassVar[str] = "maxpool"
    kernel: int = 2
    stride: int | None = None  # None: equal to kernel

    def __post_init__(self) -> None:
        _positive("maxpool", kernel=self.kernel, stride=self.step)

    @property
    def step(self) -> int:
        return self.kernel if self.stride is None else self.stride


@dataclass(frozen=True)
class GlobalAvgPool:
    """Global average pooling to 1x1 followed by flattening."""

    type: ClassVar[str] = "global_avg_pool"


@dataclass(frozen=True)
class Flatten:
    type: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class Linear:
    type: ClassVar[str] = "linear"
    out: int
    act: Activation = "none"
    bias: bool = True

    def __post_init__(self) -> None:
        _positive("linear", out=self.out)
        _activation("linear", self.act)


Layer = Union[Conv, InvertedResidual, MaxPool, GlobalAvgPool, Flatten, Linear]
LAYER_TYPES: dict[str, type[Any]] = {
    cls.type: cls for cls in (Conv, InvertedResidual, MaxPool, GlobalAvgPool, Flatten, Linear)
}


def _from_fields(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(names)}.")
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        raise SpecError(f"{where}: {exc}.") from None


def layer_to_dict(layer: Layer) -> dict[str, Any]:
    # Every layer field is a scalar, so this is ``dataclasses.asdict`` without its deep copy (the search
    # serializes every candidate's layers for the container header it prices).
    return {"type": layer.type, **{name: getattr(layer, name) for name in _field_names(type(layer))}}


@functools.cache
def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def layer_from_dict(data: dict[str, Any], where: str = "layer") -> Layer:
    if not isinstance(data, dict) or "type" not in data:
        raise SpecError(f"{where} must be a mapping with a 'type' key, but got {data!r}.")
    body = dict(data)
    kind = body.pop("type")
    if kind not in LAYER_TYPES:
        raise SpecError(f"{where}: unknown layer type {kind!r}; allowed: {sorted(LAYER_TYPES)}.")
    layer: Layer = _from_fields(LAYER_TYPES[kind], body, where)
    return layer


@dataclass(frozen=True)
class Detector:
    """SSD-style detection heads on feature maps of the backbone (no GAP/classifier then).

    ``sources`` are op names (see :func:`nas.ops`) whose outputs feed the first
    heads, e.g. MobileNetV2's ``layer_15/expansion_output`` and its last 1x1 conv.
    Each entry of ``extras`` adds one feature map: a 1x1 conv to ``d / 2``
    channels, then a stride-2 3x3 conv to ``d`` (depthwise-separable when
    ``separable``). Every feature map gets a box head (``anchors[i] * 4`` outputs)
    and a class head (``anchors[i] * num_classes`` outputs, background included):
    a 3x3 conv (SSD) or a 3x3 depthwise conv + BN + ReLU6 and a 1x1 conv (SSDLite).
    """

    type: ClassVar[str] = "detector"
    num_classes: int
    anchors: tuple[int, ...]
    sources: tuple[str, ...]
    extras: tuple[int, ...] = ()
    separable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchors", tuple(self.anchors))
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "extras", tuple(self.extras))
        _positive("detector", num_classes=self.num_classes, **{f"anchors[{i}]": a for i, a in enumerate(self.anchors)})
        _check(len(self.sources) >= 1, "detector.sources must name at least one op.")
        _check(all(d >= 2 and d % 2 == 0 for d in self.extras),
               f"detector.extras must be even channel counts >= 2, but got {list(self.extras)}.")
        maps = len(self.sources) + len(self.extras)
        _check(len(self.anchors) == maps,
               f"detector.anchors needs one entry per feature map ({len(self.sources)} sources + "
               f"{len(self.extras)} extras = {maps}), but got {len(self.anchors)}.")


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: the input it takes (without batch) and its layers in order.

    ``input_shape`` is ``(C, H, W)`` for conv nets and ``(features,)`` for MLPs.
    The last layer is the classifier; ``family`` names where the spec came from
    (a space's family) and is informational.

    Two fields say how the network *runs* (see :func:`nas.compressed`, which sets
    them from a :class:`CompressionSpec`): ``lowrank`` factorizes every conv and
    linear layer that the rule of :func:`nas.graph.factorize_ops` allows, at that
    ratio of its full rank, and ``precision`` is the arithmetic of the deployed
    network (``int8``: int8 weights and activations). Both are left out of
    :meth:`to_dict` at their defaults.
    """

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    family: str = ""
    detector: Detector | None = None
    lowrank: float | None = None
    precision: Precision = "float32"

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        _check(len(shape) in (1, 3) and all(isinstance(d, int) and d >= 1 for d in shape),
               f"ArchSpec.input_shape must be (C, H, W) or (features,) of positive ints, but got {self.input_shape!r}.")
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "layers", tuple(self.layers))
        _check(len(self.layers) > 0, "ArchSpec.layers must not be empty.")
        _check(self.lowrank is None or 0.0 < self.lowrank <= 1.0,
               f"ArchSpec.lowrank must be None (dense) or in (0, 1], but got {self.lowrank!r}.")
        _check(self.precision in PRECISIONS,
               f"ArchSpec.precision must be one of {list(PRECISIONS)}, but got {self.precision!r}.")

    @property
    def num_classes(self) -> int:
        if self.detector is not None:
            return self.detector.num_classes
        last = self.layers[-1]
        _check(isinstance(last, Linear), "ArchSpec: the last layer must be the Linear classifier.")
        assert isinstance(last, Linear)
        return last.out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "family": self.family,
            "input_shape": list(self.input_shape),
            "layers": [layer_to_dict(layer) for layer in self.layers],
        }
        if self.detector is not None:
            out["detector"] = {k: list(v) if isinstance(v, tuple) else v
                               for k, v in dataclasses.asdict(self.detector).items()}
        if self.lowrank is not None:
            out["lowrank"] = self.lowrank
        if self.precision != "float32":
            out["precision"] = self.precision
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        if not isinstance(data, dict):
            raise SpecError(f"ArchSpec must be a mapping, but got {type(data).__name__}.")
        allowed = ["detector", "family", "input_shape", "layers", "lowrank", "precision"]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise SpecError(f"ArchSpec: unknown field(s) {unknown}; allowed: {allowed}.")
        detector = data.get("detector")
        if detector is not None and not isinstance(detector, dict):
            raise SpecError(f"ArchSpec.detector must be a mapping, but got {detector!r}.")
        layers = data.get("layers")
        if not isinstance(layers, list):
            raise SpecError(f"ArchSpec.layers must be a list, but got {layers!r}.")
        return cls(
            input_shape=tuple(data.get("input_shape", ())),
            layers=tuple(layer_from_dict(item, f"ArchSpec.layers[{i}]") for i, item in enumerate(layers)),
            family=str(data.get("family", "")),
            detector=None if detector is None else _from_fields(Detector, detector, "ArchSpec.detector"),
            lowrank=data.get("lowrank"),
            precision=data.get("precision", "float32"),
        )


def layer_index(name: str) -> int | None:
    """The :class:`ArchSpec` layer a module or op name belongs to (``layers.5.0`` -> 5), else None
    (detector heads and extras, the network itself)."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "layers" and parts[1].isdigit():
        return int(parts[1])
    return None


_LAYER_KEY = re.compile(r"(?:layers\.)?(\d+)(?:\.0)?")


def _layer_key(key: Any) -> int:
    """An override's layer: its index (2, "2") or its module name (``layers.2``, or ``layers.2.0`` as
    ``nas compress`` prints it)."""
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    found = _LAYER_KEY.fullmatch(key.strip()) if isinstance(key, str) else None
    _check(found is not None, f"CompressionSpec.layers: {key!r} names no layer; write the layer's index (2) or its "
                              f"module name (layers.2, or layers.2.0 as `nas compress` prints it).")
    assert found is not None
    return int(found.group(1))


@dataclass(frozen=True)
class LayerCompression:
    """One layer's own settings, as Deep Compression's per-layer tables give them: ``sparsity`` replaces
    ``sparsity_conv``/``sparsity_linear`` for every weight of the layer, ``bits`` its ``codebook_bits``.
    None keeps the spec's value."""

    sparsity: float | None = None
    bits: int | None = None

    def __post_init__(self) -> None:
        _check(self.sparsity is not None or self.bits is not None,
               "CompressionSpec.layers: an override needs 'sparsity', 'bits' or both.")
        _check(self.sparsity is None or (isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0),
               f"CompressionSpec.layers: sparsity must satisfy 0 <= value < 1, but got {self.sparsity!r}.")
        _check(self.bits is None or (isinstance(self.bits, int) and not isinstance(self.bits, bool)
                                     and 1 <= self.bits <= 16),
               f"CompressionSpec.layers: bits must be an int in [1, 16], but got {self.bits!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("sparsity", self.sparsity), ("bits", self.bits)) if v is not None}


LayerOverrides = tuple[tuple[int, LayerCompression], ...]


def _overrides(value: Any) -> LayerOverrides:
    """``layers`` as given (a mapping of layer to settings, or the canonical pairs) as sorted (index, settings)."""
    _check(isinstance(value, (dict, tuple, list)),
           f"CompressionSpec.layers must map layers to {{sparsity, bits}}, but got {value!r}.")
    items = value.items() if isinstance(value, dict) else value
    out: dict[int, LayerCompression] = {}
    for key, settings in items:
        index = _layer_key(key)
        _check(index not in out, f"CompressionSpec.layers: layers.{index} is given twice.")
        if isinstance(settings, dict):
            unknown = sorted(set(settings) - {"sparsity", "bits"})
            _check(not unknown, f"CompressionSpec.layers[{key!r}]: unknown field(s) {unknown}; allowed: "
                                "['bits', 'sparsity'].")
            settings = LayerCompression(**settings)
        _check(isinstance(settings, LayerCompression),
               f"CompressionSpec.layers[{key!r}] must be a mapping with 'sparsity' and/or 'bits', but got {settings!r}.")
        out[index] = settings
    return tuple(sorted(out.items()))


def layers_with_weights(arch: ArchSpec) -> dict[int, str]:
    """Index -> type of every layer of ``arch`` that carries weights (the layers an override may name)."""
    return {i: layer.type for i, layer in enumerate(arch.layers) if isinstance(layer, (Conv, InvertedResidual, Linear))}


@dataclass(frozen=True)
class CompressionSpec:
    """Compression settings drawn together with the architecture.

    - ``sparsity_conv`` / ``sparsity_linear``: fraction of weights pruned in
      conv and linear layers (equal when the space samples one global value).
    - ``codebook_bits``: k-means weight sharing with ``2**bits`` centroids per
      layer; ``None`` is off (32-bit floats).
    - ``quantization``: ``none``, ``binary`` (1 bit + per-layer scale),
      ``ternary`` (2 bits + per-layer scale) or ``int8`` (per-channel int8
      weights and int8 activations: the network runs in int8); binary, ternary
      and int8 replace the codebook.
    - ``lowrank_ratio``: fraction of the full rank kept when factorizing conv and
      linear weights; ``None`` is off.
    - ``channel_ratio``: structured pruning, the fraction of channels removed from
      every prunable coupled group (:mod:`nas.compress.structured`); 0 is off.
      ``channel_importance`` ranks the channels: ``l1``/``l2`` filter norms or
      ``activation``.
    - ``huffman``: Huffman-code the stored indices (Deep Compression's last stage).
    - ``binary_rounding``: how ``binary`` weights are drawn while training after
      quantization: ``sign`` (deterministic BinaryConnect) or ``stochastic``
      (BinaryConnect's hard-sigmoid rule, :mod:`nas.compress.binary`). The file is
      the same either way (sign at test time), so no cost reads it. ``to_dict``
      leaves it out at its default, so a candidate written before it existed reads
      and digests the same.
    - ``layers``: per-layer overrides, ``{layer: {"sparsity": s, "bits": b}}`` (Deep Compression's
      Tables 2-5: LeNet-300-100 keeps 8%, 9% and 26% of its three layers' weights at 6, 6 and 2 bits).
      A layer is named by its index in ``ArchSpec.layers`` or its module name (``layers.2``); an
      override covers every weight of the layer (all three convs of an inverted-residual block).
      ``bits`` are codebook bits, so they need ``quantization: none``; ``codebook_bits`` stays the
      other layers' (None: float). Held as sorted ``(index, LayerCompression)`` pairs; which layers
      exist is the architecture's to say (:meth:`check_layers`). Left out of ``to_dict`` when empty.

    There is no student width: a narrower student of a sampled architecture is
    the same architecture sampled at a smaller width multiplier, which the
    spaces already search (``student_width``, which nothing read, was removed;
    :meth:`from_dict` drops it from old run folders).
    """

    sparsity_conv: float = 0.0
    sparsity_linear: float = 0.0
    codebook_bits: int | None = None
    quantization: Quantization = "none"
    lowrank_ratio: float | None = None
    channel_ratio: float = 0.0
    channel_importance: ChannelImportance = "l1"
    huffman: bool = True
    binary_rounding: BinaryRounding = "sign"
    layers: LayerOverrides = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _overrides(self.layers))
        _check(self.quantization == "none" or all(o.bits is None for _, o in self.layers),
               f"CompressionSpec.layers: bits set a layer's codebook, but quantization is {self.quantization!r}, "
               f"which replaces codebooks; set quantization 'none' or leave the layers' bits out.")
        for name in ("sparsity_conv", "sparsity_linear"):
            value = getattr(self, name)
            _check(0.0 <= value < 1.0, f"CompressionSpec.{name} must satisfy 0 <= value < 1, but got {value}.")
        _check(self.codebook_bits is None or (isinstance(self.codebook_bits, int) and 1 <= self.codebook_bits <= 16),
               f"CompressionSpec.codebook_bits must be None (off) or an int in [1, 16], but got {self.codebook_bits!r}.")
        _check(self.quantization in QUANTIZATIONS,
               f"CompressionSpec.quantization must be one of {list(QUANTIZATIONS)}, but got {self.quantization!r}.")
        _check(self.lowrank_ratio is None or 0.0 < self.lowrank_ratio <= 1.0,
               f"CompressionSpec.lowrank_ratio must be None (off) or in (0, 1], but got {self.lowrank_ratio!r}.")
        _check(0.0 <= self.channel_ratio < 1.0,
               f"CompressionSpec.channel_ratio must satisfy 0 <= value < 1, but got {self.channel_ratio!r}.")
        _check(self.channel_importance in CHANNEL_IMPORTANCES,
               f"CompressionSpec.channel_importance must be one of {list(CHANNEL_IMPORTANCES)}, "
               f"but got {self.channel_importance!r}.")
        _check(self.binary_rounding in BINARY_ROUNDINGS,
               f"CompressionSpec.binary_rounding must be one of {list(BINARY_ROUNDINGS)}, "
               f"but got {self.binary_rounding!r}.")
        _check(self.binary_rounding == "sign" or self.quantization == "binary",
               f"CompressionSpec.binary_rounding 'stochastic' draws binary weights, but quantization is "
               f"{self.quantization!r}; set quantization 'binary' or binary_rounding 'sign'.")

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # every other field is a scalar
        if data["binary_rounding"] == "sign":  # the default: candidates from before it existed stay the same
            del data["binary_rounding"]
        if self.layers:
            data["layers"] = {f"layers.{i}": o.to_dict() for i, o in self.layers}
        else:  # as binary_rounding: candidates without overrides read and digest as before
            del data["layers"]
        return data

    def override(self, index: int | None) -> LayerCompression | None:
        """The override of layer ``index`` (see :func:`layer_index`), or None."""
        return dict(self.layers).get(index) if self.layers else None  # type: ignore[arg-type]

    def sparsity_of(self, index: int | None, kind: str) -> float:
        """The fraction pruned of layer ``index``'s weights of ``kind`` ("conv"/"linear")."""
        found = self.override(index)
        if found is not None and found.sparsity is not None:
            return found.sparsity
        return self.sparsity_conv if kind == "conv" else self.sparsity_linear

    def bits_of(self, index: int | None) -> int | None:
        """The codebook bits of layer ``index`` (None: no codebook)."""
        found = self.override(index)
        return found.bits if found is not None and found.bits is not None else self.codebook_bits

    @property
    def prunes(self) -> bool:
        """Whether any weight is pruned (a spec-wide sparsity or a layer's)."""
        return self.sparsity_conv > 0 or self.sparsity_linear > 0 or any(o.sparsity for _, o in self.layers)

    @property
    def shares(self) -> bool:
        """Whether any layer gets a k-means codebook."""
        return self.quantization == "none" and (self.codebook_bits is not None
                                                or any(o.bits is not None for _, o in self.layers))

    def check_layers(self, arch: ArchSpec) -> None:
        """Raise a one-line :class:`SpecError` if an override names a layer of ``arch`` without weights."""
        known = layers_with_weights(arch)
        for index, _ in self.layers:
            _check(index in known, f"CompressionSpec.layers: layers.{index} is not a layer with weights of this "
                                   f"{arch.family or 'network'}; its layers with weights are "
                                   + ", ".join(f"layers.{i} ({kind})" for i, kind in known.items()) + ".")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressionSpec:
        if not isinstance(data, dict):
            raise SpecError(f"CompressionSpec must be a mapping, but got {type(data).__name__}.")
        data = {k: v for k, v in data.items() if k != "student_width"}  # removed: it was never read
        spec: CompressionSpec = _from_fields(cls, data, "CompressionSpec")
        return spec


@dataclass(frozen=True)
class Candidate:
    """One point of a search space: an architecture and its compression settings."""

    arch: ArchSpec
    compression: CompressionSpec = field(default_factory=CompressionSpec)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "compression": self.compression.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        if not isinstance(data, dict) or set(data) - {"arch", "compression"} or "arch" not in data:
            raise SpecError("Candidate must be a mapping with keys 'arch' and optionally 'compression'.")
        return cls(
            arch=ArchSpec.from_dict(data["arch"]),
            compression=CompressionSpec.from_dict(data.get("compression", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"Candidate JSON is malformed: {exc}.") from None
        return cls.from_dict(data)
