"""Regenerate the README's screenshots on the bundled digits_cnn (needs a display: run under
``xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python resources/make_screenshots.py``).

Writes resources/screenshot.png (the main window after a greedy search), screenshot-graph-sensitivity.png (the
Graph tab coloured by the search's sensitivity, one layer selected) and screenshot-results-diff.png (the Results
table with W8A8 compared with the search's answer) and screenshot-plot-answer.png (the plot with the answer
marked). Everything runs under ``if __name__ == "__main__"``: worker processes re-import
this module.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(os.environ.get("QTRADEOFF_SHOTS_DIR", Path(__file__).resolve().parent))


def _wait(app, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def _settle(app, seconds: float = 0.6) -> None:
    """Let the plot's redraw timer fire (it redraws at 10-20 Hz), so a grab shows the current ring and marks."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    os.environ.setdefault("QTRADEOFF_BACKEND", "thread")  # one process: the sensitivity shares the engine
    from PySide6.QtCore import QPoint, QSettings
    from PySide6.QtGui import QPainter

    from qtradeoff.gui.app import make_app
    from qtradeoff.gui.main_window import MainWindow

    app = make_app(sys.argv[:1])
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "shots.ini"), QSettings.IniFormat)
    window = MainWindow(settings=settings)
    window.resize(1366, 740)
    window.show()
    window.load_sample("digits_cnn")
    _wait(app, lambda: window.baseline is not None and not window.service.has_pending(), 300, "the baseline")
    base = window.state.config
    # What a user would try by hand first: W8A8, then int4 and int6 weights (int8 activations).
    for weight, activation in (("int8", "int8"), ("int4", "int8"), ("int6", "int8")):
        config = base.with_defaults(weight={"precision": weight}, activation={"precision": activation})
        window.apply_config(config, "screenshot")
        _wait(app, lambda c=config: window.plot.store.find(c.key()) is not None, 300, f"{weight}")
    # The search starts from the current configuration: back to fp32 first, so it starts from a feasible base.
    window.reset_all()
    _wait(app, lambda: not window.service.has_pending() and not window.progress.isVisible(), 300, "idle")
    panel = window.explore_panel
    panel.strategy.setCurrentIndex(panel.strategy.findData("greedy"))
    panel.max_drop.setValue(1.0)
    panel.budget.setValue(16)
    panel.start()
    _wait(app, lambda: not panel._running, 1200, "the greedy search")
    _wait(app, lambda: not window.service.has_pending() and not window.progress.isVisible(), 300, "idle")
    window.explore_panel.apply_answer()
    _wait(app, lambda: not window.service.has_pending() and not window.progress.isVisible(), 300, "idle")
    app.processEvents()
    window.bottom_tabs.setCurrentWidget(window.layers)
    app.processEvents()
    _settle(app)
    window.grab().save(str(HERE / "screenshot.png"))
    store = window.plot.store
    answer = window.plot.answer
    if answer is None:
        raise SystemExit("the greedy search gave no answer to mark")
    print(f"answer: row {answer}, {store.accuracy[answer]:.2f} %, {store.memory[answer] / 1024:.1f} KiB "
          f"(fp32 {store.accuracy[store.find(base.key())]:.2f} %)")
    window.plot.grab().save(str(HERE / "screenshot-plot-answer.png"))

    view = window.graph_view
    window.bottom_tabs.setCurrentWidget(view)
    window.right_splitter.setSizes([300, 440])
    _wait(app, lambda: view.graph is not None, 120, "the graph")
    view.quantity.setCurrentIndex(view.quantity.findData("sensitivity"))
    most = max(window.table_model.sensitivity().items(), key=lambda item: item[1])[0]
    from qtradeoff.gui.graph_view import select_layer_rows

    select_layer_rows(window.layers, [most])
    view.fit_width()
    app.processEvents()
    _settle(app)
    window.grab().save(str(HERE / "screenshot-graph-sensitivity.png"))

    window.bottom_tabs.setCurrentWidget(window.results)
    int8 = store.find(base.with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"}).key())
    window.results.select_rows([int8, answer])
    window.compare_points(int8, answer)
    app.processEvents()
    box = window._comparison_box
    box.adjustSize()
    box.move(window.mapToGlobal(QPoint(window.width() - box.width() - 30, 80)))
    app.processEvents()
    _settle(app)
    shot = window.grab()
    painter = QPainter(shot)
    painter.drawPixmap(window.mapFromGlobal(box.pos()), box.grab())
    painter.end()
    shot.save(str(HERE / "screenshot-results-diff.png"))
    box.close()
    window.close()
    print("saved", *(p.name for p in sorted(HERE.glob("screenshot*.png"))))


if __name__ == "__main__":
    main()
