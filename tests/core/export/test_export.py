"""Issue 14's done-when checks for the torch-int8 and packed formats: every file reloads in a fresh process (the
torch-int8 runner with qtradeoff unimportable), reproduces the simulated accuracy (or outputs), and stays within
its size bound."""

import importlib.util
import json

import pytest
import torch

from qtradeoff.core import CompressionConfig, Engine, load_sample_model, sample_data_for
from qtradeoff.core.export import ExportError, export, format_names, get_format, raise_for_report
from qtradeoff.core.export.packed import decode_tensor, encode_tensor, load_packed, max_bytes
from qtradeoff.core.export.verify import report_path
from qtradeoff.core.loading import architectures
from qtradeoff.core.loading.data import EvalData, fingerprint
from qtradeoff.core.loading.model_io import load_model

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
FAST = {"latency_batches": (1,), "repeats": 1}


def mixed(engine) -> CompressionConfig:
    """int8 everywhere, int4 weights on the largest layer, 50 % magnitude pruning of the two largest."""
    sizes = sorted(engine.layers, key=lambda info: -info.params)
    config = W8A8.with_layer(sizes[0].name, weight={"precision": "int4"})
    for info in sizes[:2]:
        config = config.with_layer(info.name, prune={"method": "magnitude", "sparsity": 0.5})
    return config


def test_formats_are_registered():
    assert {"torch-int8", "packed"} <= set(format_names())
    with pytest.raises(ExportError, match="unknown export format"):
        get_format("tflite")


