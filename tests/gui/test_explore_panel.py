"""The Explore panel on the real core, searching through the evaluation service: streams points, reports
progress, stops keeping what it found, keeps the layers the configuration locks."""

from __future__ import annotations

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.loading.inventory import compressible_names, inventory
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.gui.backend import CoreBackend
from qtradeoff.gui.explore_panel import ExplorePanel
from qtradeoff.gui.worker import EvaluationService, running_threads


@pytest.fixture(scope="module")
def context():
    loaded = load_sample_model("digits_cnn")
    return {"loaded": loaded, "data": sample_data_for(loaded, calib_size=16, eval_size=48)}


@pytest.fixture
def panel(qtbot, context, tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path))  # sensitivity reports stay out of ~/.cache
    backend = CoreBackend()
    backend.loaded, backend.data = context["loaded"], context["data"]  # as a load would leave them, smaller data
    service = EvaluationService(backend=backend)
    widget = ExplorePanel(service)
    qtbot.addWidget(widget)
    widget.context_provider = lambda: {"config": CompressionConfig()}
    found = []
    widget.result_found.connect(lambda result, meta: found.append((result, meta)))
    widget.found = found
    yield widget
    service.shutdown()
    assert not running_threads()


def test_grid_streams_points_with_progress(qtbot, panel):
    panel.set_strategy("grid")
    panel.budget.setValue(3)
    with qtbot.waitSignal(panel.running_changed, timeout=60000, check_params_cb=lambda running: not running):
        assert panel.start()
    assert len(panel.found) == 3 and panel.points_found == 3
    assert all(meta["tag"] == "explore" for _, meta in panel.found)
    assert panel.found[0][0].config.weight.precision == "fp32"
    assert panel.last_message.startswith("Done — 3 point(s)")
    assert panel.progress.value() == panel.progress.maximum()
    assert panel.start_button.isEnabled() and not panel.stop_button.isEnabled()


def test_greedy_fills_sensitivity_and_stop_keeps_points(qtbot, panel, context):
    panel.set_strategy("greedy")
    panel.budget.setValue(200)
    sensitivity = []
    panel.sensitivity_ready.connect(sensitivity.append)
    with qtbot.waitSignal(panel.sensitivity_ready, timeout=60000):
        panel.start()
    assert panel.running
    qtbot.waitUntil(lambda: len(panel.found) >= 2, timeout=60000)
    assert "Search:" in panel.status.text()
    with qtbot.waitSignal(panel.running_changed, timeout=60000):
        panel.stop()
    assert "Stopped" in panel.last_message
    kept = len(panel.found)
    assert 2 <= kept < 200
    scores = sensitivity[0]
    layers = compressible_names(inventory(context["loaded"].module, context["data"].input_shape))
    assert set(scores) == set(layers)
    assert all(-1.0 <= value <= 1.0 for value in scores.values())  # fractions, as the layer table expects


def test_start_without_a_model_says_so(qtbot, panel):
    panel.context_provider = lambda: None
    assert not panel.start()
    assert "Load a model" in panel.last_message and not panel.running


def check_graph_view(window, qtbot):
    """Issue 18's graph view after a real sensitivity analysis: the worker traces digits_cnn's graph when the tab
    is first shown, every layer is coloured by its sensitivity, and a click on a node selects its row and
    selecting a row outlines its node."""
    from PySide6.QtCore import Qt

    from qtradeoff.gui.graph_view import HIGHLIGHT, MISSING
    from qtradeoff.gui.layer_table import COL_NAME

    view = window.graph_view
    with qtbot.waitSignal(window.service.graph_ready, timeout=60000):
        window.bottom_tabs.setCurrentWidget(view)
    names = window.table_model.layer_names()
    assert view.graph.traced and set(view.graph.layer_nodes()) == set(names) and "folded" in view.note.text()
    view.quantity.setCurrentIndex(view.quantity.findData("sensitivity"))
    assert all(view.node_item(name).brush().color() != MISSING for name in names)
    assert view.colouring.unit == "pts" and "Sensitivity" in view.node_item(names[0]).toolTip()
    item = view.node_item("features.2.conv")
    point = view.canvas.mapFromScene(item.sceneBoundingRect().center())
    qtbot.mouseClick(view.canvas.viewport(), Qt.LeftButton, pos=point)  # node → row
    assert window.layers.selected_layers() == ["features.2.conv"]
    window.table.selectRow(window.table_proxy.mapFromSource(window.table_model.index(4, COL_NAME)).row())
    assert view.highlighted == ("features.4.conv",) and "features.4.conv" in view.info.text()  # row → node
    assert view.node_item("features.4.conv").pen().color() == HIGHLIGHT
    assert view.node_item("features.2.conv").pen().color() != HIGHLIGHT


