"""Benchmark of the Pareto plot with many points, every figure measured in this run.

Printed per point count (1k, 20k, 100k by default):

- ``fill``: seconds to add the points to a :class:`~qtradeoff.gui.plot_data.PointStore` (doubling columns), and
  beside it the same fill with the arrays appended to one point at a time (``np.append``, how the store grew
  before: O(n²)), interleaved, at the counts where that finishes in reasonable time (``--append-max``);
- ``redraw``: median ms of one redraw of both views (the frontiers recomputed, as when a point arrived: NumPy
  work and every item's setData), decimated (what the window does) and, interleaved with it, undecimated (every
  point drawn), and their ratio;
- ``select``: median ms of a redraw for a selection change (the frontiers come from their cache);
- ``paint``: median ms to paint the whole plot widget afterwards (``grab()``: axes, legend, colour bars and
  points, more than the repaint a new point causes), decimated and not.

Targets (issue 18): redraw ≤ 16 ms at 20k points, ≤ 50 ms at 100k. The machine may be shared: read the ratios
and print the load average beside the figures. Run offscreen and under the shared lock:
  QT_QPA_PLATFORM=offscreen flock /tmp/bench.lock .venv/bin/python benchmarks/bench_plot.py [--counts 1000 20000]
      [--repeats 5] [--append-max 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

TARGETS_MS = {20000: 16.0, 100000: 50.0}


@dataclass(frozen=True)
class _Stats:
    batch: int
    median_ms: float


@dataclass(frozen=True)
class SyntheticResult:
    """What the plot reads of a Result, for a cloud of synthetic points."""

    config_key: str
    accuracy: float
    accuracy_ci95: tuple[float, float]
    weight_bytes: int
    eval_samples: int
    estimated_ms: float
    measured_ms: float | None
    agreement: float = 1.0
    agreement_ci95: tuple[float, float] = (1.0, 1.0)
    fp32_weight_bytes: int = 400_000
    config: object = None
    provenance: dict = field(default_factory=dict)
    latency_by_runtime: dict = field(default_factory=dict)

    def latency_ms(self, batch: int = 1, measured: bool = True) -> float | None:
        return self.measured_ms if measured else self.estimated_ms


def cloud(n: int, seed: int = 0) -> list[SyntheticResult]:
    """A trade-off cloud: accuracy rises with the bits, size and latency with them; 10 % on a second subset."""
    rng = np.random.default_rng(seed)
    bits = rng.uniform(2, 32, n)
    accuracy = np.clip(0.6 + 0.39 * (1 - np.exp(-bits / 4)) + rng.normal(0, 0.015, n), 0.05, 1.0)
    latency = 0.05 + bits / 40 * rng.uniform(0.5, 1.5, n)
    memory = (400_000 * bits / 32 * rng.uniform(0.8, 1.2, n)).astype(int)
    out = []
    for i in range(n):
        samples = 100 if i % 10 == 0 else 359
        a = float(accuracy[i])
        out.append(SyntheticResult(f"k{i}", a, (max(0.0, a - 0.02), min(1.0, a + 0.02)), int(memory[i]), samples,
                                   float(latency[i]), float(latency[i] * 30) if i % 3 == 0 else None,
                                   provenance={"eval_subset": {"samples": samples, "of": 359}}))
    return out


class AppendStore:
    """The store as it grew before: every column re-allocated by np.append on each point (O(n²) to fill)."""

    def __init__(self) -> None:
        self.columns = [np.empty(0) for _ in range(7)]

    def add(self, result: SyntheticResult) -> None:
        measured = result.latency_ms(1, True)
        row = (100 * result.accuracy, 100 * result.accuracy_ci95[0], 100 * result.accuracy_ci95[1],
               np.nan if measured is None else measured, result.latency_ms(1, False), float(result.weight_bytes),
               0.0)
        self.columns = [np.append(a, v) for a, v in zip(self.columns, row, strict=True)]


def time_fill(results: list[SyntheticResult]) -> float:
    from qtradeoff.gui.plot_data import PointStore

    store = PointStore()
    start = time.perf_counter()
    for result in results:
        store.add(result, {})
    return time.perf_counter() - start


def time_append(results: list[SyntheticResult]) -> float:
    store = AppendStore()
    start = time.perf_counter()
    for result in results:
        store.add(result)
    return time.perf_counter() - start


def time_redraw(plot, *, decimate: bool, new_point: bool) -> float:
    from qtradeoff.gui.plot_data import DECIMATE_ABOVE

    plot.decimate_above = DECIMATE_ABOVE if decimate else 10**12
    if new_point:
        plot._fronts_cache = None  # as when a point arrived: the frontiers are recomputed
    plot.set_highlight([len(plot.store) // 2])
    start = time.perf_counter()
    plot.redraw()
    middle = time.perf_counter()
    plot.graphics.grab()  # paint the whole plot widget (axes, legend and colour bars too: more than a repaint)
    return (middle - start) * 1000.0, (time.perf_counter() - middle) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 20000, 100000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--append-max", type=int, default=20000,
                        help="largest count the np.append reference fills (it is O(n²))")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from qtradeoff.gui.plot import ParetoPlot

    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores here; figures are of this run)")
    header = ("points", "fill s", "np.append s", "redraw ms", "undecimated ms", "ratio", "select ms",
              "paint ms (decimated / not)", "drawn", "target (redraw)")
    print(" | ".join(header))
    for n in args.counts:
        results = cloud(n)
        fill = time_fill(results)
        append = time_append(results) if n <= args.append_max else None
        plot = ParetoPlot()
        plot.resize(1000, 460)
        plot.show()
        for result in results:
            plot.store.add(result, {})
        plot.set_work_samples(359)
        plot.redraw()  # first fit of the ranges
        app.processEvents()
        decimated, full, select, paint, paint_full = [], [], [], [], []
        for _ in range(args.repeats):  # interleaved: the two variants see the same machine load
            redraw_ms, paint_ms = time_redraw(plot, decimate=True, new_point=True)
            decimated.append(redraw_ms)
            paint.append(paint_ms)
            redraw_ms, paint_ms = time_redraw(plot, decimate=False, new_point=True)
            full.append(redraw_ms)
            paint_full.append(paint_ms)
            select.append(time_redraw(plot, decimate=True, new_point=False)[0])
            app.processEvents()
        time_redraw(plot, decimate=True, new_point=True)
        drawn = plot.drawn["latency"]
        plot.stop()
        plot.close()
        plot.deleteLater()
        app.processEvents()
        d, f, s = statistics.median(decimated), statistics.median(full), statistics.median(select)
        p, pf = statistics.median(paint), statistics.median(paint_full)
        target = TARGETS_MS.get(n)
        verdict = "" if target is None else f"≤ {target:g} ms: {'met' if d <= target else 'MISSED'}"
        print(" | ".join((f"{n}", f"{fill:.3f}", "—" if append is None else f"{append:.3f}", f"{d:.1f}", f"{f:.1f}",
                          f"{f / d:.2f}×", f"{s:.1f}", f"{p:.1f} / {pf:.1f}", f"{drawn}", verdict)))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
