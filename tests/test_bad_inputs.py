"""Bad inputs through the real command line, one table per kind of file: configurations, data, weights.

Each case builds its bad file in ``tmp_path`` and runs ``qtradeoff.cli.main`` in-process. A refusal must be the
documented exit code and exactly one line on stderr that names the file, with no traceback; a case documented
as a warning must succeed with the warning in the table. Every test has a time limit: a FIFO or a device that
blocked, or an absurd model that was really built, fails by timeout instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qtradeoff import cli
from qtradeoff.core import config as cfg
from qtradeoff.core.errors import EXIT_INPUT, EXIT_OK
from qtradeoff.core.loading import architectures

pytestmark = pytest.mark.timeout(30)

SCHEMA = {"schema": cfg.SCHEMA}
VALID = json.dumps({**SCHEMA, "defaults": {"weight": {"precision": "int8"}}})


def _refused(capsys, command: str, file: Path | str, code: int = EXIT_INPUT, argv: list[str] | None = None,
             expect: str = "") -> str:
    assert cli.main(argv) == code
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"qtradeoff {command}: error: ") and "Traceback" not in err, err
    assert str(file) in err, err
    assert expect in err, err
    return err


# -- configuration files ------------------------------------------------------------------------------------------

def _write(content: bytes | str) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "config.json"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path
    return make


def _fifo(name: str) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        return path
    return make


def _oversized(tmp_path: Path) -> Path:
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:  # sparse: costs no disk
        handle.truncate(cfg.MAX_CONFIG_BYTES + 1)
    return path


CONFIG_CASES = {
    "not UTF-8": (_write(b'{"schema": "qtradeoff.config/1", "model": {"file": "caf\xe9.pt"}}'), "UTF-8"),
    "UTF-16 with BOM": (_write(VALID.encode("utf-16")), "UTF-8"),
    "UTF-16 without BOM": (_write(VALID.encode("utf-16-le")), "UTF-8"),
    "duplicate top-level key": (_write('{"schema": "qtradeoff.config/1", "schema": "qtradeoff.config/1"}'),
                                "$: the key 'schema' appears more than once"),
    "duplicate nested key": (_write('{"schema": "qtradeoff.config/1", "defaults": {"weight": '
                                    '{"precision": "int8", "precision": "int4"}}}'),
                             "$.defaults.weight: the key 'precision'"),
    "duplicate key under a layer name": (_write('{"schema": "qtradeoff.config/1", "layers": {"layers.0": '
                                                '{"skip": true, "skip": false}}}'),
                                         '$.layers["layers.0"]: the key \'skip\''),
    "FIFO": (_fifo("config.json"), "not a regular file"),
    "/dev/zero": (lambda tmp_path: Path("/dev/zero"), "not a regular file"),
    "link to /dev/zero": (lambda tmp_path: _link(tmp_path / "zero.json", "/dev/zero"), "not a regular file"),
    "directory": (lambda tmp_path: tmp_path, "is a directory"),
    "over the size limit": (_oversized, "MiB"),
}


def _link(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_file_is_refused_in_one_line(case, tmp_path, capsys):
    make, expect = CONFIG_CASES[case]
    path = make(tmp_path)
    argv = ["evaluate", "digits_mlp", "--config", str(path), "--latency", "none", "--eval-size", "8"]
    _refused(capsys, "evaluate", path, argv=argv, expect=expect)


@pytest.mark.parametrize("case", ["FIFO", "/dev/zero", "duplicate nested key", "UTF-16 with BOM"])
def test_the_gui_import_reads_configs_the_same_way(case, tmp_path):
    pytest.importorskip("PySide6")
    from qtradeoff.gui.file_actions import FileError, configuration_from_file

    make, expect = CONFIG_CASES[case]
    path = make(tmp_path)
    with pytest.raises(FileError, match="Nothing was applied") as caught:
        configuration_from_file(path, None)
    assert expect in str(caught.value) and path.name in str(caught.value)


def test_a_byte_order_mark_is_tolerated(tmp_path):
    path = _write(b"\xef\xbb\xbf" + VALID.encode())(tmp_path)
    assert cfg.from_json_file(path).weight.precision == "int8"


def test_a_config_file_error_survives_pickling():  # errors cross process boundaries (worker processes)
    import pickle

    error = cfg.ConfigFileError("a.json", "$.defaults", "bad")
    again = pickle.loads(pickle.dumps(error))
    assert (again.file, again.path, again.problem, str(again)) == ("a.json", "$.defaults", "bad", str(error))


# -- data files ---------------------------------------------------------------------------------------------------

def _digits_like(count: int = 40) -> torch.Tensor:
    return torch.rand(count, 1, 32, 32)


def _tensor_file(name: str, inputs) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        if name.endswith(".npz"):
            np.savez(path, inputs=inputs.numpy())
        else:
            torch.save({"inputs": inputs, "labels": torch.zeros(len(inputs), dtype=torch.long)}, path)
        return path
    return make


def _with(value: float, samples: tuple[int, ...]) -> torch.Tensor:
    inputs = _digits_like()
    for index in samples:
        inputs[index, 0, index % 32, 0] = value
    return inputs


def _image_folder_with_a_fifo(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / label / f"{index}.png")
    os.mkfifo(root / "a" / "stuck.png")
    return root / "a" / "stuck.png"


DATA_CASES = {
    "NaN inputs": (_tensor_file("nan.pt", _with(float("nan"), (3, 7, 9))), "in 3 of 40 samples"),
    "Inf inputs (npz)": (_tensor_file("inf.npz", _with(float("inf"), (0,))), "in 1 of 40 samples"),
    "-Inf inputs": (_tensor_file("neginf.pt", _with(float("-inf"), (5, 6))), "in 2 of 40 samples"),
    "complex inputs": (_tensor_file("complex.pt", torch.rand(40, 1, 32, 32, dtype=torch.complex64)), "complex64"),
    "FIFO as the data file": (_fifo("data.pt"), "not a regular file"),
    "FIFO named .png in an image folder": (_image_folder_with_a_fifo, "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_is_refused_in_one_line(case, tmp_path, capsys):
    make, expect = DATA_CASES[case]
    named = make(tmp_path)
    source = named.parents[1] if named.suffix == ".png" else named  # the folder is what the user passes
    argv = ["evaluate", "digits_cnn", "--data", str(source), "--latency", "none"]
    _refused(capsys, "evaluate", named, argv=argv, expect=expect)


# -- weights ------------------------------------------------------------------------------------------------------

def _state(name: str) -> dict[str, torch.Tensor]:
    return dict(architectures.build(name).state_dict())


def _viewed(name: str, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """``name``'s state dict with some tensors replaced by broadcast views: a tiny file claiming huge shapes."""
    state = _state(name)
    for key, shape in shapes.items():
        state[key.replace("__", ".")] = torch.zeros(1).expand(*shape)
    return state


