"""Model loading: one test per accepted format and per bad input, trust refusals, and the isolated child."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from qtradeoff.core import tvcompat
from qtradeoff.core.loading import _load_child, architectures
from qtradeoff.core.loading.model_io import (
    SAMPLE_DIR,
    LoadedModel,
    ModelLoadError,
    NeedsTrust,
    check_forward,
    load_model,
    load_sample_model,
    match_architecture,
    unwrap_state_dict,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Model files shared by the tests of this module, written once."""
    root = tmp_path_factory.mktemp("models")
    models = tvcompat.models()
    torch.manual_seed(0)
    paths = {}
    paths["resnet18"] = root / "resnet18_weights.bin"  # extension deliberately meaningless
    torch.save(models.resnet18(num_classes=10).state_dict(), paths["resnet18"])
    # A training checkpoint: weights nested under "state_dict" with DataParallel's "module." prefix.
    mobilenet = models.mobilenet_v3_small(num_classes=10).state_dict()
    paths["mobilenet"] = root / "mobilenet_ckpt.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in mobilenet.items()}}, paths["mobilenet"])
    mlp = architectures.build("qtradeoff.digits_mlp")
    paths["legacy"] = root / "mlp_legacy.pt"
    torch.save(mlp.state_dict(), paths["legacy"], _use_new_zipfile_serialization=False)

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x)

    paths["pt2"] = root / "affine.pt2"
    torch.export.save(torch.export.export(Affine().eval(), (torch.randn(1, 4),)), paths["pt2"])
    return root, paths


@pytest.fixture(scope="module")
def sample_cnn():
    return load_sample_model("digits_cnn")


def _assert_names_file(error: pytest.ExceptionInfo, path) -> None:
    assert str(path) in str(error.value) or os.path.basename(path) in str(error.value)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------ good formats


