"""The Compressor: never mutates the base, caches per layer, folds BN, and keeps int8 accuracy on digits_cnn."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from qtradeoff.core.compression.compress import Compressor, process_weight
from qtradeoff.core.config import CompressionConfig, PruneSpec, WeightSpec
from qtradeoff.core.loading import architectures, data
from qtradeoff.core.loading.data import SAMPLE_DIR

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8", "granularity": "per_channel"},
                                         activation={"precision": "int8", "calibration": "minmax"})
W3 = CompressionConfig().with_defaults(weight={"precision": "int3", "granularity": "per_channel"})


@pytest.fixture(scope="module")
def digits_cnn():
    model = architectures.build("qtradeoff.digits_cnn", num_classes=10)
    model.load_state_dict(load_file(SAMPLE_DIR / "digits_cnn.safetensors"))
    return model.eval()


@pytest.fixture(scope="module")
def digits(manifest):
    return data.load_digits(manifest["models"]["digits_cnn"]["preprocessing"])


@pytest.fixture(scope="module")
def compressor(digits_cnn, digits):
    return Compressor(digits_cnn, digits.calib_inputs)


def _accuracy(model, digits) -> float:
    with torch.no_grad():
        return float((model(digits.eval_inputs).argmax(1) == digits.eval_labels).float().mean())


def test_fp32_config_is_the_base_model_bit_for_bit(compressor, digits_cnn, digits):
    with torch.no_grad():
        expected = digits_cnn(digits.eval_inputs)
        compressor.apply(W8A8)
        actual = compressor.apply(CompressionConfig())(digits.eval_inputs)
    assert torch.equal(actual, expected)
    assert compressor.notes == []  # digits_cnn traces: BatchNorm folded


def test_apply_never_mutates_the_base(compressor, digits_cnn, digits):
    state = {k: v.clone() for k, v in digits_cnn.state_dict().items()}
    with torch.no_grad():
        before = digits_cnn(digits.eval_inputs[:64])
    for config in (W8A8, W3, CompressionConfig().with_defaults(prune={"method": "nm"}),
                   W8A8.with_layer("features.1.conv", prune={"method": "structured", "sparsity": 0.5})):
        compressor.apply(config)(digits.eval_inputs[:8])
    with torch.no_grad():
        after = digits_cnn(digits.eval_inputs[:64])
    assert torch.equal(before, after)
    assert all(torch.equal(state[k], v) for k, v in digits_cnn.state_dict().items())
    assert not any(h for m in digits_cnn.modules() for h in (m._forward_hooks, m._forward_pre_hooks))


def test_one_layer_change_recomputes_one_layer(compressor):
    base = CompressionConfig().with_defaults(weight={"precision": "int6"})
    compressor.apply(base)
    computed = compressor.stats.weight_computations
    compressor.apply(base.with_layer("features.3.conv", weight={"precision": "int5"}))
    assert compressor.stats.weight_computations == computed + 1
    compressor.apply(base.with_layer("features.3.conv", prune={"method": "magnitude", "sparsity": 0.3}))
    assert compressor.stats.weight_computations == computed + 2
    compressor.apply(base)  # every layer cached
    compressor.apply(base.with_layer("features.3.conv", weight={"precision": "int5"}))
    assert compressor.stats.weight_computations == computed + 2


def test_calibration_runs_once_and_ranges_are_cached(compressor):
    compressor.apply(W8A8)
    passes = compressor.stats.calibration_passes
    assert passes == 1
    for method in ("minmax", "percentile", "mse"):
        compressor.apply(W8A8.with_defaults(activation={"calibration": method}))
    ranges = compressor.stats.range_computations
    compressor.apply(W8A8.with_defaults(activation={"calibration": "mse"}))
    assert compressor.stats.calibration_passes == passes
    assert compressor.stats.range_computations == ranges


def test_int8_keeps_accuracy_and_int3_loses_more(compressor, digits_cnn, digits):
    fp32 = _accuracy(digits_cnn, digits)
    w8a8 = _accuracy(compressor.apply(W8A8), digits)
    w3 = _accuracy(compressor.apply(W3), digits)
    figures = f"digits_cnn test accuracy: fp32 {fp32:.4f}, int8 W8A8 per-channel {w8a8:.4f}, int3 weights {w3:.4f}"
    print(figures)
    assert fp32 - w8a8 <= 0.01, figures
    assert fp32 - w3 > fp32 - w8a8, figures


def test_bn_folding_is_exact_in_float(compressor, digits_cnn, digits):
    # int16 weights rewrite every conv with BatchNorm folded in; the outputs must stay those of the base
    config = CompressionConfig().with_defaults(weight={"precision": "int16", "granularity": "per_channel"})
    with torch.no_grad():
        expected = digits_cnn(digits.eval_inputs)
        actual = compressor.apply(config)(digits.eval_inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3)
    folded = compressor.weight("features.0.conv")
    original = dict(digits_cnn.named_parameters())["features.0.conv.weight"]
    assert not torch.equal(folded, original)


def test_skip_and_sparsity_reporting(compressor):
    config = (CompressionConfig().with_defaults(weight={"precision": "int4"},
                                                prune={"method": "magnitude", "sparsity": 0.4})
              .with_layer("features.0.conv", skip=True)
              .with_layer("features.5.conv", prune={"method": "structured", "sparsity": 0.25, "norm": "l2"}))
    model = compressor.apply(config)

    def zeros(name):
        weight = model.get_submodule(name).weight
        return int((weight == 0).sum()) / weight.numel()

    assert zeros("features.0.conv") < 0.05  # skipped: fp32, unpruned
    assert zeros("features.1.conv") == pytest.approx(0.4, abs=1 / 4608)
    dead = (model.get_submodule("features.5.conv").weight.reshape(128, -1) == 0).all(dim=1)
    assert int(dead.sum()) == 32
    assert torch.equal(model.features[0].conv.weight, compressor.base.features[0].conv.weight)
    share = compressor.sparsity_for_threshold("features.1.conv", 0.5, relative=True)
    assert 0.2 < share < 0.6


def test_process_weight_per_tensor_vs_per_channel():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 0, 8).unsqueeze(1)
    per_channel = process_weight(w, WeightSpec("int4", "per_channel"), PruneSpec())
    per_tensor = process_weight(w, WeightSpec("int4", "per_tensor"), PruneSpec())
    assert (per_channel - w).square().mean() < (per_tensor - w).square().mean()
    pruned = process_weight(w, WeightSpec("int8", symmetric=False), PruneSpec("nm", n=2, m=4))
    assert int((pruned == 0).sum()) >= w.numel() // 2


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: FX cannot trace this
            x = x * 2
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_untraceable_model_is_compressed_unfolded_with_a_note():
    torch.manual_seed(0)
    model = _Untraceable().eval()
    calib = torch.randn(16, 1, 8, 8)
    comp = Compressor(model, calib)
    assert any("not FX-traceable" in note for note in comp.notes)
    out = comp.apply(W8A8)(calib)
    assert out.shape == (16, 3) and torch.isfinite(out).all()
    with torch.no_grad():
        assert torch.equal(comp.apply(CompressionConfig())(calib), model(calib))


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")
def test_torchscript_weights_are_compressed(digits):
    scripted = torch.jit.load(SAMPLE_DIR / "digits_cnn.torchscript.pt")
    comp = Compressor(scripted, digits.calib_inputs[:32])
    w3 = comp.apply(W3)
    assert _accuracy(w3, digits) < 1.0
    assert any("TorchScript" in note for note in comp.notes)
    weight = dict(scripted.named_parameters())["features.1.conv.weight"]
    assert weight.unique().numel() > 2**3 * 32  # base untouched


def test_export_program_weights_are_compressed_with_notes(digits_cnn, digits):
    program = torch.export.export(digits_cnn, (digits.calib_inputs[:1],))  # static batch size 1
    comp = Compressor(program.module(), digits.calib_inputs[:4])
    assert comp.layer_names == [f"features.{i}.conv" for i in range(6)] + ["classifier.2"]
    model = comp.apply(W8A8.with_defaults(weight={"precision": "int3"}))
    assert any("BatchNorm not folded" in note for note in comp.notes)
    assert any("not called as modules" in note for note in comp.notes)
    with torch.no_grad():
        x = digits.eval_inputs[:1]
        assert not torch.equal(model(x), digits_cnn(x))
        assert torch.equal(comp.apply(CompressionConfig())(x), program.module()(x))


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.up = nn.ConvTranspose1d(6, 4, 3, stride=2)

    def forward(self, tokens):
        x = self.emb(tokens)
        x, _ = self.attn(x, x, x)
        x, _ = self.lstm(x)
        return self.up(x.transpose(1, 2))


def test_other_layer_types_compress():
    torch.manual_seed(0)
    model = _Mixed().eval()
    tokens = torch.randint(0, 20, (8, 5))
    comp = Compressor(model, calib_inputs=tokens)
    assert comp.layer_names[:3] == ["emb", "attn", "lstm"]
    with torch.no_grad():
        reference = model(tokens)
        simulated = comp.apply(W8A8.with_defaults(weight={"precision": "int4"}))
        out = simulated(tokens)
    assert out.shape == reference.shape and torch.isfinite(out).all() and not torch.equal(out, reference)
    lstm_weight = simulated.lstm.weight_hh_l0
    assert simulated.lstm._flat_weights[1] is lstm_weight  # the recurrent kernel runs the compressed weights
    assert lstm_weight.unique().numel() <= 16 * lstm_weight.shape[0]
    up = comp.apply(CompressionConfig().with_defaults(prune={"method": "structured", "sparsity": 0.5})).up.weight
    assert int((up == 0).all(dim=(0, 2)).sum()) == 2  # ConvTranspose output channels live on axis 1


def test_simulated_models_are_independent(compressor, digits):
    # a simulated model is never reconfigured behind its holder's back: building another leaves it as it was
    with torch.no_grad():
        w8a8 = compressor.apply(W8A8)
        expected = w8a8(digits.eval_inputs[:32])
        other = compressor.apply(W3.with_layer("features.0.conv", prune={"method": "magnitude", "sparsity": 0.5}))
        other(digits.eval_inputs[:32])
        assert other is not w8a8
        assert torch.equal(w8a8(digits.eval_inputs[:32]), expected)


def test_a_deepcopy_of_the_simulated_model_keeps_its_config(compressor, digits):
    with torch.no_grad():
        kept = copy.deepcopy(compressor.apply(W8A8))
        expected = kept(digits.eval_inputs[:32])
        compressor.apply(CompressionConfig())
        assert torch.equal(kept(digits.eval_inputs[:32]), expected)
