"""Latency protocol, real-kernel conversion and roofline calibration (no timing assertions: the machine is shared)."""

from __future__ import annotations

import json

import pytest
import torch

from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement import roofline
from qtradeoff.core.measurement.latency import LatencySettings, LatencyStats, batch_of, time_forward
from qtradeoff.core.measurement.realquant import RealModelCache, build_real_model, planned_precision

FAST = LatencySettings(batch_sizes=(1, 8), threads=1, min_run_time=0.02, warmup=1, min_repeats=3)
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def _plan(module, config, calib):
    """The plan the engine would hand the real-kernel builder."""
    return Compressor(module, calib).plan(config)


@pytest.fixture(scope="module")
def cnn():
    loaded = load_sample_model("digits_cnn")
    data = sample_data_for(loaded, calib_size=64, eval_size=64)
    kinds = {info.name: info.kind for info in Compressor(loaded.module, data.calib_inputs).layers}
    return loaded, data, kinds


def test_time_forward_reports_each_batch():
    module = torch.nn.Linear(4, 2)
    stats = list(time_forward(module, torch.randn(3, 4), FAST))
    assert [s.batch for s in stats] == [1, 8]
    assert all(s.median_ms > 0 and s.iqr_ms >= 0 and s.repeats >= 2 for s in stats)  # disturbed rounds dropped


def test_time_forward_stops_and_restores_threads():
    threads = torch.get_num_threads()
    stats = list(time_forward(torch.nn.Linear(4, 2), torch.randn(3, 4), LatencySettings(threads=1, min_run_time=0.01),
                              should_stop=lambda: True))
    assert stats == []
    assert torch.get_num_threads() == threads


def test_batch_of_cycles_real_samples():
    samples = torch.arange(3.0).reshape(3, 1)
    assert batch_of(samples, 7).flatten().tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_w8a8_runs_on_quantized_kernels(cnn):
    loaded, data, kinds = cnn
    real = build_real_model(loaded.module, _plan(loaded.module, W8A8, data.calib_inputs), data.calib_inputs)
    assert real.converted
    assert set(real.executed_precisions.values()) == {"int8"}
    assert any("quantized" in type(m).__module__ for m in real.module.modules())
    assert loaded.module.features[0].conv.weight.dtype == torch.float32  # base untouched


def test_mixed_precision_and_fallback_notes(cnn):
    loaded, data, kinds = cnn
    config = (W8A8.with_layer("features.0.conv", skip=True)
              .with_layer("features.3.conv", weight={"precision": "int4"})
              .with_layer("features.5.conv", activation={"precision": "fp32"})
              .with_layer("classifier.2", weight={"precision": "bf16"}, activation={"precision": "fp32"}))
    real = build_real_model(loaded.module, _plan(loaded.module, config, data.calib_inputs), data.calib_inputs)
    executed = real.executed_precisions
    assert executed["features.0.conv"] == "fp32"
    assert executed["features.3.conv"] == "int8"
    assert executed["features.5.conv"] == "fp32"  # weight-only int8 conv: no CPU kernel
    assert executed["classifier.2"] == "bf16"
    assert "int4" in real.note and "no CPU kernel" in real.note
    with torch.inference_mode():
        assert real.module(data.eval_inputs[:4]).shape == (4, 10)


def test_weight_only_linear_is_dynamic_int8():
    loaded = load_sample_model("digits_mlp")
    data = sample_data_for(loaded, calib_size=32, eval_size=32)
    config = CompressionConfig().with_defaults(weight={"precision": "int8"})
    real = build_real_model(loaded.module, _plan(loaded.module, config, data.calib_inputs), data.calib_inputs)
    assert set(real.executed_precisions.values()) == {"int8-dynamic"}


def test_untraceable_model_falls_back_and_says_why(cnn):
    _, data, _ = cnn

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(1024, 10)
            self.conv = torch.nn.Conv2d(1, 1, 1)

        def forward(self, x):
            y = self.conv(x)
            if y.sum() > 0:  # data-dependent control flow: FX cannot trace it
                y = y * 2
            return self.fc(y.flatten(1))

    real = build_real_model(Branchy().eval(), _plan(Branchy().eval(), W8A8, data.calib_inputs), data.calib_inputs)
    assert not real.converted
    assert "conversion failed" in real.note
    assert real.executed_precisions == {"conv": "fp32", "fc": "int8-dynamic"}


