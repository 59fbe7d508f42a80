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


def _on(result: FakeResult, samples: int) -> FakeResult:
    from dataclasses import replace

    return replace(result, eval_samples=samples, provenance={"eval_subset": {"samples": samples, "of": 359}})


def test_points_from_two_evaluation_sets_never_share_a_frontier(qtbot):
    plot = ParetoPlot()
    qtbot.addWidget(plot)
    small = [plot.add_result(_on(_result(bits, accuracy, latency), 100), {})
             for bits, accuracy, latency in ((32, 0.97, 2.0), (8, 0.96, 1.0), (4, 0.90, 0.5))]
    # on the whole split, a point that would dominate every point of the small subset
    large = [plot.add_result(_on(_result(bits, accuracy, latency), 359), {})
             for bits, accuracy, latency in ((32, 0.99, 2.0), (2, 0.99, 0.1))]
    plot.set_work_samples(100)
    plot.redraw()
    assert not plot.set_switch.isHidden() and plot.set_switch.count() == 2
    for view in ("latency", "memory"):
        assert set(plot.frontier_indices(view)) <= set(small) and plot.frontier_indices(view)
    assert len(plot._items["latency"]["others"].data) == 2  # the other set is greyed, not hidden
    assert "first 100 of 359" in plot.set_switch.currentText() and "2 greyed" in plot.summary.text()
    plot.show_eval_set(plot.store.eval_set[large[0]])  # as the selector does
    plot.redraw()
    for view in ("latency", "memory"):
        assert set(plot.frontier_indices(view)) <= set(large)
    plot.set_three_objective(True)
    assert set(plot.frontier_indices("latency")) == {large[1]}
    plot.set_work_samples(100)  # the work moves to the small subset again: the plot follows it
    assert set(plot.frontier_indices("memory")) <= set(small)
    plot.stop()


def test_the_store_fills_in_linear_time_and_keeps_its_columns():
    from dataclasses import replace

    import numpy as np

    from qtradeoff.gui.plot import PointStore

    store = PointStore()
    rows = [store.add(replace(_result(8, 0.9 + i * 1e-5, 1.0 + i), config_key=f"k{i}"),
                      {"tag": "baseline" if i == 3 else "edit"}) for i in range(300)]
    assert rows == list(range(300)) and len(store) == 300 and len(store.accuracy) == 300
    assert store._cap < 1024  # doubled, not grown a row at a time
    assert store.baseline.sum() == 1 and store.baseline[3]
    assert np.allclose(store.latency("estimated")[0], 1.1 * (1.0 + np.arange(300)))
    assert store.find(store._keys[5]) == 5 and store.find(store._keys[5], eval_set=1) is None


def test_measured_and_estimated_latency_never_share_a_frontier(qtbot):
    from dataclasses import dataclass, field, replace
    from types import SimpleNamespace

    from qtradeoff.gui.plot import LATENCY_SOURCES

    @dataclass(frozen=True)
    class WithRuntimes(FakeResult):
        latency_by_runtime: dict = field(default_factory=dict)

    def ort(ms):
        return {"onnxruntime": (SimpleNamespace(batch=1, median_ms=ms),)}

    plot = ParetoPlot()
    qtbot.addWidget(plot)
    # estimates only: a fast, accurate estimate that would dominate both measured points
    estimated = plot.add_result(WithRuntimes(**{**_result(4, 0.99, 0.1).__dict__}), {})
    slow = plot.add_result(WithRuntimes(**{**replace(_result(32, 0.98, 20.0), measured=True).__dict__},
                                        latency_by_runtime=ort(3.0)), {})
    fast = plot.add_result(WithRuntimes(**{**replace(_result(8, 0.97, 5.0), measured=True).__dict__}), {})
    assert [source.key for source in LATENCY_SOURCES][:2] == ["estimated", "torch"]
    plot.redraw()
    assert plot.frontier_indices("latency") == [estimated]  # every point estimated: one kind, one frontier
    plot.set_latency_source("torch")
    plot.redraw()
    assert plot.prefer_measured and sorted(plot.frontier_indices("latency")) == [slow, fast]
    assert list(plot._items["latency"]["estimates"].data["data"]) == [estimated]  # drawn apart
    assert estimated in plot.frontier_indices("memory")  # memory is counted, never estimated
    plot.set_latency_source("onnxruntime")
    plot.redraw()
    assert plot.frontier_indices("latency") == [slow]  # only it was timed on ONNX Runtime
    assert plot.store.latency("onnxruntime")[0][slow] == 3.0
    assert plot.store.latency("openvino")[1].sum() == 0  # nothing timed there: NaN, drawn as estimates
    plot.stop()


def test_frontier_members_are_ringed_and_the_colour_bars_have_units(qtbot):
    from qtradeoff.gui.plot import _log_ticks

    plot = ParetoPlot()
    qtbot.addWidget(plot)
    for bits, accuracy, latency in ((32, 0.98, 2.0), (8, 0.97, 1.0), (16, 0.95, 1.5), (4, 0.90, 0.4)):
        plot.add_result(_result(bits, accuracy, latency), {})
    plot.redraw()
    for view in ("latency", "memory"):
        assert sorted(plot._items[view]["rings"].data["data"]) == sorted(plot.frontier_indices(view))
    assert 2 not in plot.frontier_indices("latency")  # int16 is slower, larger and less accurate than int8
    plot.set_three_objective(True)
    plot.redraw()
    joint = plot.frontier_indices("latency")
    assert joint == plot.frontier_indices("memory") and 2 not in joint
    steps, _ = plot._items["latency"]["frontier"].getData()
    assert steps is None or len(steps) == 0  # no 2-D staircase for a 3-D set
    ticks = _log_ticks(*plot.colour_bars["memory"].values, 1024.0, "KiB")
    assert ticks and all(text.endswith(" KiB") for _, text in ticks)
    assert [text for _, text in _log_ticks(-1.0, 1.0, 1.0, "ms")] == ["0.1 ms", "1 ms", "10 ms"]
    plot.stop()


