"""The Graph tab (issue 18) on the fake backend: a model FX could not trace, the per-layer latency profile in the
table and the graph, grey layers that say why. The real core's graph, its colours after a sensitivity analysis and
the links with the layer table are checked on the Explore test's window (test_explore_panel.check_graph_view); the
core's profile and graph have their own tests."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from qtradeoff.core.engine.layer_profile import LayerProfile, LayerTiming
from qtradeoff.core.loading.graph import chain_graph
from qtradeoff.core.measurement.result import Progress
from qtradeoff.gui.graph_view import MISSING
from qtradeoff.gui.layer_table import COL_PROFILE


def _profiling(backend):
    """The fake backend with a graph FX could not trace (a chain) and an instant per-layer profile."""
    backend.model_graph = lambda: chain_graph(backend.LAYERS, "torch.fx could not trace this model (TypeError: "
                                              "fake); its layers are shown in execution order.")

    def profile_iter(config, *, should_stop, batch=1):
        yield Progress(1, 2, "profiling layers")
        yield LayerProfile(config.key(), (LayerTiming("conv1", 0.2, 0.1, executed="int8"),
                                          LayerTiming("conv2", 0.2, 0.3, 0.05, 0.4, "int8")),
                           1, 1, "requested", 15, 1.0, 0.8, 0.1, 0.2)

    backend.profile_iter = profile_iter
    return backend


def test_profile_layers_fills_the_time_column_and_the_graph_and_an_untraced_model_says_so(make_window, qtbot,
                                                                                          fake_backend):
    window = make_window(_profiling(fake_backend))
    view = window.graph_view
    with qtbot.waitSignal(window.service.graph_ready, timeout=10000):
        window.bottom_tabs.setCurrentWidget(view)
    assert "could not trace" in view.note.text() and not view.graph.traced
    assert [n.layer for n in view.graph.nodes] == ["", "conv1", "conv2", "fc", ""]
    with qtbot.waitSignal(window.service.profiled, timeout=10000):
        view.profile_button.click()
    assert view.quantity.currentData() == "latency_ratio"
    column = [window.table_model.index(row, COL_PROFILE).data() for row in range(3)]
    assert column == ["0.50×", "1.50× ~", ""]  # conv2's spread of ±40 % is marked; fc has no time
    assert view.colouring.values == pytest.approx({"conv1": 0.5, "conv2": 1.5})
    assert "not a module of the real-kernel model" in view.node_item("fc").toolTip()
    assert "measured" in view.colouring.note and "1 thread" in view.colouring.note
    window.table_model.set_sensitivity({"conv1": 0.02})
    view.quantity.setCurrentIndex(view.quantity.findData("sensitivity"))
    assert view.node_item("conv1").brush().color() != MISSING
    assert view.node_item("conv2").brush().color() == MISSING  # not analysed: grey, and the tooltip says why
    assert "not analysed" in view.node_item("conv2").toolTip()
    view.quantity.setCurrentIndex(view.quantity.findData("latency_ratio"))
    window.apply_config(window.state.config.with_defaults(weight={"precision": "int4"}), "int4")
    assert "another configuration" in view.colouring.note  # a profile of an older configuration says so
    assert window.table_model.index(0, COL_PROFILE).data(Qt.ForegroundRole) is not None  # greyed in the table
