"""File > Export compressed model…: the export runs on the worker, and its verification reaches the message bar."""

from __future__ import annotations

import json

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.file_actions import export_format_for

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def test_export_format_follows_the_suffix_then_the_filter():
    assert export_format_for("a/model.safetensors") == "packed"
    assert export_format_for("model.PT") == "torch-int8"
    assert export_format_for("model.bin", "packed: bit-packed safetensors (*.safetensors)") == "packed"


@pytest.mark.slow
def test_export_compressed_model_from_the_window(make_window, qtbot, tmp_path):
    window = make_window()
    assert window.files.export_model_action.isEnabled()
    window.apply_config(W8A8, "W8A8")
    out = tmp_path / "cnn.safetensors"
    with qtbot.waitSignal(window.service.exported, timeout=120000) as caught:
        window.export_model(out, "packed")
    report = caught.args[0]
    assert report["passed"] and report["format"] == "packed" and out.exists()
    assert json.loads((tmp_path / "cnn.safetensors.verify.json").read_text())["passed"]
    assert "Export verified" in window.messages.text() and "counted weight_bytes" in window.messages.text()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=30000)


def test_export_errors_reach_the_message_bar(make_window, qtbot, tmp_path):
    window = make_window()
    with qtbot.waitSignal(window.service.failed, timeout=60000):
        window.export_model(tmp_path, "packed")  # a folder, not a file name
    assert "folder" in window.messages.text()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=30000)


@pytest.mark.slow
def test_export_through_the_worker_process(tmp_path):
    from qtradeoff.gui.remote import ProcessBackend

    backend = ProcessBackend(search_process=False)
    try:
        backend.load_sample("digits_mlp")
        items = list(backend.export_iter(W8A8, "packed", str(tmp_path / "mlp.safetensors"), should_stop=lambda: False))
    finally:
        backend.close()
    assert [type(item).__name__ for item in items[:-1]] == ["Progress"] * (len(items) - 1)
    assert items[-1]["passed"] and (tmp_path / "mlp.safetensors").exists()
