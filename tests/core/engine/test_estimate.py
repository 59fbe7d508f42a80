"""Real-size support: an fp32 point costs one forward, simulated models share what they leave alone, caches are
bounded by bytes, and the time/memory estimates an evaluation shows before it starts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from qtradeoff.core.compression.compress import Compressor, hides_submodules
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine import estimate as estimate_mod
from qtradeoff.core.engine.engine import EVAL_BATCH, Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for

W8 = CompressionConfig().with_defaults(weight={"precision": "int8"})
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


@pytest.fixture(scope="module")
def cnn():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=32, eval_size=150))


def _count_forwards(module: nn.Module) -> list[int]:
    calls = [0]

    def count(_module, _args):
        calls[0] += 1

    # on the base root: simulated models are clones that copy its hook table, so their forwards count too
    module.register_forward_pre_hook(count)
    return calls


@pytest.mark.slow  # ~5 s on the shared 2-core machine
def test_an_fp32_point_runs_the_reference_forward_only():
    loaded = load_sample_model("digits_cnn")
    engine = Engine(loaded, sample_data_for(loaded, calib_size=16, eval_size=150))
    calls = _count_forwards(loaded.module)
    result = engine.evaluate(CompressionConfig(), latency="none")
    chunks = math.ceil(150 / EVAL_BATCH)
    profile = 1  # the activation profile's single-sample forward (peak activation bytes)
    assert calls[0] == chunks + profile
    assert result.provenance["reused_reference"] is True
    assert result.agreement == 1.0 and math.isinf(result.sqnr_db)
    # a plan that changes a weight runs its simulated model: the count grows by a full pass
    before = calls[0]
    changed = engine.evaluate(CompressionConfig().with_defaults(weight={"precision": "fp16"}), latency="none",
                              incremental=False)
    assert calls[0] == before + chunks
    assert changed.provenance["reused_reference"] is False
    # and the shortcut is exact: the fp32 plan's simulated model gives the reference bit for bit
    simulated = engine.compressor.simulate(engine.plan(CompressionConfig()))
    with torch.inference_mode():
        direct = torch.cat([simulated(engine.data.eval_inputs[i:i + EVAL_BATCH])
                            for i in range(0, 150, EVAL_BATCH)])
    assert torch.equal(direct, engine.reference_logits())


def test_a_shorter_reference_is_sliced_from_a_longer_one(cnn):
    full = cnn.reference_logits()
    calls = _count_forwards(cnn.module)
    try:
        assert torch.equal(cnn.reference_logits(40), full[:40])
        assert calls[0] == 0
    finally:
        cnn.module._forward_pre_hooks.clear()


class _HiddenLayers(nn.Module):
    """Keeps its layers in a plain list as well: a shallow clone would still run the originals."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 32)
        self.second = nn.Linear(32, 32)
        self.third = nn.Linear(32, 10)
        self.order = [self.first, self.second, self.third]

    def forward(self, x):
        for layer in self.order:
            x = torch.relu(layer(x))
        return x


def test_deep_copied_simulated_models_share_untouched_tensors_with_the_base():
    torch.manual_seed(0)
    base = _HiddenLayers().eval()
    assert hides_submodules(base)
    before = {name: tensor.clone() for name, tensor in base.state_dict().items()}
    compressor = Compressor(base, torch.randn(8, 16))
    config = CompressionConfig().with_layer("second", weight={"precision": "int4"})
    simulated = compressor.apply(config)
    # the hidden list really calls the copy's layers (the deep copy exists for that)...
    assert simulated.order[1] is simulated.second and simulated.second is not base.second
    # ...untouched weights are the base's storage, the rewritten one is new, and the base is unchanged
    for name in ("first", "third"):
        for attr in ("weight", "bias"):
            assert getattr(simulated, name).__getattr__(attr).data_ptr() == getattr(base, name).__getattr__(
                attr).data_ptr()
    assert simulated.second.weight.data_ptr() != base.second.weight.data_ptr()
    assert not torch.equal(simulated.second.weight, base.second.weight)
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    x = torch.randn(4, 16)
    with torch.no_grad():
        assert not torch.equal(simulated(x), base(x))


def test_processed_weight_cache_is_bounded_by_bytes():
    loaded = load_sample_model("digits_cnn")
    data = sample_data_for(loaded, calib_size=8, eval_size=8)
    limit = 40_000  # below the whole model's fp32 weights (~100 kB): some layers must be evicted
    compressor = Compressor(loaded.module, data.calib_inputs, weight_cache_bytes=limit)
    for precision in ("int8", "int4"):
        compressor.apply(CompressionConfig().with_defaults(weight={"precision": precision}))
        assert 0 < compressor._weight_cache_bytes <= limit
        assert compressor._weight_cache_bytes == sum(t.numel() * t.element_size()
                                                     for t in compressor._weight_cache.values())


def test_estimate_grows_with_samples_and_names_its_stages(cnn):
    small = cnn.estimate_seconds(W8A8, 20, latency="estimated")
    large = cnn.estimate_seconds(W8A8, 150, latency="estimated")
    assert 0 < small.seconds < large.seconds
    assert small.seconds == pytest.approx(sum(small.parts.values()))
    assert large.seconds_per_sample > 0 and large.to_dict()["estimated"] is True
    assert "simulated" in large.parts
    assert "samples" in large.describe() and "estimate" in large.describe()
    # the fp32 point adds no simulated forward, and none at all once its reference is known
    cnn.reference_logits()
    fp32 = cnn.estimate_seconds(CompressionConfig(), 150, latency="none")
    assert "simulated" not in fp32.parts and "reference" not in fp32.parts
    # measured latency adds its timing time
    measured = cnn.estimate_seconds(W8, 150, latency="measured")
    assert measured.parts["latency (measured)"] > 0