def _saved(state: dict, name: str, metadata: dict | None = None) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        if name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, path, metadata=metadata)
        else:
            torch.save(state, path)
        return path
    return make


ABSURD_CASES = {
    "a 30000x30000 Linear": (lambda: _viewed("qtradeoff.digits_mlp", layers__2__weight=(30000, 30000)), ".pt",
                             None, "30000×30000"),
    "a 10^6-class head": (lambda: _viewed("qtradeoff.digits_mlp", layers__4__weight=(10**6, 512),
                                          layers__4__bias=(10**6,)), ".pt", None, "1000000×512"),
    "a head over the memory budget": (lambda: _viewed("qtradeoff.digits_mlp", layers__4__weight=(10**7, 512),
                                                      layers__4__bias=(10**7,)), ".pt", None, "memory budget"),
    "metadata asking for 10^6 classes": (lambda: _state("qtradeoff.digits_cnn"), ".safetensors",
                                         {"architecture": "qtradeoff.digits_cnn", "num_classes": "1000000"},
                                         "does not fit"),
    "metadata asking for 10^9 classes": (lambda: _state("qtradeoff.digits_cnn"), ".safetensors",
                                         {"architecture": "qtradeoff.digits_cnn", "num_classes": "1000000000"},
                                         "memory budget"),
}


@pytest.mark.parametrize("case", sorted(ABSURD_CASES))
def test_an_absurd_architecture_is_refused_before_it_is_built(case, tmp_path, capsys):
    build_state, suffix, metadata, expect = ABSURD_CASES[case]
    path = _saved(build_state(), f"absurd{suffix}", metadata)(tmp_path)
    _refused(capsys, "inspect", path, argv=["inspect", str(path)], expect=expect)


def test_nan_weights_load_and_every_result_carries_the_warning(tmp_path, capsys):
    state = _state("qtradeoff.digits_cnn")
    state["classifier.2.weight"][0, :4] = float("nan")
    state["features.0.bn.bias"][1] = float("inf")
    path = _saved(state, "nan.safetensors", {"architecture": "qtradeoff.digits_cnn"})(tmp_path)
    argv = ["evaluate", str(path), "--data", "digits", "--latency", "none", "--eval-size", "50"]
    assert cli.main(argv) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.err == ""
    warning = [line for line in captured.out.splitlines() if line.startswith("warning ")]
    assert len(warning) == 1 and "nan.safetensors" in warning[0] and "5 weight values are NaN or infinite" in \
        warning[0] and "classifier.2.weight (4)" in warning[0]
    assert cli.main([*argv, "--json"]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["provenance"]["warnings"] == [warning[0].removeprefix("warning").strip()]


def test_finite_weights_carry_no_warning():
    from qtradeoff.core.loading.model_io import load_sample_model, nonfinite_weights

    loaded = load_sample_model("digits_mlp")
    assert loaded.warnings == [] and nonfinite_weights(loaded.module) == {}


# -- option values that would only fail deep inside the work --------------------------------------------------------

@pytest.mark.parametrize(("argv", "option"), [
    (["evaluate", "digits_mlp", "--batch", "100000000"], "--batch"),
    (["inspect", "digits_mlp.pth", "--input-shape", "100000,100000,100000"], "--input-shape"),
])
def test_an_option_value_too_large_to_run_is_a_usage_error(argv, option, capsys):
    from qtradeoff.core.errors import EXIT_USAGE

    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}" in err and "Traceback" not in err, err
