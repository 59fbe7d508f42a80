"""``qtradeoff inspect``: a report for good files, one stderr line and a non-zero exit for bad ones."""

from __future__ import annotations

import json

from qtradeoff.cli import main
from qtradeoff.core.loading.model_io import SAMPLE_DIR


def test_inspect_sample_text(capsys):
    assert main(["inspect", str(SAMPLE_DIR / "digits_cnn.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "format:       safetensors" in out and "parameters:   91,994" in out
    assert "features.0.conv" in out and "safe (no code from the file runs)" in out


def test_inspect_pickle_json(capsys):
    assert main(["inspect", str(SAMPLE_DIR / "mobilenet_v3_small_digits.pt"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "pickle" and report["trust"] == {"required": False, "trusted": False, "globals": []}
    assert report["parameters"] == 1528106 and report["input_shape"] == [3, 32, 32]
    assert report["layers"][0]["name"] == "features.0.0"


def test_inspect_needs_trust(capsys):
    path = SAMPLE_DIR / "digits_cnn.torchscript.pt"
    assert main(["inspect", str(path), "--json"]) == 4  # needs --trust
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trust"]["required"] is True
    assert captured.err.count("\n") == 1 and str(path) in captured.err


def test_inspect_bad_file(capsys, tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("just some notes")
    assert main(["inspect", str(path)]) == 3  # a bad input file
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and str(path) in captured.err


def test_inspect_lists_the_globals_a_pickle_wants(capsys, tmp_path):
    import torch

    path = tmp_path / "odd.pt"
    torch.save({"weights": {"w": torch.zeros(2)}, "when": __import__("datetime").date(2020, 1, 1)}, path)
    assert main(["inspect", str(path), "--json"]) == 4  # needs --trust
    assert json.loads(capsys.readouterr().out)["trust"]["globals"] == ["datetime.date"]
