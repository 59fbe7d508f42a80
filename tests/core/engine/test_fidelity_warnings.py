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