def test_proposed_subset_is_bounded_and_monotonic_in_the_target(cnn):
    targets = [1e-6, 1e-3, 0.005, 0.02, 0.1, 1.0, 100.0]
    sizes = [cnn.propose_eval_size(t, W8A8, latency="none") for t in targets]
    assert sizes == sorted(sizes)
    assert sizes[0] == estimate_mod.MIN_EVAL_SAMPLES and sizes[-1] == cnn.eval_samples
    assert all(estimate_mod.MIN_EVAL_SAMPLES <= n <= cnn.eval_samples for n in sizes)
    # within the bounds, the proposal fits the target and one more sample would not
    for target, n in zip(targets, sizes, strict=True):
        if estimate_mod.MIN_EVAL_SAMPLES < n < cnn.eval_samples:
            assert cnn.estimate_seconds(W8A8, n, latency="none").seconds <= target
            assert cnn.estimate_seconds(W8A8, n + 1, latency="none").seconds > target
    with pytest.raises(ValueError, match="not positive"):
        cnn.propose_eval_size(0.0)


def test_proposal_is_pure_binary_search():
    def linear(n):
        return estimate_mod.TimeEstimate(n, 0.5 + 0.01 * n, 0.01, False)

    assert estimate_mod.propose_samples(linear, 1.5, 1000) == 100
    assert estimate_mod.propose_samples(linear, 3.0, 1000) == 250
    assert estimate_mod.propose_samples(linear, 3.0, 60) == 60  # the split bounds it
    assert estimate_mod.propose_samples(linear, 0.1, 1000) == 100  # never below the floor


def test_memory_estimate_counts_model_data_and_warns_only_near_the_ram(cnn):
    memory = cnn.memory_estimate()
    weights = sum(p.numel() * p.element_size() for p in cnn.module.state_dict().values())
    assert memory.model_bytes == weights
    assert memory.data_bytes == (cnn.data.eval_inputs.numel() + cnn.data.calib_inputs.numel()) * 4
    assert memory.total_bytes > memory.model_bytes + memory.data_bytes
    assert memory.warning() == ""  # a small CNN on any machine that runs the tests
    tight = estimate_mod.MemoryEstimate(**{**memory.__dict__, "available_bytes": memory.total_bytes})
    assert "available" in tight.warning() and "estimate" in tight.warning()


def test_cli_eval_size_auto_records_the_proposal_in_provenance(capsys):
    from qtradeoff import cli

    code = cli.main(["evaluate", "digits_mlp", "--eval-size", "auto", "--target-seconds", "1000", "--latency",
                     "none", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    subset = result["provenance"]["eval_subset"]
    assert subset["proposed"] is True and subset["target_seconds"] == 1000
    assert subset["estimate"]["estimated"] is True and subset["estimate"]["samples"] == result["eval_samples"]
    assert f"{result['eval_samples']} of" in err and "estimated time" in err


def test_cli_eval_size_rejects_words_other_than_auto(capsys):
    from qtradeoff import cli

    assert cli.main(["evaluate", "digits_mlp", "--eval-size", "some"]) == 2
    assert "--eval-size" in capsys.readouterr().err


def test_subset_hints_are_plain_values_a_ui_can_show(cnn):
    hints = cnn.subset_hints(1000.0, W8A8)
    assert json.loads(json.dumps(hints)) == hints  # plain JSON values: they cross a process boundary as they are
    assert hints["estimated"] is True and hints["proposed_eval_size"] == cnn.eval_samples
    assert 0 < hints["proposed_seconds"] <= hints["all_samples_seconds"] + 1e-9
    assert hints["memory_warning"] == "" and hints["fp32_seconds_per_sample"] > 0


def test_chunks_are_bounded_on_inputs_with_large_activations():
    from types import SimpleNamespace

    from qtradeoff.core.engine.engine import CHUNK_ACTIVATION_BYTES
    from qtradeoff.core.loading.data import EvalData, fingerprint

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(64, 10)).eval()
    calib, inputs = torch.randn(4, 3, 224, 224), torch.randn(12, 3, 224, 224)
    data = EvalData("big", calib, None, inputs, None, None, fingerprint(calib, inputs))
    engine = Engine(SimpleNamespace(module=module), data)
    per_sample = (3 + 64) * 224 * 224 * 4  # the conv's input + output, float32: ~13 MB
    assert engine.eval_chunk == CHUNK_ACTIVATION_BYTES // per_sample < EVAL_BATCH
    assert engine.compressor.calib_batch == engine.eval_chunk
    assert engine.memory_estimate().activation_bytes == 3 * per_sample * engine.eval_chunk
    result = engine.evaluate(W8A8, latency="none")  # chunked forwards give the whole split's outputs
    assert result.eval_samples == 12 and result.agreement_ci95 is not None
    # small inputs keep EVAL_BATCH-sample chunks (their numbers and timings stay as they were)
    loaded = load_sample_model("digits_cnn")
    assert Engine(loaded, sample_data_for(loaded, calib_size=8, eval_size=8)).eval_chunk == EVAL_BATCH
