"""FX conversion that fails on data-dependent control flow falls back per submodule (issue 16): the largest
traceable subtrees run on int8 kernels, the glue around them stays fp32."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.data import EvalData, fingerprint

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


class Gated(nn.Module):
    """A data-dependent ``if`` in the top forward: FX cannot trace the whole model."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if y.mean() > 0:  # data-dependent
            y = y * 0.5
        return self.head(y)


def test_a_data_dependent_if_leaves_the_traceable_subtrees_on_int8_kernels():
    torch.manual_seed(0)
    model = Gated().eval()
    calib, inputs = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)
    engine = Engine(SimpleNamespace(module=model), EvalData("random", calib, None, inputs, None, 10,
                                                            fingerprint(calib, inputs)))
    real = engine.real_model(engine.plan(W8A8))
    assert real.converted and real.executed_precisions == {name: "int8" for name in engine.layer_names}, real.note
    assert "its traceable parts do (body, head)" in real.note
    with torch.no_grad():
        expected, got = model(inputs), real.module(inputs)
    assert (expected - got).abs().max() < 0.1 * expected.abs().max()  # int8 of the same computation
    result = engine.evaluate(W8A8, latency="none")
    assert result.agreement > 0.8
