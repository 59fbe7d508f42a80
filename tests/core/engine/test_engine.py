"""The Engine: one plan read by every figure, no shared state between evaluations, rebuildable anywhere."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading

import pytest
import torch

from qtradeoff.core.compression.prune import sparsity_for_threshold
from qtradeoff.core.config import CompressionConfig, to_json
from qtradeoff.core.engine.engine import Engine, EngineSpec
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.memory import weight_memory

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
NUMBERS = ("accuracy", "accuracy_ci95", "top5", "agreement", "sqnr_db", "eval_samples", "weight_bytes",
           "fp32_weight_bytes", "peak_activation_bytes", "config_key")


def _numbers(result) -> dict:
    return {name: getattr(result, name) for name in NUMBERS}


@pytest.fixture(scope="module")
def cnn():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=96))


def test_threshold_label_is_what_is_pruned_and_counted(cnn):
    # features.0.conv is followed by BatchNorm: compression prunes the folded weights, so must the label
    layer, threshold = "features.0.conv", 1.0
    label = cnn.compressor.threshold_sparsity([threshold])[layer][0]
    config = CompressionConfig().with_layer(layer, prune={"method": "magnitude", "threshold": threshold,
                                                          "relative": True})
    plan = cnn.plan(config)
    assert plan[layer].folded and plan[layer].sparsity == pytest.approx(label, abs=1e-12)
    # applied: the simulated model's weights have exactly that fraction of zeros (fp32 values, nothing rounds)
    simulated = cnn.compressor.simulate(plan)
    weight = simulated.get_submodule(layer).weight
    assert int((weight == 0).sum()) / weight.numel() == pytest.approx(label, abs=1e-12)
    # counted: memory keeps exactly the unpruned weights of that layer
    storage = {t.name: t for t in weight_memory(cnn._state, plan).tensors}[f"{layer}.weight"]
    assert storage.index_format != "dense" and 1 - storage.kept / storage.numel == pytest.approx(label, abs=1e-12)
    # and that is not what the unfolded weights would have said (the bug this guards against)
    unfolded = cnn.module.get_submodule(layer).weight
    assert abs(sparsity_for_threshold(unfolded, threshold, True) - label) > 0.05


def test_gui_labels_read_the_folded_weights(cnn):
    from qtradeoff.gui.backend import THRESHOLDS, CoreBackend

    backend = CoreBackend()
    summary = backend._install(cnn.loaded, cnn.data)
    index = THRESHOLDS.index(1.0)
    assert summary.layer_sparsity_curve["features.0.conv"][index] == pytest.approx(
        cnn.compressor.threshold_sparsity([1.0])["features.0.conv"][0], abs=1e-12)


def test_selectors_resolve_like_the_names_they_match(cnn):
    by_type = W8A8.with_layer("type:Linear", weight={"precision": "int4"})
    by_regex = W8A8.with_layer("re:classifier\\..*", weight={"precision": "int4"})
    by_name = W8A8.with_layer("classifier.2", weight={"precision": "int4"})
    results = [cnn.evaluate(config, latency="none") for config in (by_type, by_regex, by_name)]
    keyless = [{k: v for k, v in _numbers(r).items() if k != "config_key"} for r in results]
    assert keyless[0] == keyless[1] == keyless[2]
    assert results[0].weight_bytes < cnn.evaluate(W8A8, latency="none").weight_bytes


def test_evaluation_leaves_global_torch_state_alone(cnn):
    rng = torch.random.get_rng_state()
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    cnn.evaluate(W8A8.with_layer("features.3.conv", prune={"method": "nm"}), latency="both",
                 batch_sizes=(1,))
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.get_num_threads() == threads and torch.backends.quantized.engine == engine
    assert not any(h for m in cnn.module.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


def test_two_engines_evaluated_concurrently_equal_serial_runs():
    mlp_loaded = load_sample_model("digits_mlp")
    cnn_loaded = load_sample_model("digits_cnn")
    configs = [W8A8, W8A8.with_defaults(weight={"precision": "int3"}),
               CompressionConfig().with_defaults(prune={"method": "magnitude", "sparsity": 0.5}), W8A8]

    def engines():
        return [Engine(mlp_loaded, sample_data_for(mlp_loaded, calib_size=32, eval_size=64)),
                Engine(cnn_loaded, sample_data_for(cnn_loaded, calib_size=32, eval_size=64))]

    serial = [[_numbers(engine.evaluate(c, latency="none")) for c in configs] for engine in engines()]
    concurrent_results: list[list[dict] | None] = [None, None]
    start = threading.Barrier(2)
    errors = []

    def run(index: int, engine: Engine) -> None:
        try:
            start.wait()
            concurrent_results[index] = [_numbers(engine.evaluate(c, latency="none")) for c in configs]
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, engine)) for i, engine in enumerate(engines())]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and concurrent_results == serial


def test_one_engine_serves_two_threads_at_once(cnn):
    configs = [W8A8.with_layer(name, weight={"precision": "int4"}) for name in cnn.layer_names[:4]]
    expected = [_numbers(cnn.evaluate_full(c, latency="none")) for c in configs]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda c: _numbers(cnn.evaluate(c, latency="none")), configs))
    assert got == expected


def _evaluate_in_child(spec: EngineSpec, config_json: str) -> dict:
    from qtradeoff.core.config import from_json

    return _numbers(spec.build().evaluate(from_json(config_json), latency="none"))


def test_an_engine_rebuilt_in_a_spawned_process_gives_the_same_result():
    spec = EngineSpec("digits_cnn", calib_size=32, eval_size=64)
    config = W8A8.with_layer("features.1.conv", weight={"precision": "int4"})
    here = _numbers(spec.build().evaluate(config, latency="none"))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        there = pool.submit(_evaluate_in_child, spec, to_json(config)).result(timeout=300)
    assert there == here


def test_tracing_in_one_thread_never_captures_another_threads_forward():
    # torch.fx patches nn.Module for the whole process while it traces; forwards elsewhere must wait for it
    from qtradeoff.core.compression.compress import Compressor

    mlp_loaded, cnn_loaded = load_sample_model("digits_mlp"), load_sample_model("digits_cnn")
    evaluating = Engine(mlp_loaded, sample_data_for(mlp_loaded, calib_size=16, eval_size=64))
    calib = sample_data_for(cnn_loaded, calib_size=16, eval_size=16).calib_inputs
    expected = _numbers(evaluating.evaluate_full(W8A8, latency="none"))
    errors, results = [], []

    def evaluate() -> None:
        try:
            results.extend(_numbers(evaluating.evaluate_full(W8A8, latency="none")) for _ in range(12))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def trace() -> None:
        try:
            for _ in range(4):
                compressor = Compressor(cnn_loaded.module, calib)  # symbolic_trace of the model
                Engine(cnn_loaded, sample_data_for(cnn_loaded, calib_size=16, eval_size=16),
                       compressor=compressor).real_model(compressor.plan(W8A8))  # prepare_fx/convert_fx
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=evaluate), threading.Thread(target=trace)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and results == [expected] * 12
