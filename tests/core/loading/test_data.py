"""Evaluation data: the digits sample, image folders, tensor files, splits, compatibility and bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from qtradeoff.core.loading.data import (
    DataLoadError,
    EvalData,
    check_compatible,
    load_data,
    load_digits,
)
from qtradeoff.core.loading.model_io import load_sample_model


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ImageFolder layout: 3 classes × 8 images of different sizes, each class with its own colour."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    colours = {"cat": (200, 30, 30), "dog": (30, 200, 30), "owl": (30, 30, 200)}
    for label, colour in colours.items():
        (root / label).mkdir()
        for index in range(8):
            Image.new("RGB", (40 + index, 30 + 2 * index), colour).save(root / label / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def tensors():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(50, 1, 32, 32, generator=generator), torch.arange(50) % 10


@pytest.fixture(scope="module")
def digits_cnn():
    return load_sample_model("digits_cnn")


def _assert_names(caught, path) -> None:
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_bundled_digits_by_name():
    data = load_data("digits", preprocessing={"size": 8, "flatten": True}, calib_size=20, eval_size=30)
    assert isinstance(data, EvalData)
    assert data.input_shape == (64,) and len(data.calib_inputs) == 20 and len(data.eval_inputs) == 30
    assert data.fingerprint == load_digits({"size": 8, "flatten": True}, calib_size=20, eval_size=30).fingerprint


def test_image_folder_with_resize_crop_normalize(image_folder):
    data = load_data(image_folder, image_size=20, crop_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                     calib_size=6, eval_size=12, seed=3)
    assert data.input_shape == (3, 16, 16) and data.num_classes == 3
    assert len(data.calib_inputs) == 6 and len(data.eval_inputs) == 12
    # Plain colours survive resize/crop; normalisation maps 200/255 to (0.784 - 0.5) / 0.5.
    red = data.eval_inputs[data.eval_labels == 0]
    assert torch.allclose(red[:, 0], torch.full_like(red[:, 0], (200 / 255 - 0.5) / 0.5), atol=1e-2)


def test_splits_are_deterministic_disjoint_and_seeded(tmp_path, tensors):
    inputs, labels = tensors
    path = tmp_path / "data.pt"
    torch.save({"inputs": inputs, "labels": labels}, path)
    first = load_data(path, calib_size=10, eval_size=30, seed=1)
    again = load_data(path, calib_size=10, eval_size=30, seed=1)
    other = load_data(path, calib_size=10, eval_size=30, seed=2)
    assert first.fingerprint == again.fingerprint != other.fingerprint
    calib = {tuple(x.flatten()[:4].tolist()) for x in first.calib_inputs}
    evaluation = {tuple(x.flatten()[:4].tolist()) for x in first.eval_inputs}
    assert len(calib) == 10 and len(evaluation) == 30 and not calib & evaluation
    assert first.num_classes == 10


@pytest.mark.parametrize("fmt", ["pt", "npz", "safetensors", "legacy_pt", "bare_tensor"])
def test_tensor_files(tmp_path, tensors, fmt):
    inputs, labels = tensors
    path = tmp_path / "data.bin"  # the extension says nothing: content decides
    if fmt == "pt":
        torch.save({"inputs": inputs, "labels": labels}, path)
    elif fmt == "legacy_pt":
        torch.save({"inputs": inputs, "labels": labels}, path, _use_new_zipfile_serialization=False)
    elif fmt == "npz":
        with open(path, "wb") as handle:
            np.savez(handle, inputs=inputs.numpy(), labels=labels.numpy())
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({"inputs": inputs, "labels": labels}, str(path))
    else:
        torch.save(inputs, path)
    data = load_data(path, calib_size=10, eval_size=20)
    assert data.input_shape == (1, 32, 32)
    assert data.labelled == (fmt != "bare_tensor")


def test_check_compatible_accepts_matching_model(digits_cnn):
    check_compatible(digits_cnn, load_data("digits", preprocessing=digits_cnn.preprocessing, eval_size=8))


def test_check_compatible_rejects_wrong_shape(digits_cnn):
    data = load_data("digits", preprocessing={"size": 8, "flatten": True}, eval_size=8)
    with pytest.raises(DataLoadError) as caught:
        check_compatible(digits_cnn, data)
    assert "(1, 32, 32)" in str(caught.value) and "(64,)" in str(caught.value)
    _assert_names(caught, digits_cnn.path)


def test_check_compatible_rejects_too_few_classes(digits_cnn):
    inputs = torch.zeros(4, 1, 32, 32)
    data = EvalData("twelve", inputs, None, inputs, torch.tensor([0, 1, 2, 11]), 12, "x")
    with pytest.raises(DataLoadError) as caught:
        check_compatible(digits_cnn, data)
    assert "predicts 10 classes but twelve has 12" in str(caught.value)


def test_check_compatible_forward_failure(digits_cnn):
    module = digits_cnn.module  # a bare module: its input shape is unknown, so the forward decides
    data = load_data("digits", preprocessing={"size": 8, "channels": 3}, eval_size=4)
    with pytest.raises(DataLoadError) as caught:
        check_compatible(module, data)
    assert "cannot run on digits's inputs of shape (3, 8, 8)" in str(caught.value)


# ------------------------------------------------------------------------------------------------ bad input


def _bad(path, **kwargs) -> str:
    with pytest.raises(DataLoadError) as caught:
        load_data(path, **kwargs)
    _assert_names(caught, path)
    return str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    assert "empty" in _bad(path)


def test_truncated_archive(tmp_path, tensors):
    path = tmp_path / "cut.pt"
    torch.save({"inputs": tensors[0]}, path)
    path.write_bytes(path.read_bytes()[:5000])
    assert "truncated" in _bad(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(range(256)) * 8)
    assert "not a recognised data file" in _bad(path)


def test_folder_not_in_imagefolder_layout(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")
    assert "ImageFolder layout" in _bad(tmp_path)


def test_damaged_image_in_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    broken = tmp_path / "cat" / "0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataLoadError) as caught:
        load_data(tmp_path, calib_size=0, eval_size=1)
    _assert_names(caught, broken)


def test_fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    assert "not a regular file" in _bad(path)


def test_too_large(tmp_path, tensors):
    path = tmp_path / "big.pt"
    torch.save({"inputs": tensors[0]}, path)
    assert "memory budget" in _bad(path, memory_budget=1024)


def test_image_or_json_given_as_data(tmp_path):
    path = tmp_path / "settings.pt"
    path.write_text('{"inputs": [1, 2, 3]}')
    assert "JSON file" in _bad(path)


def test_model_given_as_data(digits_cnn):
    assert "a model, not data" in _bad(digits_cnn.path.with_name("digits_cnn.torchscript.pt"))


def test_missing_inputs_and_bad_labels(tmp_path, tensors):
    path = tmp_path / "wrong.pt"
    torch.save({"pictures": tensors[0]}, path)  # "images", "x", "data"... are taken (tabular.INPUT_KEYS)
    assert "no 'inputs' tensor" in _bad(path)
    torch.save({"inputs": tensors[0], "labels": tensors[1][:3]}, path)
    assert "'labels' must be N integer class indices" in _bad(path)


def test_pickled_objects_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"inputs": torch.zeros(4, 2), "x": Payload()}, path)
    assert "Python objects beyond tensors" in _bad(path)
    assert not (tmp_path / "pwned").exists()


def test_split_larger_than_data(tmp_path, tensors):
    path = tmp_path / "small.pt"
    torch.save({"inputs": tensors[0]}, path)
    assert "not enough for 40 calibration + 40 evaluation" in _bad(path, calib_size=40, eval_size=40)
