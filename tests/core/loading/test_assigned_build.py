"""Registry architectures are built on the meta device and take the file's tensors as they are (no random
initialization, no second copy), exactly as a real build plus load_state_dict would give."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from qtradeoff.core.loading import architectures, model_io


def _state():
    torch.manual_seed(0)
    return {k: v.clone() for k, v in architectures.build("qtradeoff.digits_cnn").state_dict().items()}


def test_assigned_build_holds_the_file_tensors_without_copying():
    state = _state()
    module = model_io._build_assigned("qtradeoff.digits_cnn", None, state)
    assert module is not None
    loaded = module.state_dict(keep_vars=True)
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key
        assert loaded[key].data_ptr() == tensor.data_ptr(), key  # the file's tensor, not a copy
    assert not any(t.is_meta for t in (*module.parameters(), *module.buffers()))
    assert all(isinstance(p, torch.nn.Parameter) for p in module.parameters())


def test_assigned_build_casts_like_copying_and_fills_batchnorm_counters(tmp_path):
    state = _state()
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()
            if not k.endswith("num_batches_tracked")}
    path = tmp_path / "half.safetensors"
    save_file(half, str(path))
    loaded = model_io.load_model(path, architecture="qtradeoff.digits_cnn", isolate=False)
    reference = architectures.build("qtradeoff.digits_cnn")
    reference.load_state_dict(half, strict=False)  # what a real build and a copy give
    for key, tensor in reference.state_dict().items():
        got = loaded.module.state_dict()[key]
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), key


def test_assigned_build_unties_one_tensor_saved_for_two_parameters():
    state = _state()
    shared = state["features.1.bn.weight"]
    state["features.1.bn.bias"] = shared  # same storage under two untied names, as a hand-made file could hold
    module = model_io._build_assigned("qtradeoff.digits_cnn", None, state)
    bn = module.get_submodule("features.1.bn")
    assert torch.equal(bn.weight, bn.bias) and bn.weight.data_ptr() != bn.bias.data_ptr()


def test_assigned_build_declines_a_state_that_does_not_cover_the_model():
    state = _state()
    del state["features.0.conv.weight"]
    assert model_io._build_assigned("qtradeoff.digits_cnn", None, state) is None
    state = _state()
    state["features.0.conv.weight"] = state["features.0.conv.weight"][:1]
    assert model_io._build_assigned("qtradeoff.digits_cnn", None, state) is None
