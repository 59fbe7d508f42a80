"""Rounding with calibration data: bias correction, AdaRound and GPTQ against nearest rounding.

Errors are measured directly (the layer run on its raw calibration inputs with F.linear / F.conv2d), not through
the input statistics the algorithms optimize, so the statistics' own algebra is checked too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from qtradeoff.core.compression import rounding
from qtradeoff.core.compression.compress import Compressor, get_submodule
from qtradeoff.core.compression.quantize import fake_quantize, quantize_int, weight_qparams
from qtradeoff.core.config import CompressionConfig, WeightSpec
from qtradeoff.core.loading import architectures, data
from qtradeoff.core.loading.data import SAMPLE_DIR


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These layers are tiny: two threads only add synchronisation (10x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _correlated(*shape: int, seed: int = 0) -> torch.Tensor:
    """Inputs with strongly correlated features (a random mixing of independent ones), as real activations."""
    gen = torch.Generator().manual_seed(seed)
    if len(shape) == 2:
        return torch.randn(*shape, generator=gen) @ torch.randn(shape[1], shape[1], generator=gen) / shape[1] ** 0.5
    n, c, h, w = shape
    x = torch.randn(n, c, h, w, generator=gen)
    x = torch.einsum("nchw,cd->ndhw", x, torch.randn(c, c, generator=gen) / c ** 0.5)
    return F.avg_pool2d(x, 3, stride=1, padding=1) + 0.3  # spatially correlated, non-zero mean


def _layer(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    if kind == "linear":
        return nn.Linear(48, 24), _correlated(400, 48)
    groups = {"conv": 1, "grouped": 4, "depthwise": 16}[kind]
    conv = nn.Conv2d(16, 16 if groups == 16 else 24, 3, padding=1, groups=groups, bias=kind != "grouped")
    return conv, _correlated(40, 16, 8, 8)


def _run(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def _rounded(module, x, spec, mask=None):
    geometry = rounding.Geometry.of(module, "Linear" if isinstance(module, nn.Linear) else "Conv2d")
    stats = rounding.InputStats.of(geometry, x)
    return rounding.round_weight(geometry, module.weight, spec, stats, bias=module.bias, mask=mask)


@pytest.mark.parametrize("kind", ["linear", "conv", "grouped", "depthwise"])
def test_statistics_give_the_direct_output_error(kind):
    module, x = _layer(kind)
    geometry = rounding.Geometry.of(module, "Linear" if kind == "linear" else "Conv2d")
    stats = rounding.InputStats.of(geometry, x)
    delta = torch.randn_like(module.weight) * 0.01
    direct = _run(module, x, delta, None).square()
    per_vector = direct.sum() / (direct.numel() / delta.shape[0])  # E over input vectors, summed over outputs
    assert float(rounding.output_error(geometry.matrices(delta), stats)) == pytest.approx(float(per_vector),
                                                                                         rel=1e-4)


@pytest.mark.parametrize("kind", ["linear", "conv", "grouped", "depthwise", "strided_reflect", "dilated_same",
                                  "depthwise_strided"])
def test_first_order_statistics_are_the_mean_patch(kind):
    """E[x] alone (unfolding the batch's sum) is the mean of every unfolded input vector, and the same to the bit
    as the mean a second-order pass computes beside E[x xᵀ]; E[x xᵀ] is the unfolded vectors' too."""
    if kind == "strided_reflect":
        module, x = nn.Conv2d(16, 8, 3, stride=2, padding=1, padding_mode="reflect"), _correlated(40, 16, 9, 9)
    elif kind == "dilated_same":  # a non-square kernel, dilated, "same" padding of an even size (asymmetric)
        module, x = nn.Conv2d(6, 4, (2, 3), dilation=(1, 2), padding="same"), _correlated(20, 6, 7, 9)
    elif kind == "depthwise_strided":  # grouped, strided, dilated, replicate padding, a channel multiplier
        module = nn.Conv2d(8, 16, 3, stride=2, dilation=2, padding=2, groups=8, padding_mode="replicate")
        x = _correlated(20, 8, 9, 10)
    else:
        module, x = _layer(kind)
    geometry = rounding.Geometry.of(module, "Linear" if kind == "linear" else "Conv2d")
    first = rounding.InputStats.of(geometry, x, second_order=False)
    second = rounding.InputStats.of(geometry, x)
    assert first.hessian is None and not first.second_order and second.second_order
    cols = geometry.patches(x).to(torch.float64)  # every input vector, unfolded one sample at a time
    assert first.count == second.count == cols.shape[1]
    torch.testing.assert_close(first.mean, cols.mean(dim=1), rtol=1e-12, atol=1e-12)
    assert torch.equal(first.mean, second.mean)
    # E[x xᵀ] too, against the unfolded vectors (its Gram is a float32 product: float32's precision)
    expected = cols.transpose(1, 2) @ cols / cols.shape[1]
    torch.testing.assert_close(second.hessian, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    with pytest.raises(ValueError, match="second-order"):
        rounding.round_weight(geometry, module.weight, WeightSpec("int4", rounding="gptq"), first)


@pytest.mark.parametrize("algorithm", ["adaround", "gptq"])
@pytest.mark.parametrize("precision", ["int3", "int4"])
@pytest.mark.parametrize("kind", ["linear", "conv", "grouped", "depthwise"])
def test_algorithm_lowers_output_error_vs_nearest(algorithm, precision, kind):
    module, x = _layer(kind)
    spec = WeightSpec(precision=precision, rounding=algorithm, adaround_iterations=200)
    with torch.no_grad():
        reference = _run(module, x, module.weight, module.bias)
        nearest = fake_quantize(module.weight, precision, axis=0)
        result = _rounded(module, x, spec)
        error_nearest = float((_run(module, x, nearest, module.bias) - reference).square().mean())
        error = float((_run(module, x, result.weight, module.bias) - reference).square().mean())
    assert result.bias is None
    assert error < 0.9 * error_nearest
    # still on nearest rounding's grid: an export recovers the integer codes exactly
    scale, zero_point = _qparams(module.weight, precision)
    assert torch.equal(quantize_int(result.weight, int(precision[3:]), axis=0, scale=scale,
                                    zero_point=zero_point), result.weight)


def _qparams(weight, precision):
    from qtradeoff.core.compression.quantize import int_qparams

    return int_qparams(weight.detach(), int(precision[3:]), True, 0)


def _gptq_reference(w, hinv, grid, keep, block):
    """GPTQ's column loop written with torch ops on whole slices: the arithmetic the NumPy loop must reproduce."""
    w, out = w.clone(), torch.zeros_like(w)
    scale, zero = grid.scale.to(torch.float64), grid.zero_point.to(torch.float64)
    for start in range(0, w.shape[2], block):
        end = min(start + block, w.shape[2])
        w_block, errors, h_block = w[:, :, start:end].clone(), torch.zeros_like(w[:, :, start:end]), \
            hinv[:, start:end, start:end]
        for i in range(end - start):
            column = w_block[:, :, i:i + 1]
            q = (torch.clamp(torch.round(column / scale + zero), grid.qmin, grid.qmax) - zero) * scale
            q = q * keep[:, :, start + i:start + i + 1]
            out[:, :, start + i:start + i + 1] = q
            error = (column - q) / h_block[:, i, i].reshape(-1, 1, 1)
            w_block[:, :, i:] -= error * h_block[:, i:i + 1, i:]
            errors[:, :, i:i + 1] = error
        w[:, :, end:] -= errors @ hinv[:, start:end, end:]
    return grid.nearest(out.to(torch.float32))


@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_gives_the_torch_loop_bit_for_bit(symmetric):
    """Grouped weights, a mask and several blocks: the NumPy column loop computes exactly what torch ops would."""
    from qtradeoff.core.compression.rounding.gptq import _inverse_cholesky

    module, x = _layer("grouped")
    geometry = rounding.Geometry.of(module, "Conv2d")
    stats = rounding.InputStats.of(geometry, x)
    mask = (torch.rand(module.weight.shape, generator=torch.Generator().manual_seed(3)) > 0.2).to(torch.float32)
    weight = module.weight.detach() * mask
    w, keep = geometry.matrices(weight), geometry.matrices(mask)
    grid = rounding.grid_of(w, weight, WeightSpec("int3", symmetric=symmetric))
    got = rounding.gptq(w, grid, stats, damping=0.01, block=10, mask=keep)
    expected = _gptq_reference(w.to(torch.float64), _inverse_cholesky(stats.hessian, 0.01), grid,
                               keep.to(torch.float64), 10)
    assert torch.equal(got, expected)
    assert not torch.equal(got, grid.nearest(w) * keep)  # GPTQ moved some weights off nearest


@pytest.mark.parametrize("algorithm", ["adaround", "gptq"])
def test_pruned_weights_stay_zero(algorithm):
    module, x = _layer("conv")
    mask = (module.weight.detach().abs() > module.weight.detach().abs().median()).to(torch.float32)
    result = _rounded(module, x, WeightSpec(precision="int4", rounding=algorithm, adaround_iterations=50), mask)
    assert torch.all(result.weight[mask == 0] == 0)


@pytest.mark.parametrize("kind", ["linear", "conv", "grouped", "depthwise"])
@pytest.mark.parametrize("precision", ["int2", "int3", "int8"])
def test_bias_correction_removes_the_mean_output_shift(kind, precision):
    module, x = _layer(kind)
    with torch.no_grad():
        reference = _run(module, x, module.weight, module.bias)
        result = _rounded(module, x, WeightSpec(precision=precision, rounding="bias_correction"))
        assert torch.equal(result.weight, fake_quantize(module.weight, precision, axis=0))
        channels = 0 if kind == "linear" else (0, 2, 3)
        shift_nearest = (_run(module, x, result.weight, module.bias) - reference).mean(dim=channels)
        shift = (_run(module, x, result.weight, result.bias) - reference).mean(dim=channels)
    assert float(shift.abs().max()) < 1e-4 * max(1.0, float(shift_nearest.abs().max()) * 1e3)
    assert float(shift.abs().max()) < 0.01 * float(shift_nearest.abs().max())


@pytest.mark.parametrize("kind", ["grouped", "depthwise"])
def test_gptq_act_order_is_a_valid_other_rounding(kind):
    """Act-order on grouped / depthwise convs with a mask: on the grid, pruned weights zero, another rounding
    than natural order, and (keeping the better of it and nearest, as round_weight does) below nearest's error."""
    module, x = _layer(kind)
    # uneven input channel energies: the order of decreasing Hessian diagonal is not the natural one
    x = x * torch.linspace(0.2, 3.0, x.shape[1]).reshape(1, -1, 1, 1)
    mask = (torch.rand(module.weight.shape, generator=torch.Generator().manual_seed(5)) > 0.25).to(torch.float32)
    spec = WeightSpec("int3", rounding="gptq", gptq_act_order=True)
    result = _rounded(module, x, spec, mask)
    natural = _rounded(module, x, WeightSpec("int3", rounding="gptq"), mask)
    assert torch.all(result.weight[mask == 0] == 0)
    masked = module.weight.detach() * mask
    scale, zero_point = _qparams(masked, "int3")
    assert torch.equal(quantize_int(result.weight, 3, axis=0, scale=scale, zero_point=zero_point), result.weight)
    assert not torch.equal(result.weight, natural.weight)
    with torch.no_grad():
        reference = _run(module, x, masked, None)
        error = float((_run(module, x, result.weight, None) - reference).square().mean())
        nearest = fake_quantize(masked, "int3", axis=0) * mask
        assert error < float((_run(module, x, nearest, None) - reference).square().mean())


def test_gptq_act_order_is_natural_order_on_permuted_inputs():
    """Act-order equals natural-order GPTQ on a Linear whose input features are permuted (statistics taken from
    the permuted data, not from index arithmetic) by decreasing energy, with the columns put back."""
    module, x = _layer("linear")
    x = x * torch.linspace(3.0, 0.2, x.shape[1])[torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(2))]
    geometry = rounding.Geometry.of(module, "Linear")
    order = torch.argsort(x.square().mean(dim=0), descending=True, stable=True)
    weight = module.weight.detach()
    grid = rounding.grid_of(geometry.matrices(weight), weight, WeightSpec("int3"))
    ordered = rounding.gptq(geometry.matrices(weight), grid, rounding.InputStats.of(geometry, x), act_order=True)
    permuted = rounding.gptq(geometry.matrices(weight[:, order]), grid, rounding.InputStats.of(geometry, x[:, order]))
    back = torch.empty_like(permuted)
    back[:, :, order] = permuted
    assert not torch.equal(order, torch.arange(len(order)))
    torch.testing.assert_close(ordered, back, rtol=0, atol=1e-6 * float(grid.scale.max()))


@pytest.mark.parametrize("algorithm", ["bias_correction", "adaround", "gptq"])
def test_algorithms_round_onto_the_mse_grid(algorithm):
    """With ``range: mse`` the grid is chosen first (per channel), then the algorithm rounds onto it."""
    module, x = _layer("conv")
    spec = WeightSpec("int3", rounding=algorithm, adaround_iterations=20, range="mse")
    result = _rounded(module, x, spec)
    scale, zero_point = weight_qparams(module.weight.detach(), 3, True, 0, "mse")
    assert not torch.equal(scale, _qparams(module.weight, "int3")[0])
    assert torch.equal(quantize_int(result.weight, 3, axis=0, scale=scale, zero_point=zero_point), result.weight)
    if algorithm == "bias_correction":
        assert torch.equal(result.weight, quantize_int(module.weight, 3, axis=0, scale=scale, zero_point=zero_point))


def test_cache_spec_ignores_unused_parameters():
    assert rounding.cache_spec(WeightSpec("int4", gptq_damping=0.1)) == WeightSpec("int4")
    assert rounding.cache_spec(WeightSpec("int4", rounding="adaround", gptq_block=7)) == \
        WeightSpec("int4", rounding="adaround")
    assert rounding.cache_spec(WeightSpec("fp16", rounding="gptq")) == WeightSpec("fp16")
    assert rounding.cache_spec(WeightSpec("int4", rounding="gptq", gptq_damping=0.1)).gptq_damping == 0.1
    assert rounding.cache_spec(WeightSpec("int4", gptq_act_order=True)) == WeightSpec("int4")
    assert rounding.cache_spec(WeightSpec("int4", rounding="gptq", gptq_act_order=True)).gptq_act_order
    # the range chooses the grid of every rounding, nearest included; float precisions have no grid
    assert rounding.cache_spec(WeightSpec("int4", range="mse")).range == "mse"
    assert rounding.cache_spec(WeightSpec("fp16", range="mse")) == WeightSpec("fp16")


# -- in the compressor, on digits_cnn ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_cnn():
    model = architectures.build("qtradeoff.digits_cnn", num_classes=10)
    model.load_state_dict(load_file(SAMPLE_DIR / "digits_cnn.safetensors"))
    return model.eval()


@pytest.fixture(scope="module")
def digits(manifest):
    return data.load_digits(manifest["models"]["digits_cnn"]["preprocessing"])


def _layer_inputs(model, name, inputs) -> torch.Tensor:
    seen = []
    handle = get_submodule(model, name).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(inputs)
    handle.remove()
    return torch.cat(seen)


@pytest.mark.parametrize("algorithm", ["adaround", "gptq", "gptq act-order", "gptq mse"])
def test_every_digits_cnn_layer_reconstructs_better_than_nearest(digits_cnn, digits, algorithm):
    """Each layer's output error below nearest rounding's on the same grid (min-max, or MSE for 'gptq mse')."""
    compressor = Compressor(digits_cnn, digits.calib_inputs)
    name, _, variant = algorithm.partition(" ")
    grid = {"range": "mse"} if variant == "mse" else {}
    config = CompressionConfig().with_defaults(weight={"precision": "int3", "rounding": name,
                                                       "adaround_iterations": 500,
                                                       "gptq_act_order": variant == "act-order", **grid})
    plan = compressor.plan(config)
    nearest_plan = compressor.plan(CompressionConfig().with_defaults(weight={"precision": "int3", **grid}))
    rounded_model, nearest_model = compressor.simulate(plan), compressor.simulate(nearest_plan)
    better = 0
    for layer in plan:
        x = _layer_inputs(digits_cnn, layer.name, digits.calib_inputs)
        module = get_submodule(rounded_model, layer.name)
        folded = compressor.weight(layer.name)
        bias = compressor._folded_bias[layer.name]
        with torch.no_grad():
            reference = _run(module, x, folded, bias)
            error = float((_run(module, x, module.weight, bias) - reference).square().mean())
            near = get_submodule(nearest_model, layer.name).weight
            error_nearest = float((_run(module, x, near, bias) - reference).square().mean())
        assert error <= error_nearest * (1 + 1e-6), layer.name
        better += error < error_nearest
    assert better == len(plan)
    assert compressor.stats.rounding_passes == 1


def test_rounding_is_cached_per_layer(digits_cnn, digits):
    compressor = Compressor(digits_cnn, digits.calib_inputs)
    config = CompressionConfig().with_defaults(weight={"precision": "int4", "rounding": "gptq"})
    compressor.apply(config)
    first = compressor.stats.rounding_computations
    assert first == len(compressor.layers)
    # unrelated edits: activations, another algorithm's parameter, one layer's precision
    compressor.apply(config.with_defaults(activation={"precision": "int8"}))
    compressor.apply(config.with_defaults(weight={"adaround_iterations": 9}))
    assert compressor.stats.rounding_computations == first
    compressor.apply(config.with_layer("features.5.conv", weight={"precision": "int3"}))
    assert compressor.stats.rounding_computations == first + 1
    compressor.apply(config.with_layer("features.5.conv", weight={"gptq_damping": 0.05}))
    assert compressor.stats.rounding_computations == first + 2
    compressor.apply(config.with_layer("features.5.conv", weight={"gptq_act_order": True}))
    compressor.apply(config.with_layer("features.5.conv", weight={"range": "mse"}))
    assert compressor.stats.rounding_computations == first + 4
    assert compressor.stats.rounding_passes == 1


def test_bias_correction_in_the_simulation(digits_cnn, digits):
    """The corrected bias reaches the simulated model (folded conv, plain Linear) and fixes the mean shift."""
    compressor = Compressor(digits_cnn, digits.calib_inputs)
    nearest = compressor.apply(CompressionConfig().with_defaults(weight={"precision": "int3"}))
    corrected = compressor.apply(CompressionConfig().with_defaults(weight={"precision": "int3",
                                                                           "rounding": "bias_correction"}))
    with torch.no_grad():
        reference = digits_cnn(digits.calib_inputs)
        shift_nearest = (nearest(digits.calib_inputs) - reference).mean(0).abs().max()
        shift = (corrected(digits.calib_inputs) - reference).mean(0).abs().max()
    assert float(shift) < float(shift_nearest)
    assert not torch.equal(get_submodule(corrected, "classifier.2").bias, digits_cnn.classifier[2].bias)


def test_bias_correction_alone_takes_the_first_order_pass(digits_cnn, digits):
    """Bias correction collects E[x] only; AdaRound / GPTQ asked later take the second-order pass once, and the
    corrected biases are the same whichever pass their mean came from."""
    bias_correction = CompressionConfig().with_defaults(weight={"precision": "int3", "rounding": "bias_correction"})
    compressor = Compressor(digits_cnn, digits.calib_inputs)
    corrected = compressor.apply(bias_correction)
    assert compressor.stats.rounding_passes == 1
    assert all(stats.hessian is None for stats in compressor._input_stats.values())
    compressor.apply(bias_correction.with_defaults(weight={"rounding": "gptq"}))
    assert compressor.stats.rounding_passes == 2
    assert all(stats.second_order for stats in compressor._input_stats.values())
    compressor.apply(bias_correction.with_defaults(weight={"precision": "int4"}))
    assert compressor.stats.rounding_passes == 2

    # a plan mixing both collects second order up front: one pass, the same corrected biases
    mixed = Compressor(digits_cnn, digits.calib_inputs)
    again = mixed.apply(bias_correction.with_layer("features.5.conv", weight={"rounding": "gptq"}))
    assert mixed.stats.rounding_passes == 1
    for layer in ("features.0.conv", "classifier.2"):
        assert torch.equal(get_submodule(again, layer).bias, get_submodule(corrected, layer).bias)