@pytest.mark.parametrize("name", ["digits_mlp", pytest.param("digits_cnn", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v3_small_digits", marks=pytest.mark.slow)])
@pytest.mark.parametrize("which", ["w8a8", "mixed"])
def test_torch_int8_reloads_standalone_and_matches(engines, tmp_path, name, which):
    engine = engines(name)
    config = W8A8 if which == "w8a8" else mixed(engine)
    report = export(engine, config, "torch-int8", tmp_path / "model.pt", **FAST)
    assert report.verified and report.runtime["runtime"] == "torch"
    assert json.loads(report_path(tmp_path / "model.pt").read_text())["passed"] == report.passed
    if name == "digits_cnn":
        assert report.file_bytes <= 0.30 * report.fp32_file_bytes
    assert report.passed, report.failures
    assert abs(report.exported["accuracy"] - report.simulated["accuracy"]) * 100 <= 0.5


def test_digits_cnn_torch_int8_size(engines, tmp_path):
    report = export(engines("digits_cnn"), W8A8, "torch-int8", tmp_path / "cnn.pt", verify=False)
    assert report.file_bytes <= 0.30 * report.fp32_file_bytes  # 105755 of 373968 bytes when written


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn",
                                  pytest.param("digits_cnn_torchscript", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v3_small_digits", marks=pytest.mark.slow)])
@pytest.mark.parametrize("which", ["w8a8", "mixed"])
def test_packed_reproduces_the_simulation(engines, tmp_path, name, which):
    engine = engines(name)
    config = W8A8 if which == "w8a8" else mixed(engine)
    out = tmp_path / "model.safetensors"
    report = export(engine, config, "packed", out, **FAST)
    assert report.passed, report.failures
    assert report.file_bytes <= report.weight_bytes * 1.01 + 4096
    assert report.exported["accuracy"] == report.simulated["accuracy"]
    assert report.exported["max_abs_diff_vs_simulated"] <= 1e-4 * 50
    # in this process too: the loader's model computes the simulated outputs
    module = load_packed(out)
    with torch.inference_mode():
        rebuilt = module(engine.data.eval_inputs[:64])
    assert torch.allclose(rebuilt, engine.logits(config)[:64], rtol=0, atol=1e-4)


def _torchvision_engine(tmp_path, arch):
    torch.manual_seed(0)
    module = architectures.build(arch, num_classes=10).eval()
    from safetensors.torch import save_file

    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    loaded = load_model(path, architecture=arch, isolate=False)
    calib, evaluation = torch.randn(16, 3, 32, 32), torch.randn(24, 3, 32, 32)
    data = EvalData("random", calib, None, evaluation, None, 10, fingerprint(calib, evaluation))
    return Engine(loaded, data)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["torchvision.resnet18", "torchvision.mobilenet_v3_small"])
def test_torchvision_models_export_and_agree(tmp_path, arch):
    engine = _torchvision_engine(tmp_path, arch)
    for config in (W8A8, mixed(engine)):
        packed = export(engine, config, "packed", tmp_path / "m.safetensors", **FAST)
        assert packed.passed, packed.failures
        assert packed.file_bytes <= max_bytes(packed.weight_bytes)
        int8 = export(engine, config, "torch-int8", tmp_path / "m.pt", **FAST)
        # no labels: the check is the SQNR against the simulated outputs (resnet18 measured 28.9 / 29.1 dB)
        assert int8.verified and int8.passed, int8.failures
        # ONNX for resnet18 only: a random-weight mobilenet_v3_small's W8A8 outputs share no top-1 with fp32's
        # (0.0 dB), so agreement with the simulation proves little there; the trained mobilenet_v3_small_digits
        # sample covers that architecture (tests/core/test_onnx_export.py). Measured: 40.6 dB vs the simulation.
        if arch.endswith("resnet18") and importlib.util.find_spec("onnxruntime") is not None:
            onnx = export(engine, config, "onnx", tmp_path / "m.onnx", **FAST)
            assert onnx.verified and onnx.passed, onnx.failures


@pytest.mark.parametrize("index", ["dense", "bitmask", "csr"])
@pytest.mark.parametrize("precision", ["int2", "int3", "int4", "int8", "int12", "int16", "fp16", "bf16", "lut3",
                                       "lut4"])
def test_encode_decode_reproduce_the_simulated_weight(index, precision):
    from qtradeoff.core.compression.compress import process_weight
    from qtradeoff.core.config import WeightSpec

    torch.manual_seed(1)
    weight = torch.randn(6, 3, 3, 3)
    spec = WeightSpec(precision=precision, granularity="per_channel", symmetric=index != "csr")
    mask = None if index == "dense" else (weight.abs() > 0.7).float()
    processed = process_weight(weight, spec, mask)
    entry, parts = encode_tensor(processed, weight, precision, symmetric=spec.symmetric, per_channel=True,
                                 out_axis=0, mask=mask, index=index)
    assert torch.equal(decode_tensor(entry, parts), processed)


def test_failed_write_leaves_nothing(engines, tmp_path):
    out = tmp_path / "x.safetensors"
    loaded = load_sample_model("digits_cnn")
    engine = Engine(loaded, sample_data_for(loaded, eval_size=32))
    engine.loaded.architecture = None  # packed needs a rebuildable architecture: the writer refuses
    with pytest.raises(ExportError, match="architecture"):
        export(engine, W8A8, "packed", out, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_load_packed_refuses_other_files(tmp_path):
    from qtradeoff.core.errors import InputError

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="bad.safetensors"):
        load_packed(bad)


def test_raise_for_report_names_the_failures(engines, tmp_path):
    report = export(engines("digits_mlp"), W8A8, "packed", tmp_path / "m.safetensors", verify=False)
    raise_for_report(report)  # passed: no error
    failed = type(report)(**{**report.__dict__, "failures": ("outputs differ",)})
    with pytest.raises(ExportError, match="outputs differ"):
        raise_for_report(failed)


def test_cli_apply(tmp_path, capsys):
    from qtradeoff.cli import main

    config = tmp_path / "w8a8.json"
    config.write_text(json.dumps({"schema": "qtradeoff.config/1", "defaults": {
        "weight": {"precision": "int8"}, "activation": {"precision": "int8"}}}))
    out = tmp_path / "mlp.safetensors"
    assert main(["apply", "digits_mlp", "--config", str(config), "--format", "packed", "-o", str(out),
                 "--repeats", "1", "--eval-size", "100"]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "counted weight_bytes" in text and (tmp_path / "mlp.safetensors.verify.json").exists()
    assert main(["apply", "digits_mlp", "--config", str(config), "--format", "packed", "-o", str(tmp_path)]) == 3
    assert "folder" in capsys.readouterr().err
    assert main(["apply", "digits_mlp", "--config", str(config), "--format", "tflite", "-o", str(out)]) == 2
