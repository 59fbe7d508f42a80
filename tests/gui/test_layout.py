"""The first window fits a 1366×768 laptop screen with its status bar (Cancel, progress) on screen (issue 18)."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect

from qtradeoff.gui.layout import PREFERRED_SIZE, initial_size


def test_initial_size_fits_the_screen():
    assert initial_size(QRect(0, 0, 2560, 1440)) == PREFERRED_SIZE
    small = initial_size(QRect(0, 0, 1366, 740))  # 768 minus a task bar
    assert small.width() <= 1366 and small.height() <= 740
    assert initial_size(None) == PREFERRED_SIZE


def test_window_at_laptop_size_keeps_cancel_and_progress_visible(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    window.resize(initial_size(QRect(0, 0, 1366, 740)))
    qtbot.waitUntil(lambda: window.width() <= 1366 and window.height() <= 740, timeout=2000)
    hint = window.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 740, hint
    window.job.started("eval", "evaluating")  # the progress bar and Cancel are shown while a job runs
    qtbot.waitUntil(lambda: window.cancel_button.isVisible(), timeout=2000)
    inside = QRect(QPoint(0, 0), window.size())
    for widget in (window.cancel_button, window.progress):
        corner = widget.mapTo(window, QPoint(widget.width() - 1, widget.height() - 1))
        assert inside.contains(corner), (widget, corner, window.size())
    window.job.finished("eval", True)


def test_help_menu_opens_the_quick_start(make_window, fake_backend, qtbot):
    from qtradeoff.gui.help import show_quick_start

    window = make_window(fake_backend)
    assert [action.text() for action in window.help_menu.actions()] == ["Quick start", "About qtradeoff"]
    box = show_quick_start(window)
    qtbot.waitUntil(box.isVisible, timeout=2000)
    assert "Open a model" in box.text() and "Export configuration" in box.text()
    box.close()
