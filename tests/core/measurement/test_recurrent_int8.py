"""LSTM and GRU layers run on torch's dynamic int8 kernels when their weights are int8 (issue 15: "quantization
for LSTM/GRU, dynamic int8 real kernels exist"); below 8 bits they stay fp32 and say why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading import input_spec
from qtradeoff.core.loading.model_io import LoadedModel


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 32, batch_first=True)
        self.gru = nn.GRU(32, 24, batch_first=True)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.head(y[:, -1])


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    loaded = LoadedModel(module=_Recurrent().eval(), path="recurrent", name="recurrent", format="module",
                         sha256="0", trusted=True, file_bytes=0, input_shape=(10, 6), num_classes=5,
                         architecture=None, load_seconds=0.0)
    spec = input_spec.parse("x:float32[1,10,6]")
    return Engine(loaded, input_spec.synthetic_data(spec, calib_size=16, eval_size=32))


def _config(weight: str, activation: str) -> CompressionConfig:
    return CompressionConfig().with_defaults(weight={"precision": weight}, activation={"precision": activation})


@pytest.mark.parametrize("activation", ["int8", "fp32"])
def test_int8_recurrent_layers_run_dynamic_int8_and_match_the_simulation(engine, activation):
    config = _config("int8", activation)
    real = engine.real_model(engine.plan(config))
    assert real.executed_precisions["lstm"] == real.executed_precisions["gru"] == "int8-dynamic"
    assert type(real.module.get_submodule("lstm")).__module__.startswith("torch.ao.nn.quantized.dynamic")
    inputs = engine.data.eval_inputs
    with torch.no_grad():
        simulated = engine.compressor.simulate(engine.plan(config))(inputs)
        out = real.module(inputs)
    sqnr = 10 * torch.log10(simulated.pow(2).mean() / (simulated - out).pow(2).mean())
    assert sqnr > 25, float(sqnr)


def test_recurrent_layers_below_8_bits_stay_fp32_and_say_why(engine):
    real = engine.real_model(engine.plan(_config("int4", "fp32")))
    assert real.executed_precisions["lstm"] == real.executed_precisions["gru"] == "fp32"
    assert "int4 LSTM weights" in real.note and "runs fp32" in real.note


@pytest.mark.parametrize("head", ["fp16", "int8"])
def test_recurrent_layers_run_in_fp16_alone_or_beside_an_int8_layer(engine, head):
    # an RNN returns (output, state): the cast layer casts both, eagerly and once FX has traced through it (the
    # int8 head makes the model go through FX); it once crashed the fp16 latency timing of digits_gru
    config = _config("fp16", "fp16").with_layer("head", weight={"precision": head}, activation={"precision": head})
    real = engine.real_model(engine.plan(config))
    assert real.converted, real.note
    assert real.executed_precisions == {"lstm": "fp16", "gru": "fp16", "head": head}
    inputs = engine.data.eval_inputs
    with torch.no_grad():
        simulated = engine.compressor.simulate(engine.plan(config))(inputs)
        out = real.module(inputs)
    assert out.dtype == torch.float32
    sqnr = 10 * torch.log10(simulated.pow(2).mean() / (simulated - out).pow(2).mean())
    assert sqnr > 25, float(sqnr)
