"""The bundled sample models load through the safe loader and reproduce their manifest test accuracy exactly."""

from __future__ import annotations

import pytest
import torch

from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for, sample_names


@pytest.mark.parametrize("name", ["digits_cnn", "digits_cnn_torchscript", "digits_mlp", "mobilenet_v3_small_digits",
                                  "digits_gru"])
def test_sample_reproduces_manifest_accuracy(manifest, name):
    entry = manifest["models"][name]
    loaded = load_sample_model(name)
    assert loaded.format == entry["format"]
    assert loaded.sha256 == entry["sha256"]
    assert loaded.input_shape == tuple(entry["input_shape"])
    assert loaded.trusted == (entry["format"] == "torchscript")  # trust only for the TorchScript file we ship
    data = sample_data_for(loaded)
    assert data.input_shape == loaded.input_shape and len(data.eval_labels) == entry["test_samples"]
    with torch.inference_mode():
        predictions = loaded.module(data.eval_inputs).argmax(1)
    accuracy = int((predictions == data.eval_labels).sum()) / len(data.eval_labels)
    assert accuracy == entry["test_accuracy"]


def test_default_sample_and_names(manifest):
    assert sample_names()[0] == manifest["default"]
    assert load_sample_model().name == manifest["default"]
