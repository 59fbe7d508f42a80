"""Issue 20 in the loader itself (in-process, fast): the allow-list admits data, not calls; pickles, archives and
data files are judged by what they would allocate before anything is; odd names and protocols are named."""

from __future__ import annotations

import io
import os
import zipfile

import hostile_files as hostile
import pytest
import torch
from torch import nn

from qtradeoff.core.loading import _files, architectures
from qtradeoff.core.loading.data import DataLoadError, load_data
from qtradeoff.core.loading.model_io import (
    ModelLoadError,
    NeedsTrust,
    load_in_process,
    load_model,
    safe_module_classes,
    unsafe_globals,
)

pytestmark = pytest.mark.timeout(60)
BUDGET = 4 << 30


def _global_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_every_allow_listed_class_called_with_arguments_needs_trust(tmp_path):
    """REDUCE and NEWOBJ with arguments from the file, for each class on the allow-list (the scan never runs it)."""
    classes = safe_module_classes()
    assert len(classes) > 100
    for opcode in (b"R", b"\x81"):
        for cls in classes:
            module, name = cls.__module__, cls.__qualname__
            pickle = (hostile.PROTO2 + hostile._global(module, name) + hostile._tuple(hostile._int(3)) + opcode + b".")
            path = hostile.torch_zip(tmp_path / "call.pt", pickle)
            assert unsafe_globals(path, "torch_zip") == [f"{_global_name(cls)} called with arguments"], cls
    with pytest.raises(NeedsTrust, match="Linear called with arguments") as refused:
        load_in_process(hostile.linear_called_with_args(tmp_path), trust=False, architecture=None, budget=BUDGET)
    assert refused.value.globals == ["torch.nn.modules.linear.Linear called with arguments"]
    assert "\n" not in str(refused.value)


