"""file_actions: drop order, and sweep and configuration files read through the core with one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qtradeoff.gui.file_actions import FileError, configuration_from_file, in_open_order, results_from_file


def test_models_open_before_what_was_dropped_with_them(tmp_path):
    paths = [tmp_path / "r.jsonl", tmp_path / "c.json", tmp_path / "notes.txt", tmp_path / "d.npz",
             tmp_path / "m.safetensors"]
    assert [p.name for p in in_open_order(paths)] == ["m.safetensors", "d.npz", "c.json", "r.jsonl", "notes.txt"]


def test_sweep_file_errors_are_one_sentence(tmp_path):
    with pytest.raises(FileError, match="does not exist"):
        results_from_file(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(FileError, match="holds no readable results"):
        results_from_file(empty)
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"config": {"sche')  # only the line an interrupted sweep was writing
    with pytest.raises(FileError, match="holds no readable results"):
        results_from_file(cut)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    with pytest.raises(FileError) as caught:
        results_from_file(bad)
    message = str(caught.value)
    assert f"{bad}:1" in message and "qtradeoff sweep" in message and "\n" not in message
    invalid = tmp_path / "invalid.jsonl"
    invalid.write_text(json.dumps({"result": {"config_key": "x"}}) + "\n")
    with pytest.raises(FileError, match=r"record 1 has an invalid result.*\.$"):
        results_from_file(invalid)


def test_configuration_errors_name_the_file_and_apply_nothing(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int99"}}}))
    with pytest.raises(FileError, match=r"broken\.json is not a valid configuration: .*defaults\.weight\.precision"):
        configuration_from_file(path, None)
    with pytest.raises(FileError, match="Could not read"):
        configuration_from_file(Path(tmp_path / "absent.json"), None)
