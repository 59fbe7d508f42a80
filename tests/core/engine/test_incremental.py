"""Incremental evaluation gives exactly what a full evaluation gives, while re-running only part of the graph."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.engine.incremental import ActivationCache, IncrementalEvaluator
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def _configs(layers):
    first, middle, last = layers[0], layers[len(layers) // 2], layers[-1]
    return [
        CompressionConfig(),
        W8A8,
        W8A8.with_layer(middle, weight={"precision": "int4"}),
        W8A8.with_layer(middle, weight={"precision": "int3"}),  # same prefix as the previous one
        W8A8.with_layer(last, weight={"precision": "int2"}),
        W8A8.with_layer(first, prune={"method": "magnitude", "sparsity": 0.5}),
        CompressionConfig().with_layer(middle, prune={"method": "magnitude", "sparsity": 0.5}),
        W8A8,  # seen before: served from the output cut
    ]


def _full(compressor, config, inputs):
    with torch.no_grad():
        return compressor.apply(config)(inputs).clone()


@pytest.fixture(scope="module")
def session():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=48))


def test_digits_cnn_incremental_equals_full(session):
    data = session.data
    session.evaluator.clear()
    for config in _configs(session.layer_names):
        assert torch.equal(session.logits(config), _full(session.compressor, config, data.eval_inputs))
    stats = session.evaluator.stats
    assert session.evaluator.traceable
    assert stats.cut_hits >= 6 and stats.full_runs == 1
    assert stats.nodes_run < 0.7 * stats.nodes_total  # most of the graph was not re-run


def test_session_result_identical_to_measure(session):
    config = W8A8.with_layer(session.layer_names[3], weight={"precision": "int4"})
    session.logits(W8A8)  # warm the cache so the Result really comes from a cut
    fast = session.evaluate(config, latency="none")
    full = session.evaluate_full(config, latency="none")
    assert fast.provenance["incremental"]["used"]
    for name in ("accuracy", "agreement", "sqnr_db", "weight_bytes", "peak_activation_bytes", "top5"):
        assert getattr(fast, name) == getattr(full, name), name


class Residual(nn.Module):
    """Skip connections, an in-place ReLU and a value mutated in place after the next layer's cut."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        y = self.a(x)
        z = self.b(torch.relu(y)) + x  # x lives across the cuts of a and b
        y.relu_()  # mutates a value that is live at b's cut
        return self.head((z + y).mean(dim=(2, 3)))


def test_skip_connections_and_inplace_ops_equal_full():
    torch.manual_seed(0)
    module = Residual().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.2, 0.2)
        module.bn.running_var.uniform_(0.5, 1.5)
    inputs = torch.randn(6, 3, 8, 8)
    compressor = Compressor(module, torch.randn(8, 3, 8, 8))
    evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names)
    configs = _configs(compressor.layer_names)
    configs += [W8A8.with_layer("b", weight={"precision": "int4"}), W8A8.with_layer("b", weight={"precision": "int2"})]
    for config in configs:
        assert torch.equal(evaluator.forward(config, inputs), _full(compressor, config, inputs))
    assert evaluator.stats.cut_hits >= 5


def test_torchvision_resnet18_equal_full():
    from qtradeoff.core.loading import architectures

    torch.manual_seed(0)
    module = architectures.build("torchvision.resnet18", num_classes=10).eval()
    inputs = torch.randn(3, 3, 32, 32)
    compressor = Compressor(module, torch.randn(4, 3, 32, 32))
    evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names)
    layers = compressor.layer_names
    configs = [CompressionConfig(), W8A8, W8A8.with_layer(layers[10], weight={"precision": "int4"}),
               W8A8.with_layer(layers[15], prune={"method": "magnitude", "sparsity": 0.5})]
    for config in configs:
        assert torch.equal(evaluator.forward(config, inputs), _full(compressor, config, inputs))
    assert evaluator.stats.full_runs == 1 and evaluator.stats.nodes_run < evaluator.stats.nodes_total


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 3)

    def forward(self, x):
        x = self.a(x)
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = -x
        return self.b(x)


def test_untraceable_model_falls_back_to_full_and_says_so():
    torch.manual_seed(0)
    module = Branchy().eval()
    compressor = Compressor(module, torch.randn(8, 4))
    evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names)
    inputs = torch.randn(5, 4)
    for config in (CompressionConfig(), W8A8, W8A8.with_layer("b", weight={"precision": "int4"})):
        assert torch.equal(evaluator.forward(config, inputs), _full(compressor, config, inputs))
    assert evaluator.traceable is False
    assert "not FX-traceable" in evaluator.note
    assert evaluator.stats.full_runs == 3


def test_cache_is_bounded_by_bytes():
    cache = ActivationCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put(i, {"x": torch.zeros(100)})  # 400 bytes each
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 3 and cache.evictions == 2
    assert cache.get(0) is None and cache.get(4) is not None
    cache.put("big", {"x": torch.zeros(1000)})  # larger than the whole cache: not kept
    assert "big" not in cache
    with pytest.raises(ValueError):
        ActivationCache(max_bytes=-1)


def test_small_cache_still_exact(session):
    compressor, inputs = session.compressor, session.data.eval_inputs
    evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names, cache_bytes=4_000_000)
    for config in _configs(compressor.layer_names):
        assert torch.equal(evaluator.forward(config, inputs), _full(compressor, config, inputs))
        assert evaluator.cache.bytes <= 4_000_000
    assert evaluator.cache.evictions > 0