def test_modules_rebuilt_from_their_state_stay_safe(tmp_path):
    """torch.save(model) reconstructs modules by NEWOBJ with no arguments and BUILD: data, loaded without trust."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3))
    path = tmp_path / "module.pt"
    torch.save(model, path)
    scan = _files.scan_file(path, "torch_zip")
    assert not any(name.startswith("torch.nn.") for name, _ in scan.calls)
    assert unsafe_globals(path, "torch_zip") == []
    loaded, _ = load_in_process(path, trust=False, architecture=None, budget=BUDGET)
    assert isinstance(loaded.module, nn.Sequential) and loaded.module[0].weight.shape == (4, 1, 3, 3)


def test_a_partial_needs_trust_even_as_a_forward_replacement(tmp_path):
    path = hostile.partial_forward(tmp_path)
    with pytest.raises(NeedsTrust, match="functools.partial"):
        load_in_process(path, trust=False, architecture=None, budget=BUDGET)


def test_the_scan_counts_storages_and_stride0_tensors_at_full_size(tmp_path):
    path = tmp_path / "views.pt"
    torch.save({"small": torch.zeros(10, dtype=torch.float64), "view": torch.zeros(1).expand(1000, 1000)}, path)
    scan = _files.scan_file(path, "torch_zip")
    assert scan.storage_bytes == 10 * 8 + 4
    assert scan.tensor_bytes == 10 * 8 + 1000 * 1000 * 4 and scan.largest == (1000, 1000)
    legacy = tmp_path / "legacy.pt"
    torch.save({"view": torch.zeros(1).expand(3000, 3000)}, legacy, _use_new_zipfile_serialization=False)
    assert _files.scan_file(legacy, "pickle").tensor_bytes == 3000 * 3000 * 4
    with pytest.raises(ModelLoadError, match="more than the memory budget of 1.0 MiB"):
        load_in_process(path, trust=False, architecture=None, budget=1 << 20)


def test_protocol_4_is_named_and_loads_with_trust(tmp_path):
    path = hostile.protocol4(tmp_path)
    with pytest.raises(NeedsTrust, match="saved with pickle protocol 4, which safe loading cannot read"):
        load_in_process(path, trust=False, architecture=None, budget=BUDGET)
    loaded, _ = load_in_process(path, trust=True, architecture=None, budget=BUDGET)
    assert loaded.architecture == "qtradeoff.digits_mlp"
    data = tmp_path / "data4.pt"
    torch.save({"inputs": torch.zeros(10, 64)}, data, pickle_protocol=4)
    with pytest.raises(DataLoadError, match="pickle protocol 4"):
        load_data(data, isolate=False)


def test_zip_members_must_match_their_directory_entry(tmp_path):
    with pytest.raises(ModelLoadError, match="inflates to more than the 576 bytes its directory entry states"):
        load_in_process(hostile.lying_zip_member(tmp_path, inflated=8 << 20), trust=False, architecture=None,
                        budget=BUDGET)
    path = tmp_path / "flipped.pt"
    torch.save({"weight": torch.randn(1000)}, path)
    with zipfile.ZipFile(path) as archive:
        member = next(info for info in archive.infolist() if info.filename.endswith("data/0"))
    raw = bytearray(path.read_bytes())
    raw[member.header_offset + 30 + len(member.filename.encode()) + len(member.extra) + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="'flipped/data/0' fails its CRC check"):
        load_in_process(path, trust=False, architecture=None, budget=BUDGET)
    compressed = tmp_path / "deflated.npz"  # a real deflated archive still reads
    import numpy as np

    np.savez_compressed(compressed, inputs=np.zeros((30, 64), dtype=np.float32))
    assert load_data(compressed, isolate=False).eval_inputs.shape[1:] == (64,)


def test_a_name_that_is_not_utf8_loads(tmp_path):
    path = hostile.non_utf8_name(tmp_path)
    assert b"\xe9" in os.fsencode(path)
    loaded = load_model(path)  # isolated: the name crosses the loader's JSON protocol too
    assert loaded.architecture == "qtradeoff.digits_mlp" and loaded.format == "safetensors"
    data = os.fsdecode(os.fsencode(tmp_path) + b"/donn\xe9es.safetensors")
    from safetensors.torch import save

    with open(data, "wb") as handle:
        handle.write(save({"inputs": torch.zeros(20, 64)}))
    assert load_data(data, isolate=False).calib_inputs.shape[1:] == (64,)


def test_a_converting_architecture_is_not_built_for_a_file_that_cannot_fill_it(tmp_path):
    """ViT keeps its own _load_from_state_dict (old checkpoints), so key names cannot be judged on meta; sizes can."""
    with pytest.raises(ModelLoadError, match=r"vit_h_14 \(its tensors hold 0 bytes"):
        load_in_process(hostile.vit_h_metadata(tmp_path), trust=False, architecture=None, budget=BUDGET)


def test_data_is_probed_in_the_loader_child_and_bounded(tmp_path):
    with pytest.raises(DataLoadError, match="broadcast views"):
        load_data(hostile.stride0_data(tmp_path))
    good = tmp_path / "good.pt"
    torch.save({"inputs": torch.randn(30, 64), "labels": torch.arange(30) % 10}, good)
    assert load_data(good).num_classes == 10


def test_a_whole_module_pickle_with_stride0_weights_is_refused_before_it_loads(tmp_path):
    model = architectures.build("qtradeoff.digits_mlp")
    model.layers[4].weight = nn.Parameter(torch.zeros(1).expand(10**6, 512))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    path = tmp_path / "module_views.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ModelLoadError, match="broadcast views"):
        load_in_process(path, trust=False, architecture=None, budget=BUDGET)


def test_a_trusted_file_is_not_loaded_again_after_costing_more_than_the_budget_in_the_loader(tmp_path):
    """Trusted code cannot be estimated; what it cost in the child bounds the load in this process."""
    pickle = (hostile.PROTO2 + hostile._global("torch.nn.modules.linear", "Linear")
              + hostile._tuple(hostile._int(3000), hostile._int(3000)) + b"R.")
    path = hostile.torch_zip(tmp_path / "trusted_call.pt", pickle)  # a 36 MB layer when called
    with pytest.raises(ModelLoadError, match="in the loader process, more than the memory budget of 16.0 MiB"):
        load_model(path, trust=True, memory_budget=16 << 20)
    assert load_model(path, trust=True, memory_budget=256 << 20).module.weight.shape == (3000, 3000)


@pytest.mark.parametrize(("make", "called"), [(hostile.bytearray_of_a_gigabyte, "builtins.bytearray"),
                                              (hostile.legacy_tensor_constructor, "torch.FloatTensor")])
def test_torch_defaults_that_allocate_a_size_from_the_file_need_trust(tmp_path, make, called):
    path = make(tmp_path)
    with pytest.raises(NeedsTrust, match=f"{called} called with a size"):
        load_in_process(path, trust=False, architecture=None, budget=BUDGET)
    data = tmp_path / "as_data.pt"
    data.write_bytes(path.read_bytes())
    with pytest.raises(DataLoadError, match=f"{called} called with a size"):
        load_data(data, isolate=False)


def test_the_fifth_pickle_of_a_legacy_file_is_scanned_too(tmp_path):
    """torch.load reads a legacy file's storage-key list with the same unpickler: a call hidden there counts."""
    import pickle

    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    hidden = (hostile.PROTO2 + hostile._global("torch.nn.modules.linear", "Linear")
              + hostile._tuple(hostile._int(30000), hostile._int(30000)) + b"R.")
    path = tmp_path / "legacy_hidden.pt"
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in (MAGIC_NUMBER, PROTOCOL_VERSION,
                                                                          {"little_endian": True}, {}))
                     + hidden)
    assert unsafe_globals(path, "pickle") == ["torch.nn.modules.linear.Linear called with arguments"]