def test_planned_precision_table():
    def settings(weight, act):
        return CompressionConfig().with_defaults(weight={"precision": weight},
                                                 activation={"precision": act}).resolve("x")

    assert planned_precision(settings("int8", "int8"), "Conv2d")[0] == "int8"
    assert planned_precision(settings("int3", "int6"), "Conv2d")[0] == "int8"
    assert planned_precision(settings("int12", "int8"), "Conv2d")[0] == "fp32"
    assert planned_precision(settings("fp16", "fp32"), "Linear")[0] == "fp16"
    assert planned_precision(settings("fp8_e4m3", "fp32"), "Linear")[0] == "fp32"


def test_real_model_cache_builds_once():
    cache = RealModelCache(maxsize=1)
    calls = []
    cache.get(("a",), lambda: calls.append(1) or "A")
    assert cache.get(("a",), lambda: calls.append(1) or "A") == "A"
    cache.get(("b",), lambda: calls.append(1) or "B")
    cache.get(("a",), lambda: calls.append(1) or "A")
    assert len(calls) == 3 and cache.builds == 3


def test_roofline_calibration_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path))
    first = roofline.calibrate(1, min_run_time=0.02)
    path = roofline.cache_path(1)
    assert path.is_file() and json.loads(path.read_text())["threads"] == 1
    assert first.calibration_seconds > 0  # how long it takes is benchmarks' business (8.5 s seen under load)
    assert set(first.peak_macs) == {"fp32", "bf16", "fp16", "int8"}
    assert set(first.kernels["fp32"]) == set(first.kernels["int8"]) == set(roofline.KERNEL_KINDS)
    assert all(fixed >= 0 and rate > 0 for kinds in first.kernels.values() for fixed, rate in kinds.values())
    assert first.boundary[1] > 0 and "thread(s)" in first.describe()
    assert roofline.calibrate(1) == first  # read back, not re-measured


def test_roofline_estimate_uses_assumptions():
    machine = roofline.Roofline({"fp32": 1e10, "bf16": 2e10, "fp16": 1e9, "int8": 4e10}, 1e10, 1e-6, "cpu", 1,
                                torch.__version__, 0.0, 0.0)
    cost = [roofline.LayerCost("x", macs=10_000_000, weight_bytes=1000, input_numel=1000, output_numel=1000)]
    int8 = {"x": W8A8.resolve("x")}
    int4 = {"x": W8A8.with_defaults(weight={"precision": "int4"}, activation={"precision": "int4"}).resolve("x")}
    ms8, used8 = roofline.estimate_ms(cost, int8, machine, 1)
    ms4, used4 = roofline.estimate_ms(cost, int4, machine, 1)
    assert ms8 == pytest.approx((1e7 / 4e10 + 1e-6) * 1e3)
    assert ms4 < ms8 and "int<8" in used4 and "int<8" not in used8


def test_residual_network_converts_with_int8_adds():
    # Per-layer qconfigs alone leave resnet's residual adds mixing quantized and float tensors; the fused int8
    # graph quantizes the functional ops too, so the whole network is one int8 chain (one quantize, one dequantize).
    from qtradeoff.core.loading import architectures

    torch.manual_seed(0)
    model = architectures.build("torchvision.resnet18", num_classes=10).eval()
    calib = torch.randn(8, 3, 32, 32)
    real = build_real_model(model, _plan(model, W8A8, calib), calib)
    assert real.converted and set(real.executed_precisions.values()) == {"int8"}
    assert real.boundaries == ("quantize:conv1", "dequantize:fc")
    with torch.no_grad():
        assert real.module(calib[:4]).shape == (4, 10)


def test_a_timing_whose_blocks_disagree_is_marked_noisy_and_the_mark_survives_json():
    from qtradeoff.core.measurement.latency import NOISY_SPREAD

    quiet = LatencyStats(1, 2.0, 2.0 * NOISY_SPREAD * 0.5, 9)
    noisy = LatencyStats(1, 2.0, 2.0 * NOISY_SPREAD * 2.0, 9)
    estimate = LatencyStats(1, 2.0, 0.0, 0)
    assert not quiet.noisy and noisy.noisy and not estimate.noisy
    assert noisy.spread == pytest.approx(2 * NOISY_SPREAD)
    record = noisy.to_dict()
    assert record["noisy"] is True and record["spread"] == pytest.approx(2 * NOISY_SPREAD)
    assert LatencyStats.from_dict(record) == noisy
    older = {"batch": 1, "median_ms": 2.0, "iqr_ms": 1.0, "repeats": 9}  # a record written before the flag
    assert LatencyStats.from_dict(older).noisy
