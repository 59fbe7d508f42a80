"""The window takes the data formats the core reads: the bundled digits.npz and a CSV table, dropped."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from qtradeoff.core.loading.data import DIGITS_FILE
from qtradeoff.gui.file_actions import classify_path


def _drop(window, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    window.dropEvent(QDropEvent(QPointF(QPoint(40, 40)), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))


def test_data_suffixes_are_classified_as_data(tmp_path):
    for name in ("a.npy", "b.csv", "c.npz"):
        assert classify_path(tmp_path / name) == "data"


def test_dropping_the_bundled_digits_npz_and_a_csv(make_window, qtbot, tmp_path):
    window = make_window(eval_size=100)
    with qtbot.waitSignal(window.service.data_loaded, timeout=60000):
        _drop(window, DIGITS_FILE)
    qtbot.waitUntil(lambda: window.baseline is not None and not window.service.has_pending(), timeout=60000)
    assert window.baseline.accuracy > 0.9
    # a CSV whose features are the digits_cnn inputs flattened does not fit a convolutional model: one line says so
    table = tmp_path / "table.csv"
    table.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    with qtbot.waitSignal(window.service.failed, timeout=60000) as failed:
        _drop(window, table)
    kind, message = failed.args
    assert "but table has (2,)" in message and "\n" not in message and "Traceback" not in message
