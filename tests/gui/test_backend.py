"""The GUI's core adapter on a model whose file does not say its input shape (a plain torchvision state dict)."""

from __future__ import annotations

import torch

from qtradeoff.core.loading import architectures
from qtradeoff.gui.backend import CoreBackend


def test_state_dict_without_input_shape_loads_then_takes_the_datas_shape(tmp_path):
    torch.manual_seed(0)
    model = architectures.build("torchvision.resnet18", num_classes=10).eval()
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    torch.save({"inputs": torch.randn(40, 3, 64, 64), "labels": torch.randint(0, 10, (40,))}, tmp_path / "data.pt")

    backend = CoreBackend()
    summary = backend.load_model(str(tmp_path / "resnet18.pth"))
    assert backend.data is None  # the digits sample does not fit
    guessed = {layer.name: layer.macs for layer in summary.layers}
    assert backend.take_refreshed() is None

    backend.load_data(str(tmp_path / "data.pt"))
    refreshed = backend.take_refreshed()
    assert refreshed is not None and backend.take_refreshed() is None  # handed over once
    measured = {layer.name: layer.macs for layer in refreshed.layers}
    assert measured["conv1"] * (224 / 64) ** 2 == guessed["conv1"]  # the data's 64×64, not the guessed 224×224

    results = list(backend.evaluate_iter(backend.baseline_config(), eval_size=0, latency="none",
                                         should_stop=lambda: False))
    assert backend.is_result(results[-1]) and results[-1].eval_samples == len(backend.data.eval_inputs)


W8A8 = {"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int8"},
                                                     "activation": {"precision": "int8"}}}


def test_a_measured_point_is_also_timed_on_onnx_runtime_and_a_refusal_keeps_the_point(monkeypatch):
    import pytest

    pytest.importorskip("onnxruntime")
    from qtradeoff.core.config import CompressionConfig
    from qtradeoff.core.export import onnx_format

    backend = CoreBackend()
    backend.load_sample("digits_mlp")
    config = CompressionConfig.from_dict(W8A8, layer_names=backend.engine().layer_names)
    items = list(backend.evaluate_iter(config, eval_size=64, latency="both", should_stop=lambda: False,
                                       runtimes=("onnxruntime",)))
    result = items[-1]
    assert backend.is_result(result)
    assert [s.batch for s in result.latency_by_runtime["onnxruntime"]] == [s.batch for s in result.latency_measured]
    assert all(s.median_ms > 0 for s in result.latency_by_runtime["onnxruntime/fp32"])
    assert any(getattr(item, "stage", "") == "latency on onnxruntime" for item in items)

    def refuse(*args, **kwargs):
        raise onnx_format.OnnxExportError("cannot write this layer as ONNX")

    monkeypatch.setattr(onnx_format, "with_runtime_latency", refuse)
    again = list(backend.evaluate_iter(config, eval_size=32, latency="both", should_stop=lambda: False,
                                       runtimes=("onnxruntime",)))[-1]
    assert again.latency_measured and not again.latency_by_runtime  # torch's figures stay
    assert any("not timed on onnxruntime: cannot write this layer" in w for w in again.provenance["warnings"])