def test_torchscript_model_is_evaluated_in_full_and_says_so():
    from types import SimpleNamespace

    from qtradeoff.core.loading.model_io import SAMPLE_DIR

    # the loader rebuilds a scripted registry architecture as eager (test_scripted.py): the scripted module itself
    scripted = SimpleNamespace(module=torch.jit.load(SAMPLE_DIR / "digits_cnn.torchscript.pt"))
    sample = load_sample_model("digits_cnn")
    session = Engine(scripted, sample_data_for(sample, calib_size=16, eval_size=16))
    for config in (CompressionConfig(), W8A8.with_layer(session.layer_names[2], weight={"precision": "int4"})):
        assert torch.equal(session.logits(config), _full(session.compressor, config, session.data.eval_inputs))
    assert session.evaluator.traceable is False and "TorchScript" in session.note
    result = session.evaluate(W8A8, latency="none")
    assert result.provenance["incremental"] == {"used": False, "note": session.note}


def test_evaluations_and_scores_share_the_cut_cache(session):
    # a full Result and a quick score name the same chunks of the evaluation split the same way
    config = W8A8.with_layer(session.layer_names[-1], weight={"precision": "int4"})
    session.logits(config)
    before = session.evaluator.stats.full_runs
    result = session.evaluate(config, latency="none")
    assert session.evaluator.stats.full_runs == before  # every chunk came from a cached cut
    assert result.accuracy == session.score(config).accuracy


def _trials(layer):
    return [CompressionConfig().with_layer(layer, weight={"precision": f"int{bits}"}) for bits in (8, 4, 2)] + [
        CompressionConfig().with_layer(layer, prune={"method": "magnitude", "sparsity": 0.5})]


def _variants(evaluator, compressor, layer, configs, inputs):
    plans = [compressor.plan(config) for config in configs]
    return evaluator.forward_variants(layer, configs, [compressor.simulate(plan) for plan in plans], inputs,
                                      fingerprint="inputs", settings=[plan.settings for plan in plans])


def test_variants_of_one_layer_share_the_downstream_with_the_same_scores(session):
    for layer in session.layer_names:
        configs = _trials(layer)
        batched = _variants(session.evaluator, session.compressor, layer, configs, session.data.eval_inputs)
        assert batched is not None, layer  # digits_cnn's downstream is batch-independent: batching is used
        for config, logits in zip(configs, batched, strict=True):
            full = _full(session.compressor, config, session.data.eval_inputs)
            assert torch.equal(logits.argmax(1), full.argmax(1)), (layer, config.key())
            assert torch.allclose(logits, full, rtol=1e-5, atol=1e-5)
        assert session.score_variants(layer, configs) == [session.score(c, store=False) for c in configs]


class BatchCoupled(nn.Module):
    """Centres the logits over the batch: stacking the variants of ``a`` before ``b`` would change every output."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        z = self.b(torch.relu(self.a(x)))
        return z - z.mean(dim=0)


def test_a_batch_coupled_downstream_is_not_batched():
    torch.manual_seed(0)
    module = BatchCoupled().eval()
    compressor = Compressor(module, torch.randn(8, 4))
    evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names)
    assert _variants(evaluator, compressor, "a", _trials("a"), torch.randn(10, 4)) is None


class DynamicRange(nn.Module):
    """Scales ``c``'s input by the batch's largest activation (a dynamic range): stacking the variants of ``a``
    before ``b`` would give every variant the range of the one with the largest activations."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.a(x))))
        return self.c(h / h.abs().amax())


def test_a_dynamic_range_downstream_never_mixes_variants():
    # Checking one variant's batched output against its own run passes when that variant holds the batch's
    # maximum (it did for 30 of these 120 orders): every order must give each variant its own outputs.
    configs = [CompressionConfig().with_layer("a", prune={"method": "magnitude", "sparsity": s})
               for s in (0.75, 0.5, 0.25)] + [CompressionConfig().with_layer("a", weight={"precision": "int8"})]
    for seed in range(5):
        torch.manual_seed(seed)
        module = DynamicRange().eval()
        compressor = Compressor(module, torch.randn(8, 4))
        inputs = torch.randn(10, 4)
        for order in itertools.permutations(configs):
            evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names)
            batched = _variants(evaluator, compressor, "a", list(order), inputs)
            if batched is not None:
                for config, logits in zip(order, batched, strict=True):
                    assert torch.equal(logits, _full(compressor, config, inputs)), (seed, config.key())


def test_variants_with_skip_connections_and_inplace_ops():
    torch.manual_seed(0)
    module = Residual().eval()
    inputs = torch.randn(6, 3, 8, 8)
    compressor = Compressor(module, torch.randn(8, 3, 8, 8))
    evaluator = IncrementalEvaluator(compressor.apply, compressor.layer_names)
    for layer in compressor.layer_names:
        configs = _trials(layer)
        batched = _variants(evaluator, compressor, layer, configs, inputs)
        assert batched is not None, layer
        for config, logits in zip(configs, batched, strict=True):
            assert torch.equal(logits.argmax(1), _full(compressor, config, inputs).argmax(1))
    # the cached values before each layer were not mutated by the in-place ReLU of the batched runs
    for config in _configs(compressor.layer_names):
        assert torch.equal(evaluator.forward(config, inputs), _full(compressor, config, inputs))
