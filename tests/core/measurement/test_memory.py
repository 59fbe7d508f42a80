"""Memory accounting: exact formula checks and agreement with a real bit-packed serialization."""

from __future__ import annotations

import math

import pytest
import torch

from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.loading.model_io import load_sample_model
from qtradeoff.core.measurement.memory import (
    activation_profile,
    index_width,
    pack_weights,
    sparse_options,
    unique_state,
    weight_memory,
)

CONFIGS = {
    "fp32": CompressionConfig(),
    "int8_channel_sym": CompressionConfig().with_defaults(weight={"precision": "int8"}),
    "int4_tensor_asym": CompressionConfig().with_defaults(
        weight={"precision": "int4", "granularity": "per_tensor", "symmetric": False}),
    "int3_pruned_90": CompressionConfig().with_defaults(
        weight={"precision": "int3", "symmetric": False}, prune={"method": "magnitude", "sparsity": 0.9}),
    "fp16_nm_2_4": CompressionConfig().with_defaults(weight={"precision": "fp16"}, prune={"method": "nm"}),
    "lut4_channel": CompressionConfig().with_defaults(weight={"precision": "lut4"}),
    "lut3_tensor_pruned_60": CompressionConfig().with_defaults(
        weight={"precision": "lut3", "granularity": "per_tensor"}, prune={"method": "magnitude", "sparsity": 0.6}),
    "mixed": CompressionConfig().with_defaults(weight={"precision": "int6"})
    .with_layer("features.3.conv", weight={"precision": "bf16"}, prune={"method": "structured", "sparsity": 0.5})
    .with_layer("features.5.conv", weight={"precision": "int12", "symmetric": False},
                prune={"method": "magnitude", "sparsity": 0.6})
    .with_layer("features.0.conv", skip=True)
    .with_layer("classifier.2", weight={"precision": "fp8_e4m3"}),
}


class _Model:
    """A sample model with what memory accounting reads: its state and the plans of configurations."""

    def __init__(self, name: str):
        self.loaded = load_sample_model(name)
        self.compressor = Compressor(self.loaded.module, example_input_shape=self.loaded.input_shape)
        self.state = unique_state(self.loaded.module)
        self.layers = self.compressor.inventory

    def memory(self, config):
        return weight_memory(self.state, self.compressor.plan(config))

    def packed(self, config):
        return pack_weights(self.state, self.compressor.plan(config))


@pytest.fixture(scope="module", params=["digits_cnn", "digits_mlp"])
def model(request):
    return _Model(request.param)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accounting_equals_packed_serialization(model, name):
    config = CONFIGS[name]
    memory = model.memory(config)
    packed = model.packed(config)
    assert abs(len(packed) - memory.weight_bytes) <= 0.01 * len(packed)
    assert len(packed) == memory.weight_bytes  # exact by construction; the 1% is the bar


def test_fp32_config_is_the_plain_state_dict(model):
    memory = model.memory(CompressionConfig())
    state_bytes = sum(t.numel() * t.element_size() for t in model.loaded.module.state_dict().values())
    assert memory.weight_bytes == memory.fp32_weight_bytes == state_bytes


def test_int8_per_channel_formula():
    mlp = _Model("digits_mlp")
    memory = mlp.memory(CONFIGS["int8_channel_sym"])
    expected = sum(info.weight_shape[0] * 4 + math.prod(info.weight_shape) for info in mlp.layers)  # scales + codes
    assert sum(t.total_bytes for t in memory.tensors) == expected


def test_sparse_index_only_where_it_shrinks():
    options = sparse_options(numel=1000, rows=10, kept=900, bits=4)
    assert options["bitmask"] == (450, 125)
    assert options["csr"] == (450, 11 * 2 + 900 * 1)
    # 90% kept at 4 bits: any index costs more than it saves, so the layer stays dense
    mlp = _Model("digits_mlp")
    light = CompressionConfig().with_defaults(weight={"precision": "int4"},
                                              prune={"method": "magnitude", "sparsity": 0.1})
    assert {t.index_format for t in mlp.memory(light).tensors} == {"dense"}
    heavy = light.with_defaults(prune={"sparsity": 0.95})
    assert {t.index_format for t in mlp.memory(heavy).tensors} <= {"csr", "bitmask"}


def test_index_width():
    assert [index_width(v) for v in (0, 255, 256, 65535, 65536)] == [1, 1, 2, 2, 4]


def test_peak_activation_at_activation_precision():
    mlp = _Model("digits_mlp")
    profile = activation_profile(mlp.loaded.module, torch.zeros(1, 64), mlp.layers)
    fp32 = profile.peak_bytes(mlp.compressor.plan(CompressionConfig()).settings)
    int8 = profile.peak_bytes(mlp.compressor.plan(CompressionConfig().with_defaults(
        activation={"precision": "int8"})).settings)
    assert fp32 == (512 + 512) * 4  # the 512 -> 512 layer: input and output live at once
    assert int8 == 512 + 512  # input and output both stored at the next layer's int8
    assert profile.sizes["layers.2"] == (512, 512)
    assert not any(h for m in mlp.loaded.module.modules() for h in (m._forward_hooks, m._forward_pre_hooks))
