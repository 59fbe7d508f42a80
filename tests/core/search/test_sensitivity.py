"""Per-layer sensitivity: one layer changed at a time, drops match full evaluation, cancellable, cached on disk."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine import incremental
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading import data as data_mod
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


class _OneTrialAtATime:
    """An engine without ``score_variants``: the analysis then scores each trial on its own (the unbatched path)."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        if name == "score_variants":
            raise AttributeError(name)
        return getattr(self._engine, name)


def _batched_and_alone(engine, monkeypatch, **kwargs):
    """The analysis with each layer's trials stacked through the downstream, and one trial at a time; also the
    layers whose trials really ran batched (``forward_variants`` gave outputs instead of declining)."""
    batched_layers = []
    forward_variants = engine.evaluator.forward_variants

    def spy(layer, *args, **kw):
        outputs = forward_variants(layer, *args, **kw)
        if outputs is not None:
            batched_layers.append(layer)
        return outputs

    monkeypatch.setattr(engine.evaluator, "forward_variants", spy)
    batched = analyze(engine, use_cache=False, **kwargs)
    monkeypatch.undo()
    alone = analyze(_OneTrialAtATime(engine), use_cache=False, **kwargs)
    return batched, alone, batched_layers


W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


@pytest.mark.parametrize("base", [CompressionConfig(), W8A8], ids=["fp32", "w8a8"])
def test_batched_trials_give_exactly_the_drops_of_one_trial_at_a_time(session, monkeypatch, base):
    # w8a8: each downstream layer fake-quantizes its input with ranges calibrated once on the fp32 model; the
    # trials' simulated models hold equivalent copies of those layers' folded BatchNorms, and the stacked run must
    # use the same parameters as each trial alone
    settings = SensitivitySettings(bits=(4, 2), sparsities=(0.5,))
    names = session.layer_names
    layers = (names[0], names[len(names) // 2], names[-1])
    batched, alone, batched_layers = _batched_and_alone(session, monkeypatch, settings=settings, layers=layers,
                                                        base_config=base)
    assert batched_layers == list(layers)  # every layer's trials went through the batched path
    assert batched.baseline == alone.baseline
    assert batched.layers == alone.layers  # drops equal as floats: the same top-1 decisions on every sample


def test_trials_with_large_activations_run_one_per_batch_with_the_same_drops(session, monkeypatch):
    # a stacking budget below one variant's values: every trial runs the downstream on its own batch
    monkeypatch.setattr(incremental, "_STACK_BYTES", 1)
    settings = SensitivitySettings(bits=(4, 2), sparsities=(0.5,))
    layers = (session.layer_names[0], session.layer_names[-1])
    batched, alone, batched_layers = _batched_and_alone(session, monkeypatch, settings=settings, layers=layers)
    assert batched_layers == list(layers)
    assert batched.layers == alone.layers


class _ResidualNet(nn.Module):
    """Two residual blocks (skip adds across layer cuts, an in-place ReLU) between a conv stem and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.block1 = nn.Conv2d(8, 8, 3, padding=1)
        self.block2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        x = self.relu(self.block1(x)) + x
        x = torch.relu(self.block2(x)) + x
        return self.head(x.mean(dim=(2, 3)))


def test_batched_trials_on_a_residual_model_give_exactly_the_drops_of_one_trial_at_a_time(monkeypatch):
    torch.manual_seed(0)
    module = _ResidualNet().eval()
    with torch.no_grad():
        module.head.bias.zero_()  # else the bias alone decides: one class for every sample, nothing to lose
    calib, inputs = torch.randn(16, 3, 8, 8), torch.randn(96, 3, 8, 8)
    with torch.no_grad():
        labels = module(inputs).argmax(1)
    labels[::5] = (labels[::5] + 1) % 4  # a baseline below 100 %: drops can be negative too
    data = data_mod.EvalData("residual", calib, None, inputs, labels, 4, data_mod.fingerprint(calib, inputs, labels))
    engine = Engine(SimpleNamespace(module=module), data)
    settings = SensitivitySettings(bits=(8, 4, 3, 2), sparsities=(0.5, 0.75))
    batched, alone, batched_layers = _batched_and_alone(engine, monkeypatch, settings=settings)
    assert batched_layers == list(engine.layer_names) == ["stem", "block1", "block2", "head"]
    assert batched.layers == alone.layers
    assert any(drop != 0.0 for item in batched.layers for drop in item.quant_drop.values())  # not a vacuous check


class _ReversedBackend:
    """A pool stand-in: runs every job on ``engine`` here but reports them in reverse order (the base score, the
    first job, last), as two workers finishing unequal jobs may."""

    workers = 2

    def __init__(self, engine):
        self.engine = engine
        self.kinds: list[str] = []

    def run(self, jobs, *, should_stop=lambda: False, depth=None):
        done = [(index, job, job.run(self.engine), None) for index, job in enumerate(jobs)]
        self.kinds = [type(job).__name__ for _, job, _, _ in done]
        yield from reversed(done)


def test_a_pool_reporting_in_any_order_gives_the_report_made_here(session, report):
    backend = _ReversedBackend(session)
    spread = analyze(session, settings=SETTINGS, backend=backend, use_cache=False)
    assert backend.kinds[0] == "Score" and set(backend.kinds[1:]) == {"LayerTrials"}  # the base is the pool's too
    assert spread.baseline == report.baseline and spread.layers == report.layers
