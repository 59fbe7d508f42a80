"""The fused real int8 graph (issue 19): int8 chains stay int8 between layers, per-layer choices hold, sub-8-bit
weights stay on their own grid, and converting imports neither torch._dynamo nor torch._inductor."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.measurement.realquant import build_real_model, quantized_engine

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
ROOT = Path(__file__).resolve().parents[3]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.branch(x)
        return self.fc(self.flatten(self.pool(x)))


def _model_and_calib():
    torch.manual_seed(0)
    model = Residual().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (model.stem[1], model.branch[1]):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model, torch.randn(64, 1, 8, 8)


def _real(model, config, calib):
    compressor = Compressor(model, calib)
    plan = compressor.plan(config)
    return build_real_model(model, plan, calib), compressor, plan


def test_an_all_int8_chain_keeps_one_quantize_and_one_dequantize():
    model, calib = _model_and_calib()
    real, _, _ = _real(model, W8A8, calib)
    assert real.converted and set(real.executed_precisions.values()) == {"int8"}
    # the residual add, the pooling and the flatten run on int8 tensors: no boundary between the layers
    assert real.boundaries == ("quantize:stem_0", "dequantize:fc")


def test_a_layer_left_fp32_keeps_its_precision_with_boundaries_around_it():
    model, calib = _model_and_calib()
    real, _, _ = _real(model, W8A8.with_layer("branch.0", skip=True), calib)
    assert real.converted
    assert real.executed_precisions["branch.0"] == "fp32"
    assert {real.executed_precisions[n] for n in ("stem.0", "fc")} == {"int8"}
    assert any(b.startswith("dequantize:") for b in real.boundaries[:-1])  # the fp32 branch leaves int8
    with torch.no_grad(), quantized_engine():
        assert real.module(calib[:3]).shape == (3, 4)


def test_sub_8_bit_weights_stay_on_their_grid_and_match_the_simulation():
    # torch.ao's convert clamps codes to qint8, not to the observer's int4 range: +max|w| became +8, a 17th int4
    # level the simulation (and any 4-bit storage) cannot hold
    model, calib = _model_and_calib()
    config = W8A8.with_defaults(weight={"precision": "int4"})
    real, compressor, plan = _real(model, config, calib)
    assert real.converted and set(real.executed_precisions.values()) == {"int8"}
    for name in ("stem.0", "branch.0", "fc"):
        codes = real.module.get_submodule(name).weight().int_repr()
        assert int(codes.min()) >= -8 and int(codes.max()) <= 7, name
    simulated = compressor.simulate(plan)
    with torch.no_grad(), quantized_engine():
        ours, reference = real.module(calib), simulated(calib)
    noise = (ours - reference).square().sum() / reference.square().sum()
    assert float(noise) < 0.02  # the simulation's 8-bit activations vs the real 7-bit ones (no VNNI) stay close
    agreement = float((ours.argmax(1) == reference.argmax(1)).float().mean())
    assert agreement >= 0.9


def test_converting_imports_neither_dynamo_nor_inductor():
    # A cold start pays seconds for torch._dynamo: neither the inventory, nor a first simulated evaluation, nor
    # the int8 conversion of a measured one may import it (torch.fx's stack traces used to, through inductor).
    script = textwrap.dedent("""
        import sys
        from qtradeoff.core.config import CompressionConfig
        from qtradeoff.core.engine.engine import Engine
        from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
        from qtradeoff.core.measurement.latency import LatencySettings

        loaded = load_sample_model("digits_mlp")
        engine = Engine(loaded, sample_data_for(loaded, calib_size=64, eval_size=64))
        engine.layers
        config = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
        engine.evaluate(config, latency="none")
        seen = [m for m in ("torch._dynamo", "torch._inductor") if m in sys.modules]
        engine.real_model(engine.plan(config))
        seen += [m + " (conversion)" for m in ("torch._dynamo", "torch._inductor") if m in sys.modules]
        print(",".join(seen) or "none")
    """)
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=240,
                           env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip().splitlines()[-1] == "none"


def test_as_executed_is_the_configuration_the_real_kernels_compute(monkeypatch):
    """Without VNNI the static int8 layers' activations run on 7 bits: as_executed says so layer by layer and
    leaves everything else as configured; with VNNI (or nothing on int8 kernels) it is None."""
    from qtradeoff.core.measurement import realquant

    model, calib = _model_and_calib()
    compressor = Compressor(model, calib)
    mixed = W8A8.with_layer("fc", activation={"precision": "fp32"}).with_layer("stem.0", activation={
        "precision": "int6"})
    monkeypatch.setattr(realquant, "saturating_int8", lambda: True)
    executed = realquant.as_executed(compressor.plan(mixed))
    settings, configured = compressor.plan(executed).settings, compressor.plan(mixed).settings
    assert settings["branch.0"].activation.precision == "int7"
    assert settings["branch.0"].activation.calibration == configured["branch.0"].activation.calibration
    assert settings["stem.0"].activation.precision == "int6"  # already within 7 bits
    assert settings["fc"].activation.precision == "fp32"  # weight-only: dynamic int8, not this grid
    assert all(s.weight == configured[n].weight for n, s in settings.items())
    assert realquant.as_executed(compressor.plan(CompressionConfig())) is None
    monkeypatch.setattr(realquant, "saturating_int8", lambda: False)
    assert realquant.as_executed(compressor.plan(W8A8)) is None