def test_dense_clouds_are_decimated_but_the_frontier_and_marks_are_kept(qtbot):
    from dataclasses import replace

    import numpy as np

    from qtradeoff.gui.plot_data import decimate

    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 10, 5000), rng.uniform(0, 10, 5000)
    rows = np.arange(5000)
    kept = decimate(rows, x, y, (0.0, 0.0, 10.0, 10.0), (30.0, 30.0), above=100)  # a 10 x 10 grid of cells
    cells = {(int(a), int(b)) for a, b in zip(x[kept] // 1, y[kept] // 1, strict=True)}
    assert len(kept) == len(cells) == 100  # one point in each occupied cell
    assert decimate(rows[:50], x, y, (0.0, 0.0, 10.0, 10.0), (30.0, 30.0), above=100).tolist() == list(range(50))

    plot = ParetoPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 300)
    plot.decimate_above = 50
    for i in range(400):
        acc = float(rng.uniform(0.5, 0.99))
        plot.add_result(replace(_result(8, acc, float(rng.uniform(0.1, 2.0))), config_key=f"k{i}",
                                weight_bytes=int(rng.integers(1000, 9000))), {})
    plot.set_answer(7)
    plot.redraw()
    assert plot.drawn["latency"] < 400  # decimated
    rings = plot._items["latency"]["rings"].data["data"]
    assert sorted(rings) == sorted(plot.frontier_indices("latency"))  # the frontier is drawn whole
    assert list(plot._items["latency"]["answer"].data["data"]) == [7]
    plot.decimate_above = 10**9  # (a zoom of a dense cloud redraws it: no more redraws after the test)
    plot.stop()


def test_fronts_grown_from_added_rows_are_the_fronts_of_all_rows():
    import numpy as np

    from qtradeoff.gui.plot_data import frontier_candidates, view_fronts

    rng = np.random.default_rng(3)
    n = 400
    accuracy = np.round(rng.uniform(50, 100, n), 1)  # rounded: ties and duplicates occur
    latency = np.round(rng.uniform(0.1, 3.0, n), 1)
    latency[rng.choice(n, 20, replace=False)] = np.nan
    memory = np.round(rng.uniform(1e3, 4e4, n), -3)
    measured = rng.uniform(size=n) < 0.4
    for measured_only in (False, True):
        for three in (False, True):
            known, fronts = 0, None
            for end in (1, 2, 5, 40, 41, 200, 399, 400):
                rows = np.arange(end)[np.arange(end) % 7 != 3]  # another set's rows left out
                candidates = rows if fronts is None else frontier_candidates(fronts, rows, known)
                fronts = view_fronts(candidates, latency, measured, memory, accuracy, measured_only=measured_only,
                                     three_objective=three)
                full = view_fronts(rows, latency, measured, memory, accuracy, measured_only=measured_only,
                                   three_objective=three)
                known = end
                for view in ("latency", "memory"):
                    assert fronts[view].tolist() == full[view].tolist(), (measured_only, three, end, view)


def test_a_kept_decimation_grown_by_new_rows_equals_decimating_all_rows():
    import numpy as np

    from qtradeoff.gui.plot_data import Decimation, decimate

    rng = np.random.default_rng(5)
    n = 3000
    x, y = rng.uniform(-0.2, 2.2, n), rng.uniform(40, 101, n)  # some outside the bounds: edge cells
    x[rng.choice(n, 30, replace=False)] = np.nan
    bounds, pixels = (0.0, 50.0, 2.0, 100.0), (90.0, 60.0)
    kept = Decimation()
    for end in (100, 1500, 1501, 1502, 2200, 3000):
        rows = np.arange(end)[np.arange(end) % 5 != 0]
        got = kept(rows, x, y, bounds, pixels, count=end, key="k", above=200)
        assert got.tolist() == decimate(rows, x, y, bounds, pixels, above=200).tolist(), end
    shifted = (0.0, 50.0, 2.5, 100.0)  # a zoom: recomputed from every row
    assert kept(rows, x, y, shifted, pixels, count=3000, key="k", above=200).tolist() == decimate(
        rows, x, y, shifted, pixels, above=200).tolist()


def test_the_prefiltered_frontier_of_many_rows_is_the_plain_one():
    import numpy as np

    from qtradeoff.core.measurement.pareto import pareto_front_arrays
    from qtradeoff.gui.plot_data import frontier_2d

    rng = np.random.default_rng(11)
    n = 30_000
    cost = np.round(rng.gamma(2.0, 1.0, n), 2)  # rounded: ties, duplicates of frontier members
    accuracy = np.round(100 - 30 * np.exp(-cost) * rng.uniform(0.5, 1.5, n), 1)
    cost[rng.choice(n, 50, replace=False)] = np.nan
    for rows in (np.arange(n), np.arange(n)[np.arange(n) % 3 != 0]):
        plain = rows[pareto_front_arrays(np.column_stack((cost[rows], accuracy[rows])), (False, True))]
        assert frontier_2d(rows, cost, accuracy).tolist() == plain.tolist()
