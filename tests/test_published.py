"""Published architectures reproduce their published costs.

Conventions, the same for every row:

- **MAdds**: multiply-adds of every convolution and linear layer, the first conv
  and the classifier included, batch of one (``nas.count(arch).madds``); batch
  norm (folded at inference), pooling, activations and residual adds are not
  counted. This is how the MobileNet papers count.
- **Parameters**: conv and linear weights and biases, batch norm left out
  (``Cost.params_without_norm``), as the papers' reference implementation
  (TensorFlow's research/slim MobileNet tables) counts; ``Cost.params`` adds the
  batch-norm scale and shift.
- **Rounding**: papers print two or three digits and sometimes truncate rather
  than round (MobileNetV2's 3.47M is printed as 3.4M, SSD's 1.259B as 1.25B). For
  every row, ours must round or truncate to the published figure at its printed
  precision: ``published - unit/2 <= ours < published + unit``.
- Detection rows: "prediction layers" are the SSD extra feature layers and the
  box/class heads (ops named ``extras.*`` and ``heads.*``); totals add the backbone.

Where ours differs from a paper, a test below states both numbers and why.
"""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

import nas
from nas.cost import count_ops

M, B = 1e6, 1e9

SANDLER = "Sandler et al. 2018 (MobileNetV2), Table 4"
SANDLER_SSD = "Sandler et al. 2018, Table 5 (SSD vs SSDLite prediction layers, 80 classes)"
SANDLER_DET = "Sandler et al. 2018, Table 6 (COCO detection at 320x320)"
HOWARD = "Howard et al. 2017 (MobileNets), Table 8"
SLIM = "tensorflow/models research/slim/nets/mobilenet README (MobileNetV2 multiplier table)"

# (space, part, quantity, published value, printed unit, source)
ROWS = [
    ("mobilenetv2-1.0-224", "all", "params", 3.4 * M, 0.1 * M, SANDLER),
    ("mobilenetv2-1.0-224", "all", "madds", 300 * M, 1 * M, SANDLER),
    ("mobilenetv2-1.0-224", "all", "params", 3.47 * M, 0.01 * M, SLIM),
    ("mobilenetv2-1.4-224", "all", "params", 6.06 * M, 0.01 * M, SLIM),
    ("mobilenetv2-1.4-224", "all", "madds", 582 * M, 1 * M, SLIM),
    ("mobilenetv2-1.3-224", "all", "params", 5.34 * M, 0.01 * M, SLIM),
    ("mobilenetv2-1.3-224", "all", "madds", 509 * M, 1 * M, SLIM),
    ("mobilenetv2-0.75-224", "all", "params", 2.61 * M, 0.01 * M, SLIM),
    ("mobilenetv2-0.75-224", "all", "madds", 209 * M, 1 * M, SLIM),
    ("mobilenetv2-0.5-224", "all", "params", 1.95 * M, 0.01 * M, SLIM),
    ("mobilenetv2-0.5-224", "all", "madds", 97 * M, 1 * M, SLIM),
    ("mobilenetv2-0.35-224", "all", "params", 1.66 * M, 0.01 * M, SLIM),
    ("mobilenetv2-0.35-224", "all", "madds", 59 * M, 1 * M, SLIM),
    ("mobilenetv1-1.0-224", "all", "params", 4.2 * M, 0.1 * M, HOWARD),
    ("mobilenetv1-1.0-224", "all", "madds", 569 * M, 1 * M, HOWARD),
    ("ssd-mobilenetv2", "prediction", "params", 14.8 * M, 0.1 * M, SANDLER_SSD),
    ("ssd-mobilenetv2", "prediction", "madds", 1.25 * B, 0.01 * B, SANDLER_SSD),
    ("ssdlite-mobilenetv2", "prediction", "params", 2.1 * M, 0.1 * M, SANDLER_SSD),
    ("ssdlite-mobilenetv2", "all", "params", 4.3 * M, 0.1 * M, SANDLER_DET),
    ("ssdlite-mobilenetv2", "all", "madds", 0.8 * B, 0.1 * B, SANDLER_DET),
    ("ssdlite-mobilenetv1", "all", "params", 5.1 * M, 0.1 * M, SANDLER_DET),
    ("ssdlite-mobilenetv1", "all", "madds", 1.3 * B, 0.1 * B, SANDLER_DET),
]


def ours(space: str, part: str, quantity: str) -> int:
    arch = nas.load_space(space).random(0).arch
    op_list = nas.ops(arch)
    if part == "prediction":
        op_list = [op for op in op_list if op.name.startswith(("extras.", "heads."))]
    cost = count_ops(op_list)
    assert part != "all" or cost == nas.count(arch)
    return cost.params_without_norm if quantity == "params" else cost.madds


def within_printed_precision(value: float, published: float, unit: float) -> bool:
    return published - unit / 2 <= value < published + unit


@pytest.mark.parametrize("space,part,quantity,published,unit,source", ROWS,
                         ids=[f"{r[0]}-{r[1]}-{r[2]}-{r[5].split()[0]}" for r in ROWS])
