"""The results table (issue 18): linked both ways with the plot, pins and labels, filter, and a diff of two points
that lists exactly their differing layers."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, Qt

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.results_table import COL_ACC, COL_LABEL, COL_PIN


def _evaluate(window, qtbot, config):
    window.apply_config(config, "test")
    qtbot.waitUntil(lambda: window.plot.store.find(config.key()) is not None, timeout=10000)
    return window.plot.store.find(config.key())


def _select(panel, rows):
    selection = panel.table.selectionModel()
    selection.clearSelection()
    for row in rows:
        index = panel.proxy.mapFromSource(panel.model.index(row, 0))
        selection.select(index, QItemSelectionModel.Select | QItemSelectionModel.Rows)


def test_table_lists_every_point_and_follows_the_plot(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    base = CompressionConfig(model=window.state.config.model)
    a = _evaluate(window, qtbot, base.with_defaults(weight={"precision": "int8"}))
    b = _evaluate(window, qtbot, base.with_defaults(weight={"precision": "int8"}).with_layer(
        "conv2", weight={"precision": "int4"}))
    panel = window.results
    assert panel.model.rowCount() == len(window.plot.store) == 3
    _select(panel, [a, b])  # table → plot
    assert set(window.plot.highlighted) == {a, b} and panel.compare_button.isEnabled()
    window.plot.point_clicked.emit(a)  # plot → table
    assert panel.selected_rows() == [a] and window.plot.highlighted == (a,)


def test_diff_of_two_points_lists_exactly_their_differing_layers(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    base = CompressionConfig(model=window.state.config.model).with_defaults(weight={"precision": "int8"})
    a = _evaluate(window, qtbot, base)
    b = _evaluate(window, qtbot, base.with_layer("conv2", weight={"precision": "int4"}).with_layer(
        "fc", prune={"method": "magnitude", "sparsity": 0.5}))
    _select(window.results, [a, b])
    window.results.compare_button.click()
    text = window.last_comparison
    assert "2 layer(s) differ" in text
    assert "conv2: weight.precision int8 → int4" in text and "fc: prune.method none → magnitude" in text
    assert "conv1" not in text
    window._comparison_box.close()


def test_pin_label_sort_and_filter(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    base = CompressionConfig(model=window.state.config.model)
    rows = [_evaluate(window, qtbot, base.with_defaults(weight={"precision": p})) for p in ("int8", "int4")]
    panel, model = window.results, window.results.model
    assert model.setData(model.index(rows[1], COL_PIN), Qt.Checked, Qt.CheckStateRole)
    assert model.setData(model.index(rows[1], COL_LABEL), "  small one ", Qt.EditRole)
    assert window.plot.store.meta[rows[1]]["pinned"] is True and window.plot.store.meta[rows[1]]["label"] == "small one"
    panel.table.sortByColumn(COL_PIN, Qt.AscendingOrder)
    assert panel.proxy.mapToSource(panel.proxy.index(0, 0)).row() == rows[1]  # pinned first
    panel.table.sortByColumn(COL_ACC, Qt.DescendingOrder)
    accuracies = [float(panel.proxy.index(r, COL_ACC).data().rstrip(" %")) for r in range(panel.proxy.rowCount())]
    assert accuracies == sorted(accuracies, reverse=True)
    panel.filter.setText("small")
    assert panel.proxy.rowCount() == 1 and panel.count.text() == "1 of 3"
    panel.filter.setText("")
    assert panel.proxy.rowCount() == 3


def test_comparison_text_warns_across_evaluation_sets_and_leaves_out_what_neither_has():
    from qtradeoff.core.compare import Comparison, MetricChange
    from qtradeoff.gui.results_table import comparison_text

    comparison = Comparison((), (MetricChange("accuracy", 98.0, 97.0, "pts"),
                                 MetricChange("latency (measured)", None, None, "ms"),
                                 MetricChange("latency (estimated)", None, 0.25, "ms")),
                            ("A and B were evaluated on different samples (100 samples vs 359 samples): …",))
    text = comparison_text(comparison, 1, 2)
    assert "Warning: A and B were evaluated on different samples" in text
    assert "latency (measured)" not in text
    assert "latency (estimated): n/a → 0.25 ms (only one of them has it)" in text
    assert "None" not in text