@pytest.fixture
def sample_copy(tmp_path):
    """The digits_cnn sample's tensors and metadata saved again with one more metadata entry: a user's file (other
    bytes, other sha256) that loads like the sample."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    source = SAMPLE_DIR / "digits_cnn.safetensors"
    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    path = tmp_path / "my_digits_cnn.safetensors"
    save_file(load_file(source), str(path), metadata={**metadata, "note": "fine-tuned by a user"})
    return path


def test_only_the_bundled_samples_own_bytes_skip_the_isolated_probe(sample_copy, monkeypatch):
    probed = []
    real = _load_child.run_isolated
    monkeypatch.setattr(_load_child, "run_isolated", lambda *a, **k: probed.append(k["label"]) or real(*a, **k))
    load_model(SAMPLE_DIR / "digits_cnn.safetensors")
    assert probed == []  # matched by sha256: no second import of torch in a child
    loaded = load_model(sample_copy)
    assert probed == [str(sample_copy)] and loaded.architecture == "qtradeoff.digits_cnn"


def test_safetensors_with_architecture_metadata():
    loaded = load_model(SAMPLE_DIR / "digits_cnn.safetensors")
    assert isinstance(loaded, LoadedModel)
    assert (loaded.format, loaded.architecture, loaded.num_classes) == ("safetensors", "qtradeoff.digits_cnn", 10)
    assert loaded.input_shape == (1, 32, 32)  # the sample is recognised by its sha256
    assert not loaded.trusted and not loaded.module.training
    assert loaded.file_bytes == (SAMPLE_DIR / "digits_cnn.safetensors").stat().st_size
    assert loaded.load_seconds > 0 and len(loaded.sha256) == 64


def test_state_dict_resnet18_detected_from_names_and_shapes(files):
    _root, paths = files
    loaded = load_model(paths["resnet18"])  # isolated: the child finds the architecture, the parent reuses it
    assert (loaded.format, loaded.architecture, loaded.num_classes) == ("state_dict", "torchvision.resnet18", 10)
    assert loaded.input_shape is None  # not a sample: the caller supplies the data's shape
    assert check_forward(loaded, (3, 32, 32)).shape == (1, 10)


def test_state_dict_mobilenet_nested_checkpoint_detected(files):
    _root, paths = files
    loaded = load_model(paths["mobilenet"], isolate=False)
    assert (loaded.format, loaded.architecture, loaded.num_classes) == (
        "state_dict", "torchvision.mobilenet_v3_small", 10)


def test_legacy_non_zip_state_dict(files):
    _root, paths = files
    loaded = load_model(paths["legacy"], isolate=False)
    assert (loaded.format, loaded.architecture) == ("state_dict", "qtradeoff.digits_mlp")


def test_state_dict_with_explicit_architecture_and_callable(files, tmp_path):
    state = architectures.build("qtradeoff.digits_mlp", num_classes=5).state_dict()
    path = tmp_path / "mlp5.pth"
    torch.save(state, path)
    loaded = load_model(path, architecture="qtradeoff.digits_mlp", isolate=False)
    assert loaded.num_classes == 5
    spec = "qtradeoff.core.loading.architectures:DigitsMLP"
    with pytest.raises(NeedsTrust) as refused:
        load_model(path, architecture=spec, isolate=False)
    assert refused.value.globals == [spec]
    _assert_names_file(refused, path)
    assert load_model(path, architecture=spec, trust=True, isolate=False).trusted


def test_full_pickled_torchvision_module_loads_without_trust():
    loaded = load_model(SAMPLE_DIR / "mobilenet_v3_small_digits.pt")
    assert loaded.format == "pickle" and not loaded.trusted
    assert type(loaded.module).__name__ == "MobileNetV3"


def test_torchscript_needs_trust_then_loads():
    path = SAMPLE_DIR / "digits_cnn.torchscript.pt"
    with pytest.raises(NeedsTrust) as refused:
        load_model(path, isolate=False)
    assert refused.value.format == "torchscript"
    _assert_names_file(refused, path)
    loaded = load_model(path, trust=True)
    assert loaded.format == "torchscript" and loaded.trusted
    assert check_forward(loaded, loaded.input_shape).shape == (1, 10)


def test_torch_export_program_needs_trust_then_loads(files):
    _root, paths = files
    with pytest.raises(NeedsTrust) as refused:
        load_model(paths["pt2"], isolate=False)
    assert refused.value.format == "export"
    loaded = load_model(paths["pt2"], trust=True)
    assert loaded.format == "export"
    assert check_forward(loaded, (4,)).shape == (1, 3)


def test_match_architecture_and_unwrap_helpers():
    state = architectures.build("qtradeoff.digits_cnn", num_classes=7).state_dict()
    assert match_architecture(state) == ("qtradeoff.digits_cnn", 7)
    wrapped = {"model": {f"_orig_mod.{k}": v for k, v in state.items()}, "optimizer": {}}
    assert unwrap_state_dict(wrapped).keys() == state.keys()
    assert match_architecture({"nonsense.weight": torch.zeros(3)}) is None


# ------------------------------------------------------------------------------------------------ bad inputs


def _bad(path, *, error=ModelLoadError, **kwargs):
    with pytest.raises(error) as caught:
        load_model(path, isolate=False, **kwargs)
    _assert_names_file(caught, path)
    return str(caught.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    assert "empty" in _bad(path)


def test_truncated_archive(tmp_path):
    data = (SAMPLE_DIR / "digits_mlp.pth").read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _bad(path)


def test_truncated_safetensors(tmp_path):
    data = (SAMPLE_DIR / "digits_cnn.safetensors").read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _bad(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1)).tolist()))
    assert "not a recognised model file" in _bad(path)


def test_directory(tmp_path):
    assert "directory" in _bad(tmp_path)


def test_missing_and_dangling_symlink(tmp_path):
    link = tmp_path / "gone.pt"
    link.symlink_to(tmp_path / "deleted.pt")
    assert "does not exist" in _bad(link)


def test_fifo_is_not_opened(tmp_path):
    # Opening a FIFO would block forever; it must be refused from its stat alone.
    path = tmp_path / "pipe.pt"
    os.mkfifo(path)
    assert "not a regular file" in _bad(path)


def test_unreadable_file(tmp_path, monkeypatch):
    # Tests run as root, for whom chmod 000 changes nothing; simulate the kernel's refusal at open().
    path = tmp_path / "locked.pt"
    path.write_bytes((SAMPLE_DIR / "digits_mlp.pth").read_bytes())
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    assert "Permission denied" in _bad(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_mode(tmp_path):
    path = tmp_path / "locked.pt"
    path.write_bytes(b"x" * 10)
    path.chmod(0)
    assert "cannot be read" in _bad(path)


def test_file_larger_than_memory_budget():
    path = SAMPLE_DIR / "mobilenet_v3_small_digits.pt"
    assert "memory budget" in _bad(path, memory_budget=MIB)


def test_zip_bomb_member(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb/data.pkl", "w") as member:
            chunk = bytes(MIB)
            for _ in range(80):
                member.write(chunk)
    assert path.stat().st_size < MIB
    assert "zip bomb" in _bad(path, memory_budget=1 << 30)
    assert "memory budget" in _bad(path, memory_budget=8 * MIB)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("photo.pt", b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG image"),
        ("photo2.pth", b"\xff\xd8\xff\xe0" + bytes(64), "JPEG image"),
        ("config.pt", b'{"schema": "qtradeoff.config/1", "layers": {}}', "JSON file"),
    ],
)
def test_image_or_json_given_as_model(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert expected in _bad(path)


def test_npz_given_as_model():
    assert "load it as data" in _bad(SAMPLE_DIR / "digits.npz")


def test_state_dict_matching_no_architecture(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"encoder.weight": torch.zeros(3, 5), "decoder.weight": torch.zeros(5, 3)}, path)
    message = _bad(path)
    assert message == (
        "x.pth is a state_dict that matches no known architecture; "
        "pass --architecture package.module:callable (needs --trust)."
    )


def test_forward_failing_on_the_data_input_shape(sample_cnn):
    with pytest.raises(ModelLoadError) as caught:
        check_forward(sample_cnn, (64,))
    assert str(sample_cnn.path) in str(caught.value) and "(64,)" in str(caught.value)


class _CreatesFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("container", ["torch_zip", "torch_legacy", "plain_pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, container):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    payload = {"weights": torch.zeros(2), "payload": _CreatesFile(str(target))}
    if container == "torch_zip":
        torch.save(payload, path)
    elif container == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not target.exists()
    with pytest.raises(NeedsTrust) as refused:
        load_model(path, isolate=(container == "torch_zip"))  # the default, isolated path too
    assert "io.open" in refused.value.globals
    _assert_names_file(refused, path)
    assert not target.exists(), "the pickle's payload ran"


def test_previously_loaded_model_stays_usable(sample_cnn, tmp_path):
    x = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        before = sample_cnn.module(x)
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError):
        load_model(path)
    with torch.no_grad():
        assert torch.equal(sample_cnn.module(x), before)


# ------------------------------------------------------------------------------------------------ isolation


def test_child_crash_is_reported_and_parent_survives(sample_cnn):
    with pytest.raises(ModelLoadError) as caught:
        _load_child.run_isolated({"path": "crash.pt"}, timeout=60, memory_bytes=256 * MIB, label="crash.pt",
                                 target="qtradeoff.core.loading._load_child:_abort_for_tests")
    assert "crash.pt: the loader crashed (signal 6, SIGABRT)" in str(caught.value)
    assert check_forward(sample_cnn, (1, 32, 32)).shape == (1, 10)


def test_child_memory_limit(sample_cnn):
    verdict = _load_child.run_isolated({"path": "hog.pt"}, timeout=60, memory_bytes=256 * MIB, label="hog.pt",
                                       target="qtradeoff.core.loading._load_child:_exhaust_memory_for_tests")
    assert not verdict["ok"] and "hog.pt: the loader ran out of memory" in verdict["message"]


def test_child_timeout():
    with pytest.raises(ModelLoadError) as caught:
        _load_child.run_isolated({"path": "slow.pt"}, timeout=0.5, memory_bytes=256 * MIB, label="slow.pt",
                                 target="qtradeoff.core.loading._load_child:_hang_for_tests")
    assert "slow.pt: the loader took longer than 0.5 s" in str(caught.value)


def test_checkpoint_without_batchnorm_counters_and_safetensors_metadata(tmp_path):
    from safetensors.torch import save_file

    state = architectures.build("qtradeoff.digits_cnn").state_dict()
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # as older PyTorch saved
    path = tmp_path / "old.pth"
    torch.save(old, path)
    assert load_model(path, isolate=False).architecture == "qtradeoff.digits_cnn"
    path = tmp_path / "plain.safetensors"
    save_file(old, str(path), metadata={"input_shape": "[1, 32, 32]"})
    loaded = load_model(path, isolate=False)
    assert (loaded.architecture, loaded.input_shape) == ("qtradeoff.digits_cnn", (1, 32, 32))


def test_loader_server_killed_from_outside_is_restarted(sample_copy):
    load_model(sample_copy)  # make sure the server runs
    server = _load_child.SERVER.process
    server.kill()
    server.wait()
    loaded = load_model(sample_copy)
    assert loaded.format == "safetensors" and _load_child.SERVER.process is not server


@pytest.mark.parametrize("builder", ["squeezenet1_0", "mnasnet0_5"])
def test_state_dicts_with_conv_heads_or_versioned_modules_load(tmp_path, builder):
    # SqueezeNet's head is a 1×1 convolution (no Linear to read the class count from); MNASNet reads the
    # module version torch.save stores in the state dict's _metadata while loading.
    from qtradeoff.core.loading import architectures

    torch.manual_seed(0)
    model = architectures.build(f"torchvision.{builder}", num_classes=7).eval()
    path = tmp_path / f"{builder}.pth"
    torch.save({"state_dict": model.state_dict()}, path)  # wrapped, as training checkpoints are
    loaded = load_model(path, input_shape=(3, 64, 64))
    assert (loaded.architecture, loaded.num_classes) == (f"torchvision.{builder}", 7)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model(x))
