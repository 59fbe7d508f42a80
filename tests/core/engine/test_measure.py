"""evaluate / evaluate_iter: result contents, JSON round trip, progress, cancellation, and sim-vs-real truthfulness."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.engine.measure import Cancelled, Progress, Result, evaluate, evaluate_iter, sqnr_db, wilson_interval
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.latency import LatencySettings
from qtradeoff.core.measurement.realquant import build_real_model

FAST = LatencySettings(batch_sizes=(1, 8), threads=1, min_run_time=0.02, warmup=1, min_repeats=3)
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


@pytest.fixture(scope="module")
def cnn():
    loaded = load_sample_model("digits_cnn")
    return loaded, sample_data_for(loaded, eval_size=120, calib_size=64)


@pytest.fixture(scope="module")
def roofline_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path_factory.mktemp("roofline")))
    yield
    mp.undo()


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(95, 100)
    assert lo == pytest.approx(0.8883, abs=1e-4) and hi == pytest.approx(0.9785, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_exact_mcnemar_p_is_the_two_sided_binomial_test_of_the_discordant_samples():
    from scipy.stats import binomtest

    from qtradeoff.core.measurement.result import mcnemar_exact_p

    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(4, 2) == pytest.approx(44 / 64)  # 2 * (C(6,0) + C(6,1) + C(6,2)) / 2^6
    for gained, lost in ((5, 0), (0, 9), (3, 3), (12, 30), (1, 2)):
        assert mcnemar_exact_p(gained, lost) == pytest.approx(binomtest(gained, gained + lost, 0.5).pvalue)


def test_sqnr():
    ref = torch.tensor([[3.0, 4.0]])
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(ref, ref * 0.9) == pytest.approx(20.0)
    assert sqnr_db(ref, torch.tensor([[float("nan"), 0.0]])) == -math.inf


def test_full_result_round_trips_through_json(cnn, roofline_cache):
    loaded, data = cnn
    config = W8A8.with_layer("features.3.conv", weight={"precision": "int4"},
                             prune={"method": "magnitude", "sparsity": 0.5})
    result = evaluate(loaded, data, config, latency="both", latency_settings=FAST)
    assert result.labelled and result.eval_samples == 120
    assert 0.8 < result.accuracy <= 1 and result.accuracy_ci95[0] <= result.accuracy <= result.accuracy_ci95[1]
    assert result.top5 >= result.accuracy
    assert 0 < result.agreement <= 1 and math.isfinite(result.sqnr_db)
    assert 0 < result.weight_bytes < result.fp32_weight_bytes / 3
    assert result.peak_activation_bytes > 0
    assert [s.batch for s in result.latency_measured] == [1, 8]
    assert [s.batch for s in result.latency_estimated] == [1, 8]
    assert all(s.repeats == 0 and s.iqr_ms == 0 for s in result.latency_estimated)
    assert result.executed_precisions["features.3.conv"] == "int8" and "int4" in result.measured_note
    assert result.latency_ms(8) == result.latency_measured[1].median_ms
    assert result.latency_ms(8, measured=False) == result.latency_estimated[1].median_ms
    prov = result.provenance
    for key in ("torch", "cpu", "threads", "batch_sizes", "eval_samples", "calib_samples", "seed", "started",
                "finished", "qtradeoff"):
        assert key in prov
    assert prov["roofline"]["estimated"] is True and prov["roofline"]["calibration"].startswith("calibrated on")
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert Result.from_dict(json.loads(text)) == result


def test_fp32_config_is_the_base_model(cnn):
    loaded, data = cnn
    result = evaluate(loaded, data, CompressionConfig(), latency="none")
    assert result.agreement == 1.0 and result.sqnr_db == math.inf
    assert result.to_dict()["sqnr_db"] is None
    broken = dataclasses.replace(result, sqnr_db=-math.inf)
    assert Result.from_dict(json.loads(json.dumps(broken.to_dict(), allow_nan=False))) == broken
    assert result.weight_bytes == result.fp32_weight_bytes
    assert result.latency_measured == () and result.latency_estimated == ()


def test_unlabelled_data_reports_fidelity_only(cnn):
    loaded, data = cnn
    unlabelled = dataclasses.replace(data, eval_labels=None, calib_labels=None, fingerprint=data.fingerprint + "u")
    result = evaluate(loaded, unlabelled, W8A8, latency="none")
    assert not result.labelled
    assert result.accuracy is None and result.top5 is None and result.accuracy_ci95 is None
    assert result.agreement > 0.9


def test_progress_is_monotonic_and_deduplicated(cnn):
    loaded, data = cnn
    items = list(evaluate_iter(loaded, data, W8A8, latency="measured", latency_settings=FAST, eval_batch=16))
    progress = [i for i in items if isinstance(i, Progress)]
    assert isinstance(items[-1], Result) and all(isinstance(i, Progress) for i in items[:-1])
    percents = [round(100 * p.fraction) for p in progress]
    assert percents == sorted(set(percents)) and percents[-1] == 100
    assert {"accuracy", "latency (measured)"} <= {p.stage for p in progress}


def test_cancellation_between_batches(cnn):
    loaded, data = cnn
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        evaluate(loaded, data, W8A8, should_stop=stop_after_three, latency="none", eval_batch=8)
    items = list(evaluate_iter(loaded, data, W8A8, should_stop=lambda: True))
    assert items == []


def test_an_engine_reuses_its_caches(cnn):
    loaded, data = cnn
    engine = Engine(loaded, data)
    engine.evaluate(W8A8, latency="none")
    before = engine.compressor.stats.weight_computations
    engine.evaluate(W8A8.with_layer("classifier.2", weight={"precision": "int4"}), latency="none")
    assert engine.compressor.stats.weight_computations == before + 1


@pytest.mark.slow
@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp", "mobilenet_v3_small_digits"])
def test_simulation_agrees_with_real_int8(name, calibration):
    """The truthfulness bar: all-int8 fake-quant accuracy within 0.5 points of the real int8 kernels'."""
    loaded = load_sample_model(name)
    data = sample_data_for(loaded)
    config = CompressionConfig().with_defaults(
        weight={"precision": "int8", "granularity": "per_channel", "symmetric": True},
        activation={"precision": "int8", "calibration": calibration})
    compressor = Compressor(loaded.module, data.calib_inputs)
    simulated = Engine(loaded, data, compressor=compressor).evaluate(config, latency="none")
    real = build_real_model(loaded.module, compressor.plan(config), data.calib_inputs)
    assert real.converted and set(real.executed_precisions.values()) == {"int8"}
    with torch.inference_mode():
        real_accuracy = float((real.module(data.eval_inputs).argmax(1) == data.eval_labels).float().mean())
    assert abs(simulated.accuracy - real_accuracy) * 100 <= 0.5


