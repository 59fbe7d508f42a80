"""The per-layer latency profile (issue 18): a measured time per layer for fp32 and the configuration's real
kernels, cancellable between rounds. No timing assertions: only that every layer has its figures."""

from __future__ import annotations

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.engine.layer_profile import LayerProfile, profile_layers
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.result import Cancelled, Progress

INT8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


@pytest.fixture(scope="module")
def engine():
    loaded = load_sample_model("digits_mlp")
    return Engine(loaded, sample_data_for(loaded, eval_size=16, calib_size=16))


def test_profile_returns_a_time_per_layer_for_fp32_and_the_int8_model(engine):
    items = list(profile_layers(engine, INT8, rounds=3, warmup=1, threads=1))
    assert all(isinstance(item, Progress) for item in items[:-1]) and items[-2].done == items[-2].total
    profile = items[-1]
    assert isinstance(profile, LayerProfile) and profile.threads == 1 and profile.rounds == 3
    assert [t.name for t in profile.layers] == list(engine.layer_names)
    for timing in profile.layers:
        assert timing.fp32_ms > 0 and timing.config_ms > 0 and timing.ratio > 0
        assert timing.executed.startswith("int8")
    assert profile.config_total_ms > 0 and profile.fp32_total_ms > 0
    assert "1 thread" in profile.describe() and "3 alternating rounds" in profile.describe()


def test_fp32_is_timed_once_and_a_stop_cancels(engine):
    profile = list(profile_layers(engine, CompressionConfig(), rounds=2, warmup=0, threads=1))[-1]
    assert all(t.ratio == 1.0 for t in profile.layers) and "fp32 model itself" in profile.note
    with pytest.raises(Cancelled):
        list(profile_layers(engine, INT8, rounds=50, threads=1, should_stop=lambda: True))
