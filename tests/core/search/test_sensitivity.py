"""Per-layer sensitivity: one layer changed at a time, drops match full evaluation, cancellable, cached on disk."""

from __future__ import annotations

import json

import pytest
import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.search.sensitivity import (
    LayerSensitivity,
    SensitivityProgress,
    SensitivityReport,
    SensitivitySettings,
    analyze,
    quantized_layer,
    sensitivity_iter,
)

SETTINGS = SensitivitySettings(bits=(8, 4, 2), sparsities=(0.5,))


@pytest.fixture(scope="module")
def session():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=120))


@pytest.fixture(scope="module")
def report(session, tmp_path_factory):
    return analyze(session, settings=SETTINGS, cache_dir=tmp_path_factory.mktemp("sens"))


def test_every_layer_every_setting(session, report):
    assert [item.layer for item in report.layers] == list(session.layer_names)
    assert report.metric == "accuracy" and 0.9 < report.baseline <= 1.0
    for item in report.layers:
        assert set(item.quant_drop) == {8, 4, 2} and set(item.prune_drop) == {0.5}
        assert abs(item.quant_drop[8]) <= 2.0  # int8 weights barely matter on this model
    assert max(item.quant_drop[2] for item in report.layers) > 10.0  # 2-bit breaks some layer
    assert set(report.scores()) == set(session.layer_names)
    first = report.layers[0]
    drops = [*first.quant_drop.values(), *first.prune_drop.values()]
    assert report.scores()[first.layer] == pytest.approx(sum(drops) / len(drops))  # mean over every setting
    assert len(set(report.scores().values())) > 1  # the summary tells layers apart


def test_drop_matches_a_full_evaluation(session, report):
    layer = session.layer_names[3]
    config = quantized_layer(CompressionConfig(), layer, 2, SETTINGS)
    with torch.no_grad():
        logits = session.compressor.apply(config)(session.data.eval_inputs)
    accuracy = int((logits.argmax(1) == session.data.eval_labels).sum()) / len(logits)
    assert report.by_layer()[layer].quant_drop[2] == pytest.approx(100 * (report.baseline - accuracy), abs=1e-9)


def test_cached_on_disk_per_model_data_and_settings(session, report, tmp_path):
    first = analyze(session, settings=SETTINGS, cache_dir=tmp_path, layers=session.layer_names[-2:])
    assert not first.from_cache
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["schema"] == "qtradeoff.sensitivity/2"
    calls = session.evaluator.stats.calls
    again = analyze(session, settings=SETTINGS, cache_dir=tmp_path, layers=session.layer_names[-2:])
    assert again.from_cache and again.layers == first.layers
    assert session.evaluator.stats.calls == calls  # nothing evaluated
    other = analyze(session, settings=SensitivitySettings(bits=(8,), sparsities=(0.25,)), cache_dir=tmp_path,
                    layers=session.layer_names[-1:])
    assert not other.from_cache and len(list(tmp_path.glob("*.json"))) == 2


def test_stream_and_stop(session, tmp_path):
    seen = []

    def should_stop():
        return len([x for x in seen if isinstance(x, LayerSensitivity)]) >= 1

    for item in sensitivity_iter(session, settings=SETTINGS, cache_dir=tmp_path, should_stop=should_stop):
        seen.append(item)
    progress = [x for x in seen if isinstance(x, SensitivityProgress)]
    assert progress and progress[0].total == 4 * len(session.layer_names)
    assert not any(isinstance(x, SensitivityReport) for x in seen)
    assert not list(tmp_path.glob("*.json"))  # an unfinished analysis is not cached
    from qtradeoff.core.engine.measure import Cancelled

    with pytest.raises(Cancelled):
        analyze(session, settings=SETTINGS, cache_dir=tmp_path, should_stop=lambda: True)


def test_report_round_trip_and_validation(report):
    assert SensitivityReport.from_dict(json.loads(json.dumps(report.to_dict()))).layers == report.layers
    with pytest.raises(ValueError):
        SensitivitySettings(bits=(1,))
    with pytest.raises(ValueError):
        SensitivitySettings(sparsities=(1.0,))