def test_published_cost_is_reproduced(space: str, part: str, quantity: str, published: float, unit: float,
                                      source: str) -> None:
    assert nas.load_space(space).is_fixed
    value = ours(space, part, quantity)
    assert within_printed_precision(value, published, unit), (
        f"{space} {part} {quantity}: ours {value:,} vs {published:,.0f} published in {source}")


def test_mobilenetv2_1_4_differs_from_the_paper_table_but_equals_the_reference_implementation() -> None:
    """Table 4 of the MobileNetV2 paper prints 6.9M parameters and 585M MAdds for width 1.4.
    Ours: 6,061,... parameters and 582.2M MAdds, exactly the 6.06M / 582M that the authors'
    own reference implementation lists for the same network (rows above). The paper's
    figure cannot be reached by this architecture under any BN/classifier convention
    (with batch norm we get 6.11M), so we keep the implementation's network and numbers."""
    params, madds = ours("mobilenetv2-1.4-224", "all", "params"), ours("mobilenetv2-1.4-224", "all", "madds")
    with_bn = nas.count(nas.load_space("mobilenetv2-1.4-224").random(0).arch).params
    assert not within_printed_precision(params, 6.9 * M, 0.1 * M)
    assert not within_printed_precision(with_bn, 6.9 * M, 0.1 * M)
    assert not within_printed_precision(madds, 585 * M, 1 * M)
    assert (round(params / 1e4), round(madds / 1e6)) == (606, 582)


def test_ssdlite_prediction_madds_differ_from_table_5_but_agree_with_table_6() -> None:
    """Table 5 prints 0.35B MAdds for SSDLite's prediction layers. Ours: 0.178B, with the
    parameter count (2.1M) matching. Table 6 of the same paper gives 0.8B for the whole
    MobileNetV2 + SSDLite at 320x320, which ours reproduces (0.789B) as backbone 0.611B +
    prediction layers 0.178B; with 0.35B the whole network would be 0.96B. The table 5
    figure is inconsistent with table 6, so we keep the layers that reproduce table 6."""
    prediction = ours("ssdlite-mobilenetv2", "prediction", "madds")
    total = ours("ssdlite-mobilenetv2", "all", "madds")
    assert prediction == 177_617_344
    assert not within_printed_precision(prediction, 0.35 * B, 0.01 * B)
    assert within_printed_precision(total, 0.8 * B, 0.1 * B)
    assert not within_printed_precision(total - prediction + 0.35 * B, 0.8 * B, 0.1 * B)


def test_ssd_and_ssdlite_share_the_backbone() -> None:
    ssd = nas.load_space("ssd-mobilenetv2").random(0).arch
    lite = nas.load_space("ssdlite-mobilenetv2").random(0).arch
    assert ssd.layers == lite.layers and ssd.detector is not None and lite.detector is not None
    assert not ssd.detector.separable and lite.detector.separable
    # The first heads read layer 15's expansion output (576 ch, stride 16) and the 1280-ch head.
    shapes = {}
    for op in nas.ops(lite):  # sources are op names or whole layers ("layers.18": its last op's output)
        shapes[op.name] = shapes[".".join(op.name.split(".")[:2])] = op.out_shape
    assert [shapes[s] for s in lite.detector.sources] == [(576, 20, 20), (1280, 10, 10)]


@pytest.mark.slow
@pytest.mark.parametrize("space", sorted({r[0] for r in ROWS}))
def test_published_architecture_equals_fvcore(space: str) -> None:
    arch = nas.load_space(space).random(0).arch
    model = nas.build_model(arch).eval()
    analysis = FlopCountAnalysis(model, torch.zeros(1, *arch.input_shape))
    by_op = analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).by_operator()
    cost = nas.count(arch)
    assert cost.madds == by_op["conv"] + by_op["linear"] + by_op["addmm"]
    assert cost.fvcore_default == analysis.total()
    assert cost.params == sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert cost.params_without_norm == cost.params - bn


def test_published_mobilenetv2_is_a_point_of_the_imagenet_search_space() -> None:
    fixed = nas.load_space("mobilenetv2-1.0-224").random(0).arch
    space = nas.load_space("mobilenetv2-imagenet")
    depths, widths = [1, 2, 3, 4, 3, 3, 1], [16, 24, 32, 64, 96, 160, 320]

    def choose(name: str, options: list) -> object:
        value = {"width_multiplier": 1.0, "head.channels": 1280}.get(name)
        if name.endswith(".depth"):
            value = depths[int(name[1])]
        elif name.endswith(".width"):
            value = widths[int(name[1])]
        elif name.endswith(".expansion"):
            value = max(options)
        elif name.endswith(".kernel"):
            value = 3
        elif name.endswith(".conv"):
            value = "depthwise"
        value = options[0] if value is None else value
        assert value in options, (name, value, options)
        return value

    assert space.config.build(choose) == fixed
