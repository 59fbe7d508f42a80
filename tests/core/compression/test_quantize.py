"""Integer fake quantization, weight grids (min-max and MSE ranges), float casts and activation calibration."""

from __future__ import annotations

import pytest
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

from qtradeoff.core.compression.quantize import (
    RangeObserver,
    calibrate_range,
    cast_float,
    fake_quantize,
    int_qparams,
    int_range,
    qparams_from_range,
    quantize_int,
    weight_qparams,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("bits", [2, 3, 4, 8, 12, 16])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 0])
def test_error_within_half_step_and_distinct_values(bits, symmetric, axis):
    x = torch.randn(8, 64, generator=_gen(bits)) * torch.linspace(0.1, 3.0, 8).unsqueeze(1) + 0.3
    q = quantize_int(x, bits, symmetric=symmetric, axis=axis)
    scale, _ = int_qparams(x, bits, symmetric, axis)
    step = scale if axis is None else scale.unsqueeze(1)
    # min-max qparams: the whole tensor lies inside the clipping range, so every error is at most half a step
    # (plus float32 rounding of the dequantized value: a couple of ulps of |x|)
    ulps = 2 * torch.finfo(torch.float32).eps * x.abs()
    assert bool(((q - x).abs() <= step / 2 + ulps).all())
    rows = [q] if axis is None else list(q)
    for row in rows:
        assert row.unique().numel() <= 2**bits


def test_int_range_conventions():
    assert int_range(8, True) == (-128, 127)
    assert int_range(8, False) == (0, 255)
    assert int_range(2, True) == (-2, 1)
    assert int_range(16, False) == (0, 65535)
    with pytest.raises(ValueError):
        int_range(1, True)
    with pytest.raises(ValueError):
        int_range(17, True)


@pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions.*:UserWarning")
def test_int8_per_channel_symmetric_matches_torch_observer():
    w = torch.randn(16, 8, 3, 3, generator=_gen(1))
    observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    observer(w)
    ref_scale, ref_zero = observer.calculate_qparams()
    scale, zero = int_qparams(w, 8, True, 0)
    torch.testing.assert_close(scale, ref_scale, rtol=0, atol=0)
    assert torch.equal(zero.to(torch.int64), ref_zero.to(torch.int64))
    real = torch.quantize_per_channel(w, ref_scale, ref_zero, 0, torch.qint8).dequantize()
    assert torch.equal(quantize_int(w, 8, symmetric=True, axis=0), real)


def test_int8_activation_qparams_match_quint8_minmax_observer():
    x = torch.randn(1000, generator=_gen(2)) * 2 + 1
    observer = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    observer(x)
    ref_scale, ref_zero = observer.calculate_qparams()
    scale, zero = qparams_from_range(x.min(), x.max(), 8, symmetric=False)
    torch.testing.assert_close(scale, ref_scale.reshape(()), rtol=1e-6, atol=0)
    assert int(zero) == int(ref_zero)


def test_per_channel_beats_per_tensor_on_skewed_channels():
    w = torch.randn(8, 128, generator=_gen(3)) * torch.logspace(-3, 0, 8).unsqueeze(1)
    per_tensor = (quantize_int(w, 4, axis=None) - w).square().mean()
    per_channel = (quantize_int(w, 4, axis=0) - w).square().mean()
    assert per_channel < per_tensor
    for row in range(8):  # and no single channel gets worse
        err_c = (quantize_int(w, 4, axis=0)[row] - w[row]).square().mean()
        err_t = (quantize_int(w, 4, axis=None)[row] - w[row]).square().mean()
        assert err_c <= err_t + 1e-12


def test_asymmetric_beats_symmetric_on_positive_tensors():
    x = torch.rand(4096, generator=_gen(4)) * 5 + 0.5  # post-ReLU-like, all positive
    for bits in (3, 4, 8):
        sym = (quantize_int(x, bits, symmetric=True) - x).square().mean()
        asym = (quantize_int(x, bits, symmetric=False) - x).square().mean()
        assert asym < sym


