"""ONNX input: files torch.onnx.export writes from the samples open, evaluate and sweep; hostile ones are refused."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings

import pytest
import torch

onnx = pytest.importorskip("onnx")
if importlib.util.find_spec("onnx2torch") is None:  # not imported here: it must come after tvcompat
    pytest.skip("onnx2torch is not installed", allow_module_level=True)

from qtradeoff import cli  # noqa: E402
from qtradeoff.core.errors import EXIT_INPUT  # noqa: E402
from qtradeoff.core.loading import model_io, onnx_io  # noqa: E402

SAMPLES = ["digits_cnn", "digits_mlp", "mobilenet_v3_small_digits"]


def _export_sample(name: str, path) -> dict:
    sample = model_io.load_sample_model(name)
    module = sample.module.eval()
    example = torch.zeros((1, *sample.input_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notices
        torch.onnx.export(module, example, str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {onnx_io.PREPROCESSING_KEY: json.dumps(sample.preprocessing)})
    onnx.save(model, str(path))
    return model_io._manifest()["models"][name]


@pytest.mark.parametrize("name", SAMPLES)
def test_exported_sample_loads_and_evaluates_to_manifest_accuracy(name, tmp_path, capsys):
    path = tmp_path / f"{name}.onnx"
    entry = _export_sample(name, path)
    loaded = model_io.load_model(path, isolate=False)
    assert loaded.format == "onnx"
    assert loaded.input_shape == tuple(entry["input_shape"])
    assert loaded.num_classes == entry["num_classes"]
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    # the layers carry the names of the PyTorch modules they were exported from (features.1.block.0.0, ...), not
    # the converter's slash paths, so a configuration written for the PyTorch model applies to its ONNX file
    source = model_io.load_sample_model(name).module
    assert [n for n, m in loaded.module.named_modules() if isinstance(m, kinds)] == \
        [n for n, m in source.named_modules() if isinstance(m, kinds)]
    assert cli.main(["evaluate", str(path), "--data", "digits", "--latency", "none", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    accuracy = result["accuracy"]["top1"] if isinstance(result["accuracy"], dict) else result["accuracy"]
    assert accuracy == pytest.approx(entry["test_accuracy"], abs=1e-9)


def test_layer_names_come_from_the_module_scopes_torch_onnx_writes():
    node = onnx.helper.make_node
    assert onnx_io._scope_path(node("Conv", ["x"], ["y"], name="/features/features.1/block/block.0/block.0.0/Conv")) \
        == ("features.1.block.0.0", "Conv")
    assert onnx_io._scope_path(node("Flatten", ["x"], ["y"], name="/Flatten")) == ("", "Flatten")
    assert onnx_io._scope_path(node("Conv", ["x"], ["y"], name="model/conv2d/Conv2D")) == ("model.conv2d", "Conv2D")
    assert onnx_io._scope_path(node("Relu", ["x"], ["y"])) == ("", "Relu")  # unnamed: its op


def test_exported_sample_sweeps(tmp_path):
    path = tmp_path / "digits_mlp.onnx"
    _export_sample("digits_mlp", path)
    out = tmp_path / "sweep.jsonl"
    code = cli.main(["sweep", str(path), "--data", "digits", "--strategy", "random", "--budget", "2",
                     "--eval-size", "100", "--calib-size", "32", "--out", str(out), "--quiet"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(rows) >= 2


def _one_line_refusal(path, capsys, *words):
    assert cli.main(["inspect", str(path)]) == EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    for word in words:
        assert word in err, err


def test_external_data_outside_the_folder_is_refused(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    _export_sample("digits_mlp", path)
    model = onnx.load(str(path))
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    _one_line_refusal(path, capsys, "outside the model's folder")
    weight.external_data[0].value = "/etc/passwd"
    onnx.save(model, str(path))
    _one_line_refusal(path, capsys, "outside the model's folder")
    os.symlink("/etc/passwd", tmp_path / "weights.bin")
    weight.external_data[0].value = "weights.bin"
    onnx.save(model, str(path))
    _one_line_refusal(path, capsys, "outside the model's folder")


def test_truncated_protobuf_is_refused(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    _export_sample("digits_mlp", path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _one_line_refusal(path, capsys, "truncated")


def test_unsupported_operator_is_refused(tmp_path, capsys):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    node = onnx.helper.make_node("FrobnicateNoSuchOp", ["x"], ["y"], domain="com.example")
    graph = onnx.helper.make_graph([node], "g", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                         onnx.helper.make_opsetid("com.example", 1)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    _one_line_refusal(path, capsys, "FrobnicateNoSuchOp")


def test_file_over_the_protobuf_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    _export_sample("digits_mlp", path)
    monkeypatch.setattr(onnx_io, "PROTOBUF_LIMIT", path.stat().st_size)
    with pytest.raises(model_io.ModelLoadError, match="2 GiB protobuf limit"):
        model_io.load_model(path, isolate=False)
