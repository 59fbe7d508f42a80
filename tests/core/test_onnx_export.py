"""The onnx export format: a QDQ model, valid under onnx.checker, that ONNX Runtime runs to the simulated accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from qtradeoff.core.config import CompressionConfig  # noqa: E402
from qtradeoff.core.engine.engine import EngineSpec  # noqa: E402
from qtradeoff.core.export import onnx_format  # noqa: E402
from qtradeoff.core.loading import model_io  # noqa: E402

RUNNER = onnx_format.Path(onnx_format.__file__).parent / "runners" / "run_onnxruntime.py"
W8A8 = {"weight": {"precision": "int8", "granularity": "per_channel", "symmetric": True},
        "activation": {"precision": "int8", "calibration": "minmax"}}


def _configs(engine) -> dict[str, CompressionConfig]:
    layers = engine.layer_names
    inner = layers[1:-1] or layers
    biggest = max(inner, key=lambda name: engine.compressor.weight(name).numel())
    overrides = {layers[len(layers) // 2]: {"weight": {"precision": "int4"}}}
    overrides.setdefault(biggest, {})["prune"] = {"method": "magnitude", "sparsity": 0.5}  # may be the same layer
    mixed = {"schema": "qtradeoff.config/1", "defaults": W8A8, "layers": overrides}
    return {"w8a8": CompressionConfig.from_dict({"schema": "qtradeoff.config/1", "defaults": W8A8},
                                                layer_names=layers),
            "mixed": CompressionConfig.from_dict(mixed, layer_names=layers)}


def _run(path, inputs: np.ndarray, tmp_path, *extra) -> tuple[np.ndarray, dict]:
    np.save(tmp_path / "in.npy", inputs)
    done = subprocess.run([sys.executable, "-I", str(RUNNER), str(path), str(tmp_path / "in.npy"),
                           str(tmp_path / "out.npy"), *extra], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return np.load(tmp_path / "out.npy"), json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp", "mobilenet_v3_small_digits"])
def test_onnx_export_reproduces_simulated_accuracy(name, tmp_path):
    engine = EngineSpec(name).build()
    inputs, labels = engine.data.eval_inputs, engine.data.eval_labels
    for label, config in _configs(engine).items():
        plan = engine.plan(config)
        simulated = engine.compressor.simulate(plan)
        with torch.no_grad():
            reference = torch.cat([simulated(inputs[i:i + 128]) for i in range(0, len(inputs), 128)])
        simulated_accuracy = (reference.argmax(1) == labels).float().mean().item()
        assert simulated_accuracy > 0.5, (label, simulated_accuracy)  # a configuration that still means something
        path = tmp_path / f"{name}.{label}.onnx"
        written = onnx_format.write_onnx(engine.compressor, plan, inputs[:1], path,
                                         preprocessing=engine.loaded.preprocessing)
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        ops = [node.op_type for node in proto.graph.node]
        int_types = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4)
        int_inits = [i for i in proto.graph.initializer if i.data_type in int_types and len(i.dims) > 1]
        assert len(int_inits) == written.int_weights == len(engine.layer_names)
        assert ops.count("QuantizeLinear") == written.activation_qdq > 0
        per_channel = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                       and n.input[0] in {i.name for i in int_inits}]
        constants = onnx_format._constants(proto)
        assert per_channel and all(constants[n.input[1]].size > 1 for n in per_channel)  # per-channel scales
        int4 = [i for i in int_inits if i.data_type == onnx.TensorProto.INT4]
        assert len(int4) == (1 if label == "mixed" else 0)  # the int4 layer is stored as INT4 (opset 21)
        if label == "mixed":  # the pruned layer's zeros are in the file
            zeros = max(float((onnx.numpy_helper.to_array(i) == 0).mean()) for i in int_inits)
            assert zeros >= 0.5
        outputs, line = _run(path, inputs.numpy(), tmp_path, "--optimization", "none")
        assert line["runtime"] == "onnxruntime" and line["latency_ms"] == {}
        exported_accuracy = float((outputs.argmax(1) == labels.numpy()).mean())
        assert abs(exported_accuracy - simulated_accuracy) <= 0.005, (label, exported_accuracy, simulated_accuracy)
    with pytest.raises(model_io.ModelLoadError, match="already quantized"):  # not re-quantized on top
        model_io.load_model(path, isolate=False)


def test_runner_loops_a_fixed_batch_model_and_times(tmp_path):
    sample = model_io.load_sample_model("digits_mlp")
    path = tmp_path / "fixed.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(sample.module.eval(), torch.zeros(4, 64), str(path), dynamo=False, input_names=["x"])
    inputs = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    outputs, line = _run(path, inputs, tmp_path, "--latency-batches", "1,4", "--repeats", "3")
    with torch.no_grad():
        expected = sample.module(torch.from_numpy(inputs)).numpy()
    assert outputs.shape == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    assert "skipped" in line["latency_ms"]["1"]
    assert set(line["latency_ms"]["4"]) >= {"median", "min", "max"}


def test_evaluate_times_on_onnxruntime_and_the_result_round_trips(capsys):
    from qtradeoff import cli
    from qtradeoff.core.measurement.result import Result

    code = cli.main(["evaluate", "digits_mlp", "--runtime", "torch,onnxruntime", "--latency", "measured",
                     "--eval-size", "64", "--batch", "4", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    by_runtime = data["latency_by_runtime"]
    assert set(by_runtime) == {"onnxruntime", "onnxruntime/fp32"}
    assert [s["batch"] for s in by_runtime["onnxruntime"]] == [1, 4]
    assert all(s["median_ms"] > 0 and s["repeats"] > 1 and "noisy" in s for s in by_runtime["onnxruntime"])
    again = Result.from_dict(data)
    assert again.latency_by_runtime["onnxruntime"][1].batch == 4
    assert Result.from_dict({k: v for k, v in data.items() if k != "latency_by_runtime"}).latency_by_runtime == {}


def test_unknown_runtime_is_a_usage_error():
    from qtradeoff import cli
    from qtradeoff.core.errors import EXIT_USAGE

    assert cli.main(["evaluate", "digits_mlp", "--runtime", "tensorrt"]) == EXIT_USAGE


def test_evaluate_times_on_openvino_too(capsys):
    pytest.importorskip("openvino")
    from qtradeoff import cli

    code = cli.main(["evaluate", "digits_mlp", "--runtime", "onnxruntime,openvino", "--latency", "measured",
                     "--eval-size", "64", "--batch", "4", "--json"])
    assert code == 0
    by_runtime = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["latency_by_runtime"]
    assert set(by_runtime) == {"onnxruntime", "onnxruntime/fp32", "openvino", "openvino/fp32"}
    assert [s["batch"] for s in by_runtime["openvino"]] == [1, 4]
    assert all(s["median_ms"] > 0 and s["repeats"] > 1 for s in by_runtime["openvino"] + by_runtime["openvino/fp32"])


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_openvino_runs_the_exported_file_to_the_simulated_accuracy(name, tmp_path):
    pytest.importorskip("openvino")
    from qtradeoff.core.measurement import runtime_latency

    engine = EngineSpec(name).build()
    inputs, labels = engine.data.eval_inputs, engine.data.eval_labels
    config = _configs(engine)["w8a8"]
    plan = engine.plan(config)
    with torch.no_grad():
        simulated = engine.compressor.simulate(plan)(inputs).argmax(1)
    simulated_accuracy = (simulated == labels).float().mean().item()
    path = onnx_format.write_onnx(engine.compressor, plan, inputs[:1], tmp_path / "w8a8.onnx").path
    outputs = runtime_latency.outputs("openvino", path, inputs.numpy(), threads=1)
    accuracy = float((outputs.argmax(1) == labels.numpy()).mean())
    # OpenVINO runs the QDQ pairs with its own int8 kernels (its rounding and accumulation, not the simulation's)
    assert abs(accuracy - simulated_accuracy) <= 0.01, (accuracy, simulated_accuracy)
    assert float((outputs.argmax(1) == simulated.numpy()).mean()) >= 0.98


def test_runtime_timing_interleaves_blocks_of_every_file():
    from qtradeoff.core.measurement.runtime_latency import time_calls

    now = [0.0]
    calls_seen = []

    def clock():
        return now[0]

    def call(name, cost):
        def run(batch):
            calls_seen.append((name, batch))
            now[0] += cost * batch
        return run

    unit = 1 / 1024  # exact in binary, so block sizes come out exact
    stats = time_calls({"fp32": call("fp32", 4 * unit), "config": call("config", unit)}, (1, 2), rounds=4,
                       min_block_seconds=10 * unit, warmup=1, clock=clock)
    assert stats["fp32"][1].median_ms == pytest.approx(4000 * unit)
    assert stats["config"][2].median_ms == pytest.approx(2000 * unit)
    assert stats["fp32"][2].repeats == 4 and stats["fp32"][2].iqr_ms == pytest.approx(0.0)
    timed = calls_seen[2 * 2 * 2:]  # after warm-up and the block-size probe of each (name, batch)
    first_round = [name for name, _ in dict.fromkeys(timed)][:2]
    assert first_round == ["fp32", "config"]  # the files alternate within a round
    # block sizes: min_block_seconds / per-call time, so a fast file runs more calls per block
    assert timed.count(("config", 1)) == 4 * 10 and timed.count(("fp32", 1)) == 4 * 2
