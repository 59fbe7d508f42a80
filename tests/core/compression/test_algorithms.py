"""Post-training algorithms: lookup-table quantization, cross-layer equalization, SmoothQuant, activation pruning.

Each is checked against an independent reference on small cases (see issue 17's "Done when")."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch
from torch import nn

from qtradeoff.core.compression.algorithms import activation_prune, equalization, lut, smoothquant
from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig, ConfigError, from_json, json_schema, to_json
from qtradeoff.core.export import unsupported_algorithms
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.memory import unique_state, weight_memory

BASE = CompressionConfig()
CLE = BASE.with_equalization("cle")


@pytest.fixture(scope="module")
def cnn():
    loaded = load_sample_model("digits_cnn")
    data = sample_data_for(loaded, calib_size=64, eval_size=128)
    return loaded, data, Compressor(loaded.module, data.calib_inputs)


def _run(compressor, config, inputs):
    with torch.no_grad():
        return compressor.apply(config)(inputs)


def _accuracy(compressor, config, data) -> float:
    return float((_run(compressor, config, data.eval_inputs).argmax(1) == data.eval_labels).float().mean())


# -- lookup tables ----------------------------------------------------------------------------------------------

def test_kmeans_recovers_well_separated_clusters_and_is_deterministic():
    torch.manual_seed(0)
    centres = torch.tensor([-2.0, -0.5, 0.25, 3.0])
    values = (centres.repeat_interleave(250) + 0.01 * torch.randn(1000)).reshape(1, -1)
    codebook = lut.kmeans_rows(values, 4)
    assert codebook.shape == (1, 4)
    assert torch.allclose(codebook.sort(dim=1).values[0], centres, atol=0.01)
    assert torch.equal(codebook, lut.kmeans_rows(values, 4))


@pytest.mark.parametrize("per_channel", [True, False])
def test_lut_weights_take_at_most_2_bits_values_and_pruned_zeros_stay_exact(per_channel):
    torch.manual_seed(1)
    weight = torch.randn(8, 4, 3, 3)
    mask = weight.abs() > 0.5
    decoded, codebooks, indices = lut.lut_quantize(weight, 3, mask, per_channel=per_channel)
    assert codebooks.shape == ((8 if per_channel else 1), 8) and int(indices.max()) < 8
    rows = decoded.reshape(8, -1) if per_channel else decoded.reshape(1, -1)
    assert all(len(torch.unique(row)) <= 8 for row in rows)
    assert torch.equal(decoded[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(codebooks.to(torch.float16).to(torch.float32), codebooks)  # stored as fp16, exactly


def test_lut_memory_counts_indices_and_codebooks_exactly(cnn):
    loaded, _, compressor = cnn
    state = unique_state(loaded.module)
    for granularity, per_layer_codebooks in (("per_channel", lambda w: w.shape[0]), ("per_tensor", lambda w: 1)):
        config = BASE.with_defaults(weight={"precision": "lut4", "granularity": granularity})
        memory = weight_memory(state, compressor.plan(config))
        for tensor in memory.tensors:
            weight = state[tensor.name]
            assert tensor.payload_bytes == math.ceil(weight.numel() * 4 / 8)
            assert tensor.qparam_bytes == per_layer_codebooks(weight) * 16 * lut.CODEBOOK_BYTES


def test_lut8_is_close_to_fp32_and_lut_beats_int_at_three_bits(cnn):
    _, data, compressor = cnn
    reference = _run(compressor, BASE, data.eval_inputs)
    lut8 = _run(compressor, BASE.with_defaults(weight={"precision": "lut8"}), data.eval_inputs)
    sqnr = 10 * math.log10(float(reference.square().mean() / (lut8 - reference).square().mean()))
    assert sqnr > 30
    assert _accuracy(compressor, BASE.with_defaults(weight={"precision": "lut3"}), data) >= \
        _accuracy(compressor, BASE.with_defaults(weight={"precision": "int3"}), data)


# -- cross-layer equalization -----------------------------------------------------------------------------------

def test_cle_finds_the_pairs_of_digits_cnn_and_keeps_its_fp32_function(cnn):
    _, data, compressor = cnn
    pairs = compressor.cle_pairs()
    assert [(p.first, p.second) for p in pairs] == [
        ("features.0.conv", "features.1.conv"), ("features.1.conv", "features.2.conv"),
        ("features.2.conv", "features.3.conv"), ("features.3.conv", "features.4.conv"),
        ("features.4.conv", "features.5.conv"), ("features.5.conv", "classifier.2")]
    reference = _run(compressor, BASE, data.eval_inputs)
    equalized = _run(compressor, CLE, data.eval_inputs)
    assert float((equalized - reference).abs().max()) <= 1e-5 * float(reference.abs().max())


def test_cle_equalizes_channel_ranges_and_keeps_a_leaky_relu_mlp_exact():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.1), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[0].weight[:, :] *= torch.logspace(-2, 1, 8).unsqueeze(1)  # very unequal output channels
    inputs = torch.randn(32, 6)
    compressor = Compressor(model, inputs)
    assert [(p.first, p.second) for p in compressor.cle_pairs()] == [("0", "2"), ("2", "4")]
    with torch.no_grad():
        assert float((_run(compressor, CLE, inputs) - model(inputs)).abs().max()) < 1e-5
    weights, _, _ = equalization.equalize({"a": model[0].weight, "b": model[2].weight},
                                          {"a": model[0].bias, "b": model[2].bias},
                                          [equalization.Pair("a", "b")], sweeps=1)
    r1, r2 = equalization.output_absmax(weights["a"]), equalization.input_absmax(weights["b"])
    assert torch.allclose(r1, r2, rtol=1e-5)


def test_cle_stops_at_ops_that_do_not_commute_with_channel_scaling():
    model = nn.Sequential(nn.Linear(4, 4), nn.Hardswish(), nn.Linear(4, 4), nn.ReLU6(), nn.Linear(4, 2)).eval()
    assert Compressor(model, torch.randn(4, 4)).cle_pairs() == []


# -- SmoothQuant ------------------------------------------------------------------------------------------------

def test_smoothing_scales_follow_the_paper_formula():
    act, weight = torch.tensor([4.0, 1.0, 0.0]), torch.tensor([1.0, 4.0, 2.0])
    s = smoothquant.smoothing_scales(act, weight, 0.5)
    assert torch.allclose(s, torch.tensor([2.0, 0.5, 1.0]))  # sqrt(a) / sqrt(w); a dead channel keeps 1


def test_smoothquant_keeps_the_fp32_function_and_flattens_the_activation_range(cnn):
    _, data, compressor = cnn
    reference = _run(compressor, BASE, data.eval_inputs)
    for config in (BASE.with_defaults(activation={"smoothquant": 0.5}),
                   CLE.with_defaults(activation={"smoothquant": 0.8})):
        out = _run(compressor, config, data.eval_inputs)
        assert float((out - reference).abs().max()) <= 1e-5 * float(reference.abs().max())
    absmax = compressor._statistics()[0]["features.3.conv"]
    plan = compressor.plan(BASE.with_defaults(activation={"smoothquant": 0.5}))
    divisor = compressor._transformed("features.3.conv", plan["features.3.conv"].transform)[1]
    smoothed = absmax / divisor
    assert float(smoothed.max() / smoothed.median()) < float(absmax.max() / absmax.median())


def test_smoothquant_helps_4_bit_activations_on_digits_cnn(cnn):
    _, data, compressor = cnn
    w8a4 = BASE.with_defaults(weight={"precision": "int8"}, activation={"precision": "int4"})
    assert _accuracy(compressor, w8a4.with_defaults(activation={"smoothquant": 0.8}), data) >= \
        _accuracy(compressor, w8a4, data)


# -- activation pruning -----------------------------------------------------------------------------------------

def test_activation_mask_prunes_the_lowest_scores_stably():
    mask = activation_prune.activation_mask((4, 2), torch.tensor([3.0, 1.0, 1.0, 2.0]), 0.5)
    assert mask[:, 0].tolist() == [True, False, False, True]


@pytest.mark.parametrize("criterion", ["mean_abs", "apoz"])
def test_activation_pruning_removes_the_channels_dead_on_calibration_data(criterion):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3)).eval()
    dead = [1, 4]
    with torch.no_grad():
        model[0].bias.fill_(0.1)
        for channel in dead:
            model[0].weight[channel] = 0.0
            model[0].bias[channel] = 0.0 if criterion == "mean_abs" else -5.0
    inputs = torch.rand(16, 2, 6, 6)
    compressor = Compressor(model, inputs)
    config = BASE.with_layer("0", prune={"method": "activation", "sparsity": 2 / 6, "criterion": criterion})
    plan = compressor.plan(config)
    kept = plan["0"].masks["weight"].reshape(6, -1).all(dim=1)
    assert [c for c in range(6) if not kept[c]] == dead
    assert plan["0"].sparsity == pytest.approx(2 / 6)
    structured = compressor.plan(BASE.with_layer("0", prune={"method": "structured", "sparsity": 2 / 6}))
    memory = weight_memory(unique_state(model), plan).weight_bytes
    assert memory == weight_memory(unique_state(model), structured).weight_bytes  # counted as structured


# -- configuration, caching, exports ----------------------------------------------------------------------------

def test_new_fields_round_trip_and_validate_against_the_schema():
    config = (CLE.with_defaults(weight={"precision": "lut4"}, activation={"precision": "int8", "smoothquant": 0.6},
                                prune={"method": "activation", "sparsity": 0.25, "criterion": "apoz"})
              .with_layer("fc", weight={"precision": "lut2", "granularity": "per_tensor"}))
    text = to_json(config)
    assert from_json(text) == config and from_json(text).key() == config.key()
    jsonschema.validate(json.loads(text), json_schema(), cls=jsonschema.Draft202012Validator)
    assert BASE.key() != CLE.key()
    with pytest.raises(ConfigError, match=r"\$\.equalization"):
        from_json(json.dumps({"schema": "qtradeoff.config/1", "equalization": "aimet"}))
    with pytest.raises(ConfigError, match="sparsity"):
        BASE.with_defaults(prune={"method": "activation"})
    with pytest.raises(ConfigError, match="smoothquant"):
        BASE.with_defaults(activation={"smoothquant": 1.5})


def test_moving_a_precision_does_not_recompute_the_float_transforms(cnn):
    _, data, compressor = cnn
    config = CLE.with_defaults(activation={"precision": "int8", "smoothquant": 0.5})
    _run(compressor, config.with_defaults(weight={"precision": "int8"}), data.eval_inputs[:4])
    passes, cle = compressor.stats.calibration_passes, compressor._cle_result
    for bits in (6, 4, 3):
        _run(compressor, config.with_defaults(weight={"precision": f"int{bits}"}), data.eval_inputs[:4])
    assert compressor.stats.calibration_passes == passes and compressor._cle_result is cle


def test_exports_refuse_what_they_cannot_write_yet(cnn):
    _, _, compressor = cnn
    assert unsupported_algorithms(compressor.plan(BASE.with_defaults(weight={"precision": "int4"}))) == ""
    lut4 = compressor.plan(BASE.with_defaults(weight={"precision": "lut4"}))
    assert "lookup-table" in unsupported_algorithms(lut4, "torch-int8") and unsupported_algorithms(lut4, "packed") == ""
    assert "equalization" in unsupported_algorithms(compressor.plan(CLE), "onnx")
    assert unsupported_algorithms(compressor.plan(CLE), "packed") == ""
    smoothed = compressor.plan(BASE.with_defaults(activation={"smoothquant": 0.5}))
    assert "SmoothQuant" in unsupported_algorithms(smoothed, "torch-int8")


def test_packed_export_stores_lut_indices_and_codebooks_and_int8_refuses_them(tmp_path):
    from qtradeoff.core.engine.engine import Engine
    from qtradeoff.core.export import ExportError, export
    from qtradeoff.core.export.packed import load_packed

    loaded = load_sample_model("digits_mlp")
    engine = Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=64))
    config = BASE.with_defaults(weight={"precision": "lut4"}, activation={"precision": "int8"}).with_layer(
        "net.4" if "net.4" in engine.compressor.layer_names else engine.compressor.layer_names[-1],
        weight={"precision": "lut3", "granularity": "per_tensor"}, prune={"method": "magnitude", "sparsity": 0.5})
    out = tmp_path / "lut.safetensors"
    report = export(engine, config, "packed", out, latency_batches=(1,), repeats=1)
    assert report.passed, report.failures
    assert report.file_bytes <= report.weight_bytes * 1.01 + 4096
    with torch.inference_mode():
        rebuilt = load_packed(out)(engine.data.eval_inputs[:16])
    assert torch.allclose(rebuilt, engine.logits(config)[:16], rtol=0, atol=1e-4)
    with pytest.raises(ExportError, match="lookup-table weights"):
        export(engine, config, "torch-int8", tmp_path / "lut.pt")
    with pytest.raises(ExportError, match="cross-layer equalization"):
        export(engine, BASE.with_equalization("cle"), "torch-int8", tmp_path / "cle.pt")
    assert not (tmp_path / "lut.pt").exists() and not (tmp_path / "cle.pt").exists()


def test_packed_export_carries_cle_and_smoothquant(tmp_path):
    from qtradeoff.core.engine.engine import Engine
    from qtradeoff.core.export import export
    from qtradeoff.core.export.packed import load_packed

    loaded = load_sample_model("digits_cnn")
    engine = Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=64))
    config = (CLE.with_defaults(weight={"precision": "int4"}, activation={"precision": "int8", "smoothquant": 0.8})
              .with_layer("features.0.conv", skip=True))
    out = tmp_path / "cle.safetensors"
    report = export(engine, config, "packed", out, latency_batches=(1,), repeats=1)
    assert report.passed, report.failures
    with torch.inference_mode():
        rebuilt = load_packed(out)(engine.data.eval_inputs[:16])
    assert torch.allclose(rebuilt, engine.logits(config)[:16], rtol=0, atol=1e-4)


def test_the_cut_cache_tells_equalized_configurations_apart():
    from qtradeoff.core.engine.engine import Engine

    loaded = load_sample_model("digits_cnn")
    engine = Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=64))
    int3 = BASE.with_defaults(weight={"precision": "int3"})
    for config in (int3, int3.with_equalization("cle"),
                   int3.with_equalization("cle").with_layer("classifier.2", weight={"precision": "int8"})):
        cached, full = engine.evaluate(config, latency="none"), engine.evaluate_full(config, latency="none")
        assert (cached.accuracy, cached.sqnr_db, cached.weight_bytes) == (full.accuracy, full.sqnr_db,
                                                                          full.weight_bytes)


def test_lut_latency_is_an_estimate_with_its_assumption_and_runs_fp32_on_real_kernels():
    from qtradeoff.core.measurement.realquant import planned_precision
    from qtradeoff.core.measurement.roofline import ASSUMPTIONS, compute_family

    settings = BASE.with_defaults(weight={"precision": "lut4"}, activation={"precision": "int8"}).resolve("x")
    assert compute_family(settings) == ("fp32", 1.0, "lut") and "lut" in ASSUMPTIONS
    precision, why = planned_precision(settings, "Conv2d")
    assert precision == "fp32" and "no CPU kernel" in why
