"""Memory accounting: exact formula checks and agreement with a real bit-packed serialization."""

from __future__ import annotations

import math

import pytest
import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.loading.inventory import inventory
from qtradeoff.core.loading.model_io import load_sample_model
from qtradeoff.core.measurement.memory import (
    activation_profile,
    index_width,
    pack_weights,
    sparse_options,
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
    "mixed": CompressionConfig().with_defaults(weight={"precision": "int6"})
    .with_layer("features.3.conv", weight={"precision": "bf16"}, prune={"method": "structured", "sparsity": 0.5})
    .with_layer("features.5.conv", weight={"precision": "int12", "symmetric": False},
                prune={"method": "magnitude", "sparsity": 0.6})
    .with_layer("features.0.conv", skip=True)
    .with_layer("classifier.2", weight={"precision": "fp8_e4m3"}),
}


@pytest.fixture(scope="module", params=["digits_cnn", "digits_mlp"])
def model(request):
    loaded = load_sample_model(request.param)
    return loaded, inventory(loaded.module, loaded.input_shape)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accounting_equals_packed_serialization(model, name):
    loaded, layers = model
    config = CONFIGS[name]
    memory = weight_memory(loaded.module, config, layers)
    packed = pack_weights(loaded.module, config, layers)
    assert abs(len(packed) - memory.weight_bytes) <= 0.01 * len(packed)
    assert len(packed) == memory.weight_bytes  # exact by construction; the 1% is the bar


def test_fp32_config_is_the_plain_state_dict(model):
    loaded, layers = model
    memory = weight_memory(loaded.module, CompressionConfig(), layers)
    state_bytes = sum(t.numel() * t.element_size() for t in loaded.module.state_dict().values())
    assert memory.weight_bytes == memory.fp32_weight_bytes == state_bytes


def test_int8_per_channel_formula():
    loaded = load_sample_model("digits_mlp")
    layers = inventory(loaded.module, loaded.input_shape)
    memory = weight_memory(loaded.module, CONFIGS["int8_channel_sym"], layers)
    expected = sum(info.weight_shape[0] * 4 + math.prod(info.weight_shape) for info in layers)  # scales + codes
    assert sum(t.total_bytes for t in memory.tensors) == expected


def test_sparse_index_only_where_it_shrinks():
    options = sparse_options(numel=1000, rows=10, kept=900, bits=4)
    assert options["bitmask"] == (450, 125)
    assert options["csr"] == (450, 11 * 2 + 900 * 1)
    # 90% kept at 4 bits: any index costs more than it saves, so the layer stays dense
    loaded = load_sample_model("digits_mlp")
    layers = inventory(loaded.module, loaded.input_shape)
    light = CompressionConfig().with_defaults(weight={"precision": "int4"},
                                              prune={"method": "magnitude", "sparsity": 0.1})
    assert {t.index_format for t in weight_memory(loaded.module, light, layers).tensors} == {"dense"}
    heavy = light.with_defaults(prune={"sparsity": 0.95})
    assert {t.index_format for t in weight_memory(loaded.module, heavy, layers).tensors} <= {"csr", "bitmask"}


def test_index_width():
    assert [index_width(v) for v in (0, 255, 256, 65535, 65536)] == [1, 1, 2, 2, 4]


def test_peak_activation_at_activation_precision():
    loaded = load_sample_model("digits_mlp")
    layers = inventory(loaded.module, loaded.input_shape)
    example = torch.zeros(1, 64)
    fp32 = activation_profile(loaded.module, example, CompressionConfig(), layers)
    int8 = activation_profile(loaded.module, example, CompressionConfig().with_defaults(
        activation={"precision": "int8"}), layers)
    assert fp32.peak_bytes == (512 + 512) * 4  # the 512 -> 512 layer: input and output live at once
    assert int8.peak_bytes == 512 + 512  # input and output both stored at the next layer's int8
    assert fp32.sizes["layers.2"] == (512, 512)
