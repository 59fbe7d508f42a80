"""A measured evaluation times fp32 beside the configuration and says how (issue 19); no timing assertions."""

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.latency import LatencySettings
from qtradeoff.core.measurement.result import Result

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
FAST = LatencySettings(batch_sizes=(1, 4), threads=1, min_run_time=0.02, min_repeats=3, warmup=1)


def test_measured_latency_carries_its_ratio_to_fp32_and_the_protocol():
    loaded = load_sample_model("digits_mlp")
    engine = Engine(loaded, sample_data_for(loaded, calib_size=64, eval_size=64))
    result = engine.evaluate(W8A8, latency="measured", latency_settings=FAST)
    assert [s.batch for s in result.latency_measured] == [1, 4]
    assert all(s.fp32_ratio is not None and s.fp32_ratio > 0 for s in result.latency_measured)
    protocol = result.provenance["latency_protocol"]
    assert protocol["protocol"] == "interleaved" and protocol["models"] == ["fp32", "config"]
    assert protocol["threads"] == 1 == result.provenance["threads"] and protocol["reason"] == "requested"
    assert set(protocol["fp32_ms"]) == {"1", "4"} and protocol["rounds"]["1"] >= 3
    # the rounds used, the disturbed ones dropped and why, why the rounds stopped and how far the ratio may be off
    assert protocol["budget_s"] == FAST.budget_seconds() and "dropped" in protocol["drop_rule"]
    assert 0 <= protocol["dropped"]["1"] <= protocol["rounds"]["1"] // 2
    assert set(protocol["stopped"].values()) <= {"converged", "budget", "max_rounds"}
    for stats in result.latency_measured:
        assert stats.ratio_spread == pytest.approx(protocol["ratio_ci"][str(stats.batch)], abs=1e-4)
        assert stats.ratio_converged == (protocol["stopped"][str(stats.batch)] == "converged")
        assert stats.repeats == protocol["rounds"][str(stats.batch)] - protocol["dropped"][str(stats.batch)]
    assert result.provenance["int8_boundaries"] == ["quantize:layers_0", "dequantize:layers_4"]
    again = Result.from_dict(result.to_dict())
    assert again.latency_measured == result.latency_measured

    fp32 = engine.evaluate(CompressionConfig(), latency="measured", latency_settings=FAST)
    assert fp32.provenance["latency_protocol"]["models"] == ["config"]  # the base model itself: nothing to pair
    assert all(s.fp32_ratio is None for s in fp32.latency_measured)
