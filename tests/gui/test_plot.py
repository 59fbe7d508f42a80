"""The Pareto plot's views follow the data with headroom: a point inside the range moves no axis, one outside
grows the range to hold every point, and a range the user panned or zoomed is left alone."""

from __future__ import annotations

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.plot import ParetoPlot
from tests.gui.conftest import FakeResult


def _result(bits: int, accuracy: float, latency: float) -> FakeResult:
    config = CompressionConfig().with_defaults(weight={"precision": f"int{bits}" if bits < 32 else "fp32"})
    return FakeResult(config=config, config_key=config.key(), accuracy=accuracy,
                      accuracy_ci95=(accuracy - 0.02, min(1.0, accuracy + 0.02)), weight_bytes=1000 * bits,
                      fp32_weight_bytes=32000, eval_samples=100, latency=latency, measured=False)


def _ranges(plot: ParetoPlot) -> tuple:
    return (tuple(plot.latency_view.viewRange()[0]), tuple(plot.latency_view.viewRange()[1]),
            tuple(plot.memory_view.viewRange()[0]))


def _holds(plot: ParetoPlot) -> bool:
    (x0, x1), (y0, y1), (m0, m1) = _ranges(plot)
    store = plot.store
    latency = store.latency(False)[0]
    memory = store.memory / 1024.0
    return (x0 <= 0.0 and latency.max() <= x1 and m0 <= 0.0 and memory.max() <= m1
            and y0 <= store.ci_low.min() and store.ci_high.max() <= y1)


def test_views_follow_the_points_and_leave_a_user_range_alone(qtbot):
    plot = ParetoPlot()
    qtbot.addWidget(plot)
    plot.add_result(_result(32, 0.98, 2.0), {"tag": "baseline"})
    plot.add_result(_result(8, 0.97, 1.0), {})
    plot.redraw()
    assert _holds(plot)
    before = _ranges(plot)
    plot.add_result(_result(6, 0.975, 1.5), {})  # inside the range: no axis moves
    plot.redraw()
    assert _ranges(plot) == before
    plot.add_result(_result(4, 0.60, 2.1), {})  # lower accuracy than any before: the range grows
    plot.redraw()
    assert _holds(plot) and _ranges(plot) != before
    plot.latency_view.getViewBox().sigRangeChangedManually.emit([True, True])  # as a mouse zoom does
    plot.latency_view.setRange(xRange=(0.5, 1.0), yRange=(90.0, 99.0), padding=0.0)
    zoomed = plot.latency_view.viewRange()
    plot.add_result(_result(3, 0.30, 9.0), {})  # far outside: the user's range stays
    plot.redraw()
    assert plot.latency_view.viewRange() == zoomed
    plot.clear()
    plot.add_result(_result(32, 0.98, 2.0), {"tag": "baseline"})
    plot.redraw()
    plot.stop()
    assert _holds(plot)  # a new model's points are fitted afresh
