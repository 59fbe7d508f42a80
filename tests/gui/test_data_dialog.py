"""The data dialog: a dropped image folder with non-default preprocessing (digits upscaled to 16x16, colours
inverted) and a CSV with a named label column get plausible baselines; the wrong preprocessing gets the
implausible-baseline warning; a dataset hook asks for consent; the input dialog writes the --input syntax."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from qtradeoff.core.loading.data import DIGITS_FILE, preprocess_digits
from qtradeoff.gui.backend import INPUT_UNKNOWN
from qtradeoff.gui.data_dialog import InputDialog

HOOK = """
import torch
from qtradeoff.core.loading.data import DIGITS_PREPROCESSING, digits_split

def data():
    x, y = digits_split("test", DIGITS_PREPROCESSING)
    return torch.utils.data.TensorDataset(x[:150], y[:150])
"""


def _drop(window, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    window.dropEvent(QDropEvent(QPointF(QPoint(40, 40)), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))


@pytest.fixture(scope="module")
def digits():
    with np.load(DIGITS_FILE) as archive:
        index = archive["test_idx"][:200]
        return archive["images"][index], archive["labels"][index]


def _inverted_folder(root, images, labels):
    from PIL import Image

    upscaled = F.interpolate(torch.from_numpy(images.astype(np.float32) / 16.0)[:, None], size=(16, 16),
                             mode="bilinear", align_corners=False)[:, 0]
    pixels = (255 * (1 - upscaled.clamp(0, 1))).round().to(torch.uint8).numpy()  # dark digits on white
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(root / str(label) / f"{i}.png")
    return root


def _load_through_dialog(window, qtbot, path, **fields):
    _drop(window, path)
    dialog = window.data_actions.dialog
    assert dialog is not None and dialog.isVisible() and dialog.source.text() == str(path)
    for name, value in fields.items():
        widget = getattr(dialog, name)
        if name in ("mean", "std", "label_column"):
            widget.setText(value)
        elif name == "stream":
            widget.setCurrentIndex(value)
        else:
            widget.setValue(value)
    with qtbot.waitSignal(window.service.data_loaded, timeout=60000):
        dialog.load_button.click()
    qtbot.waitUntil(lambda: window.baseline is not None and not window.service.has_pending(), timeout=60000)
    return dialog


def test_image_folder_hook_and_csv_through_the_data_dialog(make_window, qtbot, tmp_path, digits, monkeypatch):
    window = make_window(eval_size=100)
    window.files.ask_data_options = True
    folder = _inverted_folder(tmp_path / "inverted", *digits)
    # the model's own preprocessing (mean 0.3, std 0.4 from its manifest entry) on inverted images: near chance
    dialog = _load_through_dialog(window, qtbot, folder, calib_size=32, eval_size=100)
    assert dialog.effective_kind() == "image_folder" and dialog.mean.text() == "0.3"
    assert dialog.image_size.value() == 32 and dialog.channels.currentData() == 1
    assert window.baseline.accuracy < 0.3
    assert "implausibly low" in window.messages.text() and "mean/std" in window.messages.text()
    # the matching preprocessing: (1 - p - 0.7) / -0.4 = (p - 0.3) / 0.4
    _load_through_dialog(window, qtbot, folder, calib_size=32, eval_size=100, mean="0.7", std="-0.4")
    assert window.baseline.accuracy > 0.85 and window.data_actions.last_warning is None
    assert "implausibly" not in window.messages.text()

    # bad options stay in the dialog; a dataset hook asks for consent before it is imported
    dialog = window.data_actions.open_dialog(str(tmp_path / "missing"))
    dialog.set_kind("image_folder")
    dialog.mean.setText("0.1, 0.2")  # two values for grey images
    dialog.load_button.click()
    assert dialog.isVisible() and "one value or 1" in dialog.problem.text()
    dialog.reject()
    (tmp_path / "gui_hook_data.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    data_before = window.summary.data_name
    dialog = window.data_actions.open_dialog("gui_hook_data:data")
    assert dialog.effective_kind() == "hook"
    dialog.load_button.click()
    qtbot.waitUntil(lambda: window.data_actions.trust_box is not None, timeout=60000)
    window.data_actions.trust_box.reject()  # Cancel: nothing imported, the data kept
    assert window.data_actions.trust_box is None and window.summary.data_name == data_before
    assert "not trusted" in window.job.label.text()
    dialog = window.data_actions.open_dialog("gui_hook_data:data")
    dialog.load_button.click()
    qtbot.waitUntil(lambda: window.data_actions.trust_box is not None, timeout=60000)
    assert "gui_hook_data" not in sys.modules  # asked before anything was imported
    with qtbot.waitSignal(window.service.data_loaded, timeout=60000):
        window.data_actions.trust_box.property("trust_button").click()
    qtbot.waitUntil(lambda: window.baseline is not None and not window.service.has_pending(), timeout=60000)
    assert window.summary.data_name == "gui_hook_data:data" and window.baseline.accuracy > 0.9

    # a CSV of the MLP's inputs whose label column has a name the loader does not guess
    window.load_sample("digits_mlp")
    qtbot.waitUntil(lambda: window.summary.name == "digits_mlp" and window.baseline is not None
                    and not window.service.has_pending(), timeout=60000)
    images, labels = digits
    features = preprocess_digits(images, {"size": 8, "flatten": True}).numpy()
    table = tmp_path / "digits.csv"
    header = ",".join(f"p{i}" for i in range(64)) + ",digit\n"
    table.write_text(header + "".join(",".join(f"{v:.4f}" for v in row) + f",{label}\n"
                                      for row, label in zip(features, labels, strict=True)))
    dialog = _load_through_dialog(window, qtbot, table, label_column="digit", calib_size=40,
                                  stream=1)  # "always": read in chunks (and no loader child process to start)
    assert dialog.effective_kind() == "csv"
    assert window.summary.labelled and window.baseline.accuracy > 0.85


def test_a_model_of_unknown_input_opens_the_input_dialog(make_window, qtbot, monkeypatch):
    window = make_window(load=False)
    asked = []
    monkeypatch.setattr(window, "load_model", lambda path, **kwargs: asked.append((path, kwargs)))
    window._requested_source = ("file", "/models/encoder.pt")
    window.data_actions._on_failed("load", f"encoder.pt: its input shape is unknown; {INPUT_UNKNOWN} or open data.")
    dialog = window.data_actions.input_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.dtype.setCurrentText("int64")
    dialog.shape.setText("1, 16")
    dialog.high.setText("1000")
    dialog._accept()
    assert asked == [("/models/encoder.pt", {"input_text": "x:int64[1,16]<1000"})] and not dialog.isVisible()


def test_input_dialog_writes_the_input_syntax(qtbot):
    dialog = InputDialog(None, "model.pt2")
    qtbot.addWidget(dialog)
    dialog.dtype.setCurrentText("int64")
    dialog.shape.setText("1, 32")
    assert "upper bound" in dialog.problem.text()
    dialog.high.setText("30000")
    assert dialog.text() == "x:int64[1,32]<30000" and dialog.preview.text() == dialog.text()
    dialog.dtype.setCurrentText("float32")
    dialog.shape.setText("1,3,64,64")
    dialog.low.setText("-1")
    dialog.high.setText("1")
    assert dialog.text() == "x:float32[1,3,64,64]-1..1"
