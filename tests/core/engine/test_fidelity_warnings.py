"""Warnings when a figure is meaningless (issue 16): constant fp32 outputs, agreement without labels, tiny
subsets — in every Result's provenance, as the CLI table and the GUI's note show them."""

from __future__ import annotations

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import FEW_SAMPLES, Engine, fidelity_warnings
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def test_zero_head_model_carries_the_constant_reference_warning():
    loaded = load_sample_model("digits_cnn")
    head = loaded.module.classifier[2]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    engine = Engine(loaded, sample_data_for(loaded, calib_size=16, eval_size=64))
    result = engine.evaluate(W8A8, latency="none")
    warnings = result.provenance["warnings"]
    assert any("all zero" in w and "agreement and SQNR compare nothing" in w for w in warnings), warnings


def test_a_healthy_model_on_enough_samples_has_no_fidelity_warning():
    loaded = load_sample_model("digits_cnn")
    engine = Engine(loaded, sample_data_for(loaded, calib_size=16, eval_size=FEW_SAMPLES))
    assert engine.evaluate(W8A8, latency="none").provenance["warnings"] == []


def test_each_warning_from_its_cause():
    varied = torch.randn(64, 10)
    assert fidelity_warnings(varied, labelled=True) == []
    same = torch.randn(1, 10).repeat(64, 1)
    assert any("the same for every sample" in w for w in fidelity_warnings(same, labelled=True))
    assert any("tiny" in w for w in fidelity_warnings(varied * 1e-10, labelled=True))
    assert any("no labels" in w for w in fidelity_warnings(varied, labelled=False))
    assert any("one sample is 10.0 points" in w for w in fidelity_warnings(varied[:10], labelled=True))


def test_a_scale_floor_that_zeroes_a_layer_is_named():
    """Outputs of ~1e-10: int8 weights round to 0 and activations collapse on the floored grid (issue 16)."""
    from types import SimpleNamespace

    from torch import nn

    from qtradeoff.core.loading.data import EvalData, fingerprint

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        model[0].weight.mul_(1e-10)
        model[0].bias.mul_(1e-10)
    inputs = torch.randn(80, 8)
    data = EvalData("tiny", inputs[:16], None, inputs[16:], None, None, fingerprint(inputs[:16], inputs[16:]))
    engine = Engine(SimpleNamespace(module=model), data)
    weight_only = engine.evaluate(CompressionConfig().with_defaults(weight={"precision": "int8"}), latency="none")
    (floor,) = [w for w in weight_only.provenance["warnings"] if "smallest scale" in w]
    assert "zeroes the weights of layer 0:" in floor  # the second layer's weights are ordinary
    w8a8 = engine.evaluate(W8A8, latency="none").provenance["warnings"]
    assert any("collapses the activations of layer 2" in w for w in w8a8), w8a8
    healthy = engine.evaluate(CompressionConfig().with_defaults(weight={"precision": "int8"}).with_layer(
        "0", weight={"precision": "fp32"}), latency="none")
    assert not any("smallest scale" in w for w in healthy.provenance["warnings"])
