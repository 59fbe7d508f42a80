"""The Graph tab (issue 18): the model's DAG from the worker, linked both ways with the layer table, coloured by
per-layer quantities, and the per-layer latency profile in the table and the graph. Real core, in-thread backend."""

from __future__ import annotations

from PySide6.QtCore import Qt

from qtradeoff.gui.graph_view import HIGHLIGHT, MISSING
from qtradeoff.gui.layer_table import COL_NAME, COL_PROFILE


def _click_node(qtbot, view, layer):
    item = view.node_item(layer)
    point = view.canvas.mapFromScene(item.sceneBoundingRect().center())
    qtbot.mouseClick(view.canvas.viewport(), Qt.LeftButton, pos=point)


def test_graph_nodes_and_layer_rows_select_each_other_and_profile_fills_both(make_window, qtbot):
    window = make_window(eval_size=20)
    view = window.graph_view
    with qtbot.waitSignal(window.service.graph_ready, timeout=60000):
        window.bottom_tabs.setCurrentWidget(view)  # shown for the first time: the worker traces the graph
    assert view.graph.traced and len(view.graph.layer_nodes()) == len(window.table_model.layer_names())
    assert "folded" in view.note.text()

    _click_node(qtbot, view, "features.2.conv")  # node → row
    assert window.layers.selected_layers() == ["features.2.conv"]
    window.table.selectRow(window.table_proxy.mapFromSource(window.table_model.index(4, COL_NAME)).row())
    assert view.highlighted == ("features.4.conv",)  # row → node, outlined in the selection blue
    assert view.node_item("features.4.conv").pen().color() == HIGHLIGHT
    assert view.node_item("features.2.conv").pen().color() != HIGHLIGHT
    assert "features.4.conv" in view.info.text()

    window.table_model.set_sensitivity({"features.0.conv": 0.05, "features.1.conv": 0.01})
    view.quantity.setCurrentIndex(view.quantity.findData("sensitivity"))
    assert view.node_item("features.0.conv").brush().color() != MISSING
    assert view.node_item("features.3.conv").brush().color() == MISSING  # not analysed: grey, and why
    assert "not analysed" in view.node_item("features.3.conv").toolTip()
    assert view.colouring.unit == "pts" and view.colouring.high == 5.0

    window.apply_config(window.state.config.with_defaults(weight={"precision": "int8"},
                                                          activation={"precision": "int8"}), "int8")
    with qtbot.waitSignal(window.service.profiled, timeout=120000):
        view.profile_button.click()
    assert view.quantity.currentData() == "latency_ratio"
    texts = [window.table_model.index(row, COL_PROFILE).data() for row in range(window.table_model.rowCount())]
    assert all(text.rstrip(" ~").endswith("×") for text in texts)
    assert set(view.colouring.values) == set(window.table_model.layer_names())
    assert "measured" in view.colouring.note and "thread" in view.colouring.note
    assert "in fp32" in view.node_item("features.1.conv").toolTip()
    view.quantity.setCurrentIndex(view.quantity.findData("precision"))
    assert view.colouring.values["features.0.conv"] == "int8"