def test_attached_to_the_main_window(qtbot, make_window, tmp_path, monkeypatch):
    monkeypatch.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path))
    window = make_window(eval_size=48)
    panel = window.explore_panel
    before = len(window.plot.store)
    panel.set_strategy("grid")
    panel.budget.setValue(2)
    with qtbot.waitSignal(panel.running_changed, timeout=60000, check_params_cb=lambda running: not running):
        panel.start()
    assert len(window.plot.store) >= before + 1  # fp32 on the full split is a new point; int8 too
    assert any(meta.get("tag") == "explore" for meta in window.plot.store.meta)
    panel.set_strategy("sensitivity")
    with qtbot.waitSignal(panel.running_changed, timeout=60000, check_params_cb=lambda running: not running):
        panel.start()
    assert window.table_model._sensitivity and set(window.table_model._sensitivity) == set(
        window.table_model.layer_names())
    check_graph_view(window, qtbot)  # the Graph tab on this window: a second real window would cost seconds
    window.close()
    assert not running_threads()


def test_layers_ticked_in_the_table_are_locked_for_search(qtbot, make_window, tmp_path, monkeypatch):
    from PySide6.QtCore import Qt

    monkeypatch.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path))
    window = make_window(eval_size=48)
    model = window.table_model
    locked = "features.5.conv"
    row = model.layer_names().index(locked)
    assert model.setData(model.index(row, 0), Qt.Checked, Qt.CheckStateRole)
    assert window.state.config.locked == (locked,)  # the tick is an edit of the configuration
    assert model.locked_layers() == (locked,)
    assert model.data(model.index(row, 0), Qt.CheckStateRole) == Qt.Checked
    assert locked in window.explore_panel.locks.text()
    panel = window.explore_panel
    panel.set_strategy("grid")
    panel.budget.setValue(5)  # fp32 at four sparsities, then int8
    with qtbot.waitSignal(panel.running_changed, timeout=60000, check_params_cb=lambda running: not running):
        panel.start()
    found = [result for result, meta in zip(window.plot.store.results, window.plot.store.meta, strict=True)
             if meta.get("tag") == "explore"]
    assert found
    untouched = CompressionConfig().resolve(locked)
    assert all(result.config.resolve(locked) == untouched for result in found)
    assert any(result.config.resolve("features.1.conv") != untouched for result in found)
    window.close()
    assert not running_threads()


def test_the_backend_searches_on_the_engine_edits_use(context, monkeypatch):
    from qtradeoff.core.search import explore
    from qtradeoff.gui.backend import SearchPoint, SearchStep

    backend = CoreBackend()
    backend.loaded, backend.data = context["loaded"], context["data"]
    sessions = []

    def stream(session, strategy, **options):
        sessions.append((session, strategy, options))
        yield explore.SearchProgress(0, 1, "search")
        yield explore.Found(CompressionConfig(), "result", 1, 1)

    monkeypatch.setattr(explore, "stream", stream)
    base = CompressionConfig().with_locked(["features.5.conv"])
    events = list(backend.search_iter("grid", {"budget": 1, "base_config": base}, should_stop=lambda: False))
    assert events == [SearchStep(0, 1, "search"), SearchPoint(CompressionConfig(), "result", 1, 1)]
    (session, strategy, options), = sessions
    assert session is backend.engine() and strategy == "grid" and options["base_config"] is base