def test_cli_evaluate_json_and_errors(capsys, tmp_path):
    from qtradeoff.cli import main

    config = tmp_path / "w8a8.json"
    config.write_text(json.dumps({"schema": "qtradeoff.config/1",
                                  "defaults": {"weight": {"precision": "int8"}, "activation": {"precision": "int8"}}}))
    assert main(["evaluate", "digits_mlp", "--config", str(config), "--latency", "none", "--eval-size", "60",
                 "--json"]) == 0
    result = Result.from_dict(json.loads(capsys.readouterr().out))
    assert result.eval_samples == 60 and result.config.resolve("layers.0").weight.precision == "int8"
    assert main(["evaluate", "digits_mlp", "--latency", "none", "--eval-size", "60"]) == 0
    assert "accuracy (top-1)" in capsys.readouterr().out
    exported = tmp_path / "chosen.json"
    assert main(["evaluate", "digits_mlp", "--config", str(config), "--latency", "estimated", "--eval-size", "60",
                 "--export", str(exported)]) == 0
    capsys.readouterr()
    document = json.loads(exported.read_text())
    assert document["model"]["file"] == "digits_mlp.pth" and len(document["model"]["sha256"]) == 64
    assert document["metrics"]["latency_ms"]["measured"] is False  # only the estimate was asked for: marked
    assert {"qtradeoff", "torch", "cpu", "threads", "quantized_engine"} <= set(document["environment"])
    assert main(["evaluate", "digits_mlp", "--latency", "none", "--export", str(tmp_path)]) == 3  # a directory
    assert "folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.pt")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pt" in err
    config.write_text("{not json")
    assert main(["evaluate", "digits_mlp", "--config", str(config)]) != 0
    assert capsys.readouterr().err.count("\n") == 1
