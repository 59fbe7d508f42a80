"""The roofline's kernel table decides how configurations rank (no timing here: the tables are given)."""

from __future__ import annotations

import pytest
import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.measurement import roofline

# digits_cnn-like: small convolutions (one depthwise) and a classifier, per sample
COSTS = [roofline.LayerCost("c1", 147_456, 576, 1024, 16384, "Conv2d"),
         roofline.LayerCost("c2", 1_179_648, 18432, 16384, 8192, "Conv2d"),
         roofline.LayerCost("dw", 73_728, 1152, 8192, 8192, "Conv2d", groups=32),
         roofline.LayerCost("c3", 524_288, 8192, 8192, 4096, "Conv2d"),
         roofline.LayerCost("fc", 1280, 5160, 128, 10, "Linear")]


def _machine(kernels: dict, boundary=(4e-6, 1e-9)) -> roofline.Roofline:
    return roofline.Roofline({"fp32": 3e10, "bf16": 5e8, "fp16": 5e8, "int8": 5e10}, 2e10, 4e-5, "cpu", 2,
                             torch.__version__, 0.0, 0.0, kernels=kernels, boundary=boundary)


def _settings(precision: str) -> dict:
    config = CompressionConfig().with_defaults(weight={"precision": precision}, activation={"precision": precision})
    return {cost.name: config.resolve(cost.name) for cost in COSTS}


def _table(fp32: tuple, int8: tuple, fp16: tuple) -> dict:
    return {name: {"conv": line, "dwconv": (line[0] * 2, line[1] / 4), "linear": line}
            for name, line in (("fp32", fp32), ("int8", int8), ("fp16", fp16), ("bf16", fp16))}


@pytest.mark.parametrize("batch", [1, 32])
def test_calibrated_estimates_rank_precisions_as_the_kernel_table_says(batch):
    # int8 kernels cheaper per call and per MAC than fp32, fp16 emulated: fp32 > int8, fp16 slowest
    fast_int8 = _machine(_table(fp32=(3e-5, 1e10), int8=(1e-5, 3e10), fp16=(4e-5, 3e8)))
    ms = {p: roofline.estimate_ms(COSTS, _settings(p), fast_int8, batch)[0] for p in ("fp32", "int8", "fp16")}
    assert ms["fp16"] > ms["fp32"] > ms["int8"]
    # a machine whose int8 kernels are slower (e.g. no VNNI, tiny layers): the estimate follows it
    slow_int8 = _machine(_table(fp32=(1e-5, 3e10), int8=(6e-5, 8e9), fp16=(4e-5, 3e8)))
    assert (roofline.estimate_ms(COSTS, _settings("int8"), slow_int8, batch)[0]
            > roofline.estimate_ms(COSTS, _settings("fp32"), slow_int8, batch)[0])
    # the fixed costs are per precision, not one overhead for all: fp32 and int8 no longer tie
    assert ms["fp32"] / ms["int8"] > 1.5


def test_int8_runs_pay_a_quantize_and_a_dequantize_and_sub8_bits_keep_their_assumption():
    machine = _machine(_table(fp32=(3e-5, 1e10), int8=(1e-5, 3e10), fp16=(4e-5, 3e8)), boundary=(1e-4, 0.0))
    int8 = _settings("int8")
    one_run, _ = roofline.estimate_ms(COSTS, int8, machine, 1)
    split = dict(int8, c3=_settings("fp32")["c3"])  # a float layer in the middle: two int8 runs
    two_runs, _ = roofline.estimate_ms(COSTS, split, machine, 1)
    fp32_c3 = roofline._layer_seconds(COSTS[3], split["c3"], machine, 1, "fp32", 1.0)
    int8_c3 = roofline._layer_seconds(COSTS[3], int8["c3"], machine, 1, "int8", 1.0)
    assert two_runs - one_run == pytest.approx((fp32_c3 - int8_c3 + 1e-4) * 1e3)  # one more boundary pair
    ms4, used = roofline.estimate_ms(COSTS, _settings("int4"), machine, 1)
    assert ms4 < one_run and "int<8" in used


def test_kernel_kinds_and_the_cache_key():
    assert [roofline.kernel_kind(c) for c in COSTS] == ["conv", "conv", "dwconv", "conv", "linear"]
    assert roofline.cache_path(1) != roofline.cache_path(2)  # one calibration per thread count
    assert str(roofline.cache_path(2)).endswith(f"-2-{torch.__version__}.json")  # and per torch version
