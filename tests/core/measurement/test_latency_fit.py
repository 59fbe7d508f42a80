"""The roofline estimate fitted to the model (issue 18: "the roofline estimate is calibrated so that it ranks
configurations the way the measurements do on this machine"): a measured evaluation also times the fp32 and int8
anchors, later estimates reproduce them and say so, a new engine of the same file reads the fit from the cache."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from qtradeoff.core import CompressionConfig, Engine, load_sample_model, sample_data_for
from qtradeoff.core.measurement import latency_fit
from qtradeoff.core.measurement.latency import LatencySettings
from qtradeoff.core.paths import cache_dir

FAST = LatencySettings(batch_sizes=(1, 8), threads=1, warmup=1, min_run_time=0.02, min_repeats=3, max_repeats=6)
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


@pytest.fixture
def engine(tmp_path, monkeypatch):
    for machine in cache_dir().glob("roofline-*.json"):  # the machine calibration is not what is tested here
        shutil.copy(machine, tmp_path)
    monkeypatch.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path))  # a cache of this test's own: no fit yet

    def build():
        loaded = load_sample_model("digits_mlp")
        return Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=32))

    return build


def _estimated(result) -> dict[int, float]:
    return {s.batch: s.median_ms for s in result.latency_estimated}


def test_unfitted_estimates_say_so_and_a_measured_evaluation_fits_both_anchors(engine, tmp_path):
    first = engine()
    before = first.evaluate(W8A8, latency="estimated", latency_settings=FAST)
    fit = before.provenance["roofline"]["fit"]
    assert not fit["fitted"] and "not fitted to this model" in before.provenance["roofline"]["calibration"]

    measured = first.evaluate(CompressionConfig(), latency="both", latency_settings=FAST)
    assert measured.provenance["latency_protocol"]["anchors"] == {"config": "fp32", "anchor:int8": "int8"}
    stored = first.latency_fit(1)
    assert set(stored.measured_ms) == {"fp32", "int8"} and set(stored.measured_ms["int8"]) == {1, 8}
    # the fp32 anchor is the evaluation's own timing of the model
    assert stored.measured_ms["fp32"] == {s.batch: s.median_ms for s in measured.latency_measured}
    # int8: fp32 times its interleaved ratio to fp32
    ratio = {b: v[0] for b, v in stored.ratios["int8"].items()}
    assert stored.measured_ms["int8"] == {b: ms * ratio[b] for b, ms in stored.measured_ms["fp32"].items()}

    for config, family in ((CompressionConfig(), "fp32"), (W8A8, "int8")):
        result = first.evaluate(config, latency="estimated", latency_settings=FAST)
        assert result.provenance["roofline"]["fit"]["fitted"]
        assert "fitted to this model's measured forward times" in result.provenance["roofline"]["calibration"]
        for batch, ms in _estimated(result).items():
            assert ms == pytest.approx(stored.measured_ms[family][batch], rel=1e-9)
    unfitted = _estimated(before)
    assert unfitted != _estimated(first.evaluate(W8A8, latency="estimated", latency_settings=FAST))

    # a new engine of the same file reads the fit from the cache folder, and times no anchor again
    files = list(tmp_path.glob("latency-fit-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["ratios"]["int8"]
    second = engine()
    again = second.evaluate(W8A8, latency="both", latency_settings=FAST)
    # the fp32 model and the configuration (the int8 anchor itself) are timed anyway: both refine the fit
    assert again.provenance["latency_protocol"]["anchors"] == {"fp32": "fp32", "config": "int8"}
    assert again.provenance["latency_protocol"]["models"] == ["fp32", "config"]  # no anchor added
    assert again.provenance["roofline"]["fit"]["fitted"]
    assert all(len(v) == 2 for v in second.latency_fit(1).ratios["int8"].values())


def test_mixed_configurations_interpolate_between_the_anchors_and_unanchored_families_borrow_fp32(engine):
    first = engine()
    first.evaluate(CompressionConfig(), latency="both", latency_settings=FAST)
    anchors = first.latency_fit(1).measured_ms
    names = first.layer_names
    mixed = W8A8.with_layer(names[0], weight={"precision": "fp32"}, activation={"precision": "fp32"})
    result = first.evaluate(mixed, latency="estimated", latency_settings=FAST)
    for batch, ms in _estimated(result).items():  # not an anchor, not far outside them (one more boundary)
        low, high = sorted((anchors["fp32"][batch], anchors["int8"][batch]))
        assert 0.5 * low < ms < 2.0 * high
    fp16 = CompressionConfig().with_defaults(weight={"precision": "fp16"}, activation={"precision": "fp16"})
    result = first.evaluate(fp16, latency="estimated", latency_settings=FAST)
    assert result.provenance["roofline"]["fit"]["borrowed_fp32_factor"] == ["fp16"]
    assert "fp16 scaled as fp32" in result.provenance["roofline"]["calibration"]
    # an estimate at another thread count than the timings' takes their factors, and says so
    two = first.evaluate(W8A8, latency="estimated", latency_settings=dataclasses.replace(FAST, threads=2))
    assert two.provenance["roofline"]["fit"]["fitted"]
    assert "fitted at 1 thread(s), applied to the 2-thread estimate" in two.provenance["roofline"]["calibration"]


def test_a_corrupt_or_foreign_fit_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path))
    key = latency_fit.fit_key("sha", (64,), 1, "x86", "cpu")
    latency_fit.fit_path(key).write_text("{not json")
    assert latency_fit.load_fit(key, 1).measured_ms == {}
    other = latency_fit.LatencyFit("another-key", 1)
    other.record("fp32", 1, 2.0)
    latency_fit.fit_path(key).write_text(json.dumps(other.to_dict()))
    assert latency_fit.load_fit(key, 1).measured_ms == {}
    fit = latency_fit.LatencyFit(key, 1)
    fit.record("fp32", 1, 2.0)
    for ratio in (0.5, 0.6, 0.4):
        fit.record("int8", 1, ratio)
    latency_fit.save_fit(fit)
    assert latency_fit.load_fit(key, 1).measured_ms == {"fp32": {1: 2.0}, "int8": {1: 1.0}}


def test_a_clean_fp32_timing_replaces_noisy_ones_and_later_noisy_ones_are_left_out():
    fit = latency_fit.LatencyFit("k", 1)
    fit.record("fp32", 1, 9.0, noisy=True)  # a busy machine: kept while there is nothing better
    fit.record("fp32", 1, 8.0, noisy=True)
    assert fit.measured_ms["fp32"][1] == 8.5
    fit.record("fp32", 1, 2.0)
    fit.record("fp32", 1, 7.0, noisy=True)
    fit.record("fp32", 1, 2.2)
    assert fit.fp32_ms[1] == [2.0, 2.2]
    again = latency_fit.LatencyFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again.fp32_ms == fit.fp32_ms and again.fp32_noisy == set()
