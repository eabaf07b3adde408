"""The ``compression:`` section of a space: the choices for each compression knob, sampled into a
:class:`~nas.spec.CompressionSpec` beside the architecture (:mod:`nas.space` holds the families)."""

from __future__ import annotations

from typing import Annotated, Any, Callable, Sequence, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer,
                      model_validator)

from nas.spec import BinaryRounding, ChannelImportance, CompressionSpec, Quantization

Chooser = Callable[[str, Sequence[Any]], Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _off_to_none(value: Any) -> Any:
    """YAML reads a bare ``off`` as ``False``; in choice lists it means 'compression off'."""
    if isinstance(value, list):
        return [None if v is False or v == "off" else v for v in value]
    return value


class SparsityConfig(_Strict):
    conv: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=1)]
    linear: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=1)]


class CompressionConfig(_Strict):
    """Choices for the compression knobs; a single-element list fixes a knob."""

    sparsity: Union[Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=1)], SparsityConfig] = [0.0]
    codebook_bits: Annotated[list[Annotated[int, Field(ge=1, le=16)] | None], Field(min_length=1),
                             BeforeValidator(_off_to_none)] = [None]
    quantization: Annotated[list[Quantization], Field(min_length=1)] = ["none"]
    lowrank_ratio: Annotated[list[Annotated[float, Field(gt=0, le=1)] | None], Field(min_length=1),
                             BeforeValidator(_off_to_none)] = [None]
    channel_ratio: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=1)] = [0.0]
    channel_importance: Annotated[list[ChannelImportance], Field(min_length=1)] = ["l1"]
    binary_rounding: Annotated[list[BinaryRounding], Field(min_length=1)] = ["sign"]
    huffman: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_student_width(cls, data: Any) -> Any:
        if isinstance(data, dict) and "student_width" in data:
            raise ValueError("student_width was removed: a narrower student is the same network at a smaller "
                             "width multiplier, so list the widths in 'width_multiplier' instead")
        return data

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave out ``binary_rounding`` at its default, so spaces written before it dump (and digest) the same."""
        data: dict[str, Any] = handler(self)
        if data.get("binary_rounding") == ["sign"]:
            del data["binary_rounding"]
        return data

    def _rounding(self, choose: Chooser, quantization: str) -> str:
        """Only binary weights have a rounding rule, so it is only drawn for them, and not at all where the space
        keeps the default (trials of spaces written before it have no such parameter)."""
        if quantization != "binary" or self.binary_rounding == ["sign"]:
            return "sign"
        rounding: str = choose("compression.binary_rounding", self.binary_rounding)
        return rounding

    def sample(self, choose: Chooser) -> CompressionSpec:
        if isinstance(self.sparsity, SparsityConfig):
            conv = choose("compression.sparsity_conv", self.sparsity.conv)
            linear = choose("compression.sparsity_linear", self.sparsity.linear)
        else:
            conv = linear = choose("compression.sparsity", self.sparsity)
        quantization = choose("compression.quantization", self.quantization)
        # Binary/ternary codes replace the codebook, so its size is only drawn for "none".
        bits = choose("compression.codebook_bits", self.codebook_bits) if quantization == "none" else None
        ratio = choose("compression.channel_ratio", self.channel_ratio)
        return CompressionSpec(
            sparsity_conv=conv,
            sparsity_linear=linear,
            codebook_bits=bits,
            quantization=quantization,
            lowrank_ratio=choose("compression.lowrank_ratio", self.lowrank_ratio),
            channel_ratio=ratio,
            # The importance only matters when channels are pruned, so it is only drawn then.
            channel_importance=choose("compression.channel_importance", self.channel_importance) if ratio else "l1",
            binary_rounding=self._rounding(choose, quantization),
            huffman=self.huffman,
        )