def test_zero_is_exact_and_zero_tensor_is_safe():
    x = torch.tensor([0.0, 0.3, -1.7, 2.2])
    for symmetric in (True, False):
        assert quantize_int(x, 4, symmetric=symmetric)[0] == 0
    assert torch.equal(quantize_int(torch.zeros(3, 5), 8, axis=0), torch.zeros(3, 5))


@pytest.mark.parametrize(("precision", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                                  ("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2)])
def test_float_casts_equal_torch_casts(precision, dtype):
    x = torch.randn(1000, generator=_gen(5)) * 10
    assert torch.equal(cast_float(x, precision), x.to(dtype).to(torch.float32))
    assert torch.equal(fake_quantize(x, precision), x.to(dtype).to(torch.float32))


def test_fp8_saturates_instead_of_overflowing():
    x = torch.tensor([1e6, -1e6, 3.0])
    assert cast_float(x, "fp8_e4m3").tolist() == [448.0, -448.0, 3.0]
    assert cast_float(x, "fp8_e5m2").tolist() == [57344.0, -57344.0, 3.0]
    assert torch.equal(cast_float(x, "fp32"), x)


def test_calibration_methods():
    values = torch.cat([torch.randn(100_000, generator=_gen(6)), torch.tensor([50.0])])  # one outlier
    lo, hi = calibrate_range(values, "minmax")
    assert hi == 50.0
    p_lo, p_hi = calibrate_range(values, "percentile", percentile=99.9)
    assert 2.5 < p_hi < 4.0 and -4.0 < p_lo < -2.5
    s_lo, s_hi = calibrate_range(values, "percentile", percentile=99.9, symmetric=True)
    assert s_lo == -s_hi and 2.5 < s_hi < 4.0
    m_lo, m_hi = calibrate_range(values, "mse", bits=4)
    assert m_hi < hi  # clipping the outlier lowers the error

    def mse(bounds):
        scale, zero = qparams_from_range(torch.tensor(bounds[0]), torch.tensor(bounds[1]), 4, False)
        return (quantize_int(values, 4, symmetric=False, scale=scale, zero_point=zero) - values).square().mean()

    assert mse((m_lo, m_hi)) <= mse((lo, hi))
    with pytest.raises(ValueError):
        calibrate_range(values, "entropy")


def test_range_observer_accumulates_batches():
    observer = RangeObserver(sample_limit=1000)
    for seed in range(5):
        observer.observe(torch.randn(2000, generator=_gen(seed)))
    observer.observe(torch.tensor([9.0]))
    assert observer.range("minmax")[1] == 9.0
    assert observer.sample().numel() <= 1000
    lo, hi = observer.range("percentile", percentile=99.0)
    assert -3.0 < lo < -1.5 and 1.5 < hi < 3.0


def _brute_force_mse(row: torch.Tensor, bits: int, symmetric: bool) -> tuple[float, float]:
    """(least squared rounding error, widest ratio reaching it) over the ratios 1, 1 - 1/80, ..., 0.25, each
    channel alone, with plain Python arithmetic on the grid of qparams_from_range: an independent reference."""
    qmin, qmax = int_range(bits, symmetric)
    lo, hi = min(float(row.min()), 0.0), max(float(row.max()), 0.0)
    best = (float("inf"), None)
    for step in range(61):
        ratio = 1.0 - step * 0.75 / 60
        scale, zero_point = qparams_from_range(torch.tensor(lo * ratio), torch.tensor(hi * ratio), bits, symmetric)
        scale, zero_point = float(scale), int(zero_point)
        error = 0.0
        for value in row.tolist():
            code = min(max(round(value * (1.0 / scale)) + zero_point, qmin), qmax)
            error += ((code - zero_point) * scale - value) ** 2
        if error < best[0] * (1 - 1e-9):
            best = (error, ratio)
    return best


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_weight_range_is_the_brute_force_optimum(symmetric):
    """Per channel, the chosen grid's squared error is the least of every candidate clipping (a loop in plain
    Python), and the chosen scale is that of the widest range reaching it."""
    x = torch.randn(6, 40, generator=_gen(4)) * torch.linspace(0.2, 2.0, 6).unsqueeze(1) + 0.1
    scale, zero_point = weight_qparams(x, 3, symmetric, 0, "mse")
    got = quantize_int(x, 3, symmetric=symmetric, axis=0, scale=scale, zero_point=zero_point)
    minmax_scale, _ = int_qparams(x, 3, symmetric, 0)
    ratios = []
    for channel in range(len(x)):
        error, ratio = _brute_force_mse(x[channel], 3, symmetric)
        found = float((got[channel] - x[channel]).double().square().sum())
        assert found == pytest.approx(error, rel=1e-5), channel
        # the scale of that ratio (qparams_from_range rounds it the same way)
        assert float(scale[channel]) == pytest.approx(float(minmax_scale[channel]) * ratio, rel=1e-5), channel
        ratios.append(ratio)
    assert min(ratios) < 0.9 and max(ratios) <= 1.0
    # per tensor: one pair, from all values
    per_tensor, _ = weight_qparams(x, 3, symmetric, None, "mse")
    assert per_tensor.dim() == 0 and float(per_tensor) < float(int_qparams(x, 3, symmetric, None)[0])


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_weight_range_search_rounds_as_torchs_fake_quantize_kernel(digits_weight, symmetric):
    """The search writes the fake-quantization out in elementwise ops (6x faster than the per-channel kernel on
    a 512x512 layer); the grid it picks is bit for bit the one a search through torch's own kernel picks."""
    from qtradeoff.core.compression.quantize import _mse_ratios

    skewed = torch.randn(24, 300, generator=_gen(7)) * torch.linspace(0.01, 3.0, 24).unsqueeze(1) + 0.3
    for x in (digits_weight.flatten(1), skewed):
        for bits in (2, 3, 4, 8):
            qmin, qmax = int_range(bits, symmetric)
            lo, hi = x.amin(1).clamp(max=0), x.amax(1).clamp(min=0)
            errors, grids = [], []
            for ratio in _mse_ratios().tolist():
                scale, zero_point = qparams_from_range(lo * ratio, hi * ratio, bits, symmetric)
                rounded = torch.fake_quantize_per_channel_affine(x, scale, zero_point, 0, qmin, qmax)
                errors.append((rounded - x).double().square().sum(dim=1))
                grids.append((scale, zero_point))
            best = torch.stack(errors).argmin(dim=0)
            scale, zero_point = weight_qparams(x, bits, symmetric, 0, "mse")
            for channel, index in enumerate(best.tolist()):
                assert float(scale[channel]) == float(grids[index][0][channel]), (bits, channel)
                assert int(zero_point[channel]) == int(grids[index][1][channel]), (bits, channel)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_weight_range_never_rounds_a_channel_worse(digits_weight, bits):
    """On a real layer (digits_cnn's pointwise conv), every channel's squared rounding error on the MSE grid is at
    most min-max's, and lower on most of them; the grid has the same number of scales."""
    errors = {}
    for method in ("minmax", "mse"):
        scale, zero_point = weight_qparams(digits_weight, bits, True, 0, method)
        assert scale.shape == (digits_weight.shape[0],)
        q = quantize_int(digits_weight, bits, axis=0, scale=scale, zero_point=zero_point)
        errors[method] = (q - digits_weight).double().square().flatten(1).sum(dim=1)
    assert torch.all(errors["mse"] <= errors["minmax"])
    # at 8 bits the 1/80 steps of the ratio rarely find a better clipping than min-max
    assert int((errors["mse"] < errors["minmax"]).sum()) > (digits_weight.shape[0] // 2 if bits < 8 else 0)


@pytest.fixture(scope="module")
def digits_weight():
    from safetensors.torch import load_file

    from qtradeoff.core.loading.data import SAMPLE_DIR

    state = load_file(SAMPLE_DIR / "digits_cnn.safetensors")
    return state["features.3.conv.weight"].to(torch.float32)
