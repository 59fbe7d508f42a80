"""The live Pareto plot: every evaluated configuration as a point in two y-linked views (accuracy–latency and
accuracy–memory, the third objective as colour with a colour bar), the frontier of each view, the fp32 baseline,
the current configuration and a search's answer.

Points of one evaluation set are shown at a time (a selector appears once there are two); the others are greyed and
never take part in a frontier. With a measured latency source, points that only have an estimate are drawn apart
and left off the latency frontier. Results are kept in NumPy columns (:mod:`qtradeoff.gui.plot_data`) and redrawn at
most 15 times a second: points go into a few styled groups (one brush each, no per-point brushes), and above
:data:`~qtradeoff.gui.plot_data.DECIMATE_ABOVE` points a view draws at most one point per 3-pixel cell (the
frontier and the marked points are always drawn).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from qtradeoff.core.precision import is_integer, label
from qtradeoff.gui.fast_scatter import FastScatter
from qtradeoff.gui.formatting import format_bytes, latency_text
from qtradeoff.gui.plot_data import (
    DECIMATE_ABOVE,
    LATENCY_SOURCES,
    Decimation,
    PointStore,
    frontier_candidates,
    latency_source,
    point_key,
    view_fronts,
)

__all__ = ["LATENCY_SOURCES", "EMPTY_HINT", "ParetoPlot", "PointStore", "describe_config", "point_key"]

REDRAW_INTERVAL_MS = 66  # ~15 Hz
N_COLOURS = 16
# The views' ranges follow the data with headroom instead of pyqtgraph's auto-range: auto-range moves both axes
# on every new point, and each move repaints the axes' tick pictures (about 6 ms an axis offscreen, 4 axes). With
# headroom a new point usually lands inside the range and the repaint is the points' alone.
HEADROOM = 0.15  # of the data's span, added above and to the right when the range has to grow
_REFIT = (math.nan, math.nan, math.nan)  # a followed range that nothing fits: set on the next redraw
ANSWER_BRUSH = (40, 170, 70)
OTHERS_BRUSH = (190, 190, 190, 110)
FRONT_PEN = (220, 60, 40)


def describe_config(config: Any) -> str:
    """A few lines summarising a configuration (hover text)."""
    lines = [f"weights {label(config.weight.precision)}"
             + (f" {config.weight.granularity}, {'sym' if config.weight.symmetric else 'asym'}"
                if is_integer(config.weight.precision) else ""),
             f"activations {label(config.activation.precision)}"
             + (f" ({config.activation.calibration})" if config.activation.precision != "fp32" else "")]
    prune = config.prune
    if prune.method != "none":
        what = (f"{prune.sparsity:.0%}" if prune.sparsity is not None
                else f"|w| < {prune.threshold:g}{'σ' if prune.relative else ''}")
        lines.append(f"pruning {prune.method} {what}")
    overrides = config.overrides()
    if overrides:
        names = ", ".join(list(overrides)[:3]) + ("…" if len(overrides) > 3 else "")
        lines.append(f"{len(overrides)} layer override(s): {names}")
    return "\n".join(lines)


EMPTY_HINT = "No results yet: drop a model file on the window (or File → Open model…); Help → Quick start."


def _log_ticks(low: float, high: float, unit: float, suffix: str) -> list[tuple[float, str]]:
    """Ticks for a colour bar whose axis runs over log10 values ``low``..``high``: round numbers of ``unit`` (1-2-5
    steps, at most 6), labelled in ``suffix``."""
    low_u, high_u = low - math.log10(unit), high - math.log10(unit)
    values = [m * 10.0 ** e for e in range(math.floor(low_u) - 1, math.ceil(high_u) + 1) for m in (1, 2, 5)]
    inside = [v for v in values if low_u - 1e-9 <= math.log10(v) <= high_u + 1e-9]
    if len(inside) > 6:
        inside = [v for v in inside if f"{v:.0e}".startswith("1")] or inside[::2]
    if len(inside) > 6:
        inside = inside[::2]
    if not inside:  # a narrow range: one tick in the middle (ticks at the very ends are not drawn)
        middle = float(f"{10.0 ** ((low_u + high_u) / 2):.2g}")  # short: a label wider than the axis is not drawn
        inside = [middle]
    return [(math.log10(v * unit), f"{v:.3g} {suffix}") for v in inside]


class ParetoPlot(QWidget):
    """Two linked scatter views of one evaluation set's results, with frontiers, the baseline, the current
    configuration and a search's answer."""

    point_clicked = Signal(int)  # index into ``store``

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = PointStore()
        self.current_key: str | None = None
        self.highlighted: tuple[int, ...] = ()  # rows selected in the results table, outlined in blue
        self.answer: int | None = None  # store row of the last search's answer
        # Estimates by default: every point has one, so the frontier compares like with like.
        self.latency_source = "estimated"
        self.three_objective = False
        self.eval_set_choice: int | None = None  # the set the user picked; None: the set of the current work
        self.work_samples: int | None = None  # the subset size edits are measured on (the window says)
        self._dirty = False
        self._memory_unit = (1024.0, "KiB")
        self._set_labels: tuple[str, ...] = ()
        self.redraw_count = 0
        self.drawn: dict[str, int] = {}  # points drawn per view in the last redraw (after decimation)
        self.decimate_above = DECIMATE_ABOVE  # points in a view above which one point per 3-px cell is drawn
        # (store, what the fronts depend on, rows they cover, fronts): see _fronts
        self._decimations = {(view, group): Decimation() for view in ("latency", "memory")
                             for group in ("main", "estimates", "others")}
        self._bar_state: dict[str, tuple] = {}
        self._fronts_cache: tuple[PointStore, tuple, int, dict[str, np.ndarray]] | None = None

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.graphics.setToolTip("")
        self.latency_view = self.graphics.addPlot(row=0, col=0)
        self.memory_view = self.graphics.addPlot(row=0, col=2)
        self.memory_view.setYLink(self.latency_view)
        self.cmap = pg.colormap.get("viridis")
        self._brushes = [QBrush(QColor(*self.cmap.map(i / (N_COLOURS - 1), mode="byte"))) for i in range(N_COLOURS)]
        self._items: dict[str, dict[str, Any]] = {}
        # (x max, y low, y high) each view was last given while it follows the data; None once the user pans or
        # zooms it (pyqtgraph's "A" button gives it back to auto-range)
        self._follow: dict[str, tuple[float, float, float] | None] = {}
        point_pen = pg.mkPen((40, 40, 40, 160))
        for name, view in (("latency", self.latency_view), ("memory", self.memory_view)):
            view.showGrid(x=True, y=True, alpha=0.25)
            view.disableAutoRange()
            self._follow[name] = _REFIT
            box = view.getViewBox()
            box.sigRangeChangedManually.connect(lambda *_args, name=name: self._release(name))
            box.sigRangeChanged.connect(self._range_changed)
            view.setLimits(xMin=0)  # latency and bytes are never negative; 0 in view shows the compression ratio
            view.setLabel("left", "Accuracy (%)")
            for side in ("left", "bottom"):
                view.getAxis(side).enableAutoSIPrefix(False)  # the units are in the labels already
            errors = pg.ErrorBarItem(x=np.empty(0), y=np.empty(0), height=np.empty(0), beam=0.0,
                                     pen=pg.mkPen((120, 120, 120, 70), width=1))
            frontier = pg.PlotDataItem(pen=pg.mkPen(FRONT_PEN, width=2))
            others = FastScatter(size=7, symbol="o", pen=None, brush=pg.mkBrush(*OTHERS_BRUSH),
                                 hoverable=True, tip=self._tip)
            # one item for every colour: each point's brush is one of the cached N_COLOURS (see FastScatter)
            points = FastScatter(size=11, pen=point_pen, brush=self._brushes[0], hoverable=True,
                                 hoverPen=pg.mkPen((0, 0, 0), width=2), tip=self._tip)
            estimates = FastScatter(size=10, symbol="t", brush=QBrush(), hoverable=True, tip=self._tip,
                                    pen=pg.mkPen((110, 110, 110), width=1.2))
            rings = FastScatter(size=17, symbol="o", brush=QBrush(), pen=pg.mkPen(FRONT_PEN, width=2))
            baseline = FastScatter(size=22, symbol="star", brush=pg.mkBrush(255, 200, 0),
                                   pen=pg.mkPen((90, 60, 0), width=1.5), tip=self._tip, hoverable=True)
            answer = FastScatter(size=20, symbol="d", brush=pg.mkBrush(*ANSWER_BRUSH),
                                 pen=pg.mkPen((0, 70, 20), width=1.5), tip=self._tip, hoverable=True)
            current = FastScatter(size=24, symbol="o", brush=QBrush(), pen=pg.mkPen((220, 0, 120), width=3))
            selected = FastScatter(size=18, symbol="s", brush=QBrush(), pen=pg.mkPen((0, 120, 255), width=2.5))
            # An invisible point at x = 0 keeps zero in the auto-range: without it, points that differ by 0.01 %
            # fill the whole axis and a negligible difference looks like a large one.
            origin = FastScatter(size=1, pen=None, brush=QBrush())
            for item in (origin, others, errors, frontier, points, estimates, rings, baseline, answer, current,
                         selected):
                view.addItem(item)
            # every item drawn over a point passes a click on (the one on top takes it), with the point's row
            for item in (others, points, estimates, rings, baseline, answer, current, selected):
                item.sigClicked.connect(self._clicked)
            self._items[name] = {"origin": origin, "errors": errors, "frontier": frontier, "others": others,
                                 "points": points, "estimates": estimates, "rings": rings, "baseline": baseline,
                                 "answer": answer, "current": current, "selected": selected}
        # colour bars: the latency view is coloured by memory, the memory view by latency (log scales)
        self.colour_bars: dict[str, Any] = {}
        for name, col, text in (("memory", 1, "memory"), ("latency", 3, "latency")):
            bar = pg.ColorBarItem(values=(0.0, 1.0), width=10, colorMap=self.cmap, interactive=False,
                                  colorMapMenu=False)
            bar.axis.setWidth(58)
            bar.setToolTip(f"Colour of the points beside it: {text} (log scale, dark = small)")
            self.graphics.addItem(bar, row=0, col=col)
            self.colour_bars[name] = bar
        self.graphics.ci.layout.setColumnMinimumWidth(4, 14)  # room for the last bar's tick labels
        self.latency_view.setLabel("bottom", "Latency, batch 1 (ms)")
        self.memory_view.setLabel("bottom", "Weight memory (KiB)")
        self.latency_view.setTitle("Accuracy vs latency · colour: memory", size="9pt", color=(60, 60, 60))
        self.memory_view.setTitle("Accuracy vs memory · colour: latency", size="9pt", color=(60, 60, 60))
        # The legend sits in its own row under both views so it never hides a point.
        legend = pg.LegendItem(colCount=4, labelTextSize="8pt", labelTextColor=(60, 60, 60))
        self.graphics.addItem(legend, row=1, col=0, colspan=4)
        legend.addItem(pg.ScatterPlotItem(symbol="o", brush=self._brushes[8], pen=pg.mkPen("k")), "measured latency")
        legend.addItem(pg.ScatterPlotItem(symbol="t", brush=self._brushes[8], pen=pg.mkPen("k")),
                       "estimated latency")
        legend.addItem(pg.ScatterPlotItem(symbol="o", brush=pg.mkBrush(*OTHERS_BRUSH), pen=None),
                       "other evaluation set")
        legend.addItem(pg.ScatterPlotItem(symbol="star", brush=pg.mkBrush(255, 200, 0), pen=pg.mkPen("k")),
                       "fp32 baseline")
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen(FRONT_PEN, width=2)), "Pareto frontier")
        legend.addItem(pg.ScatterPlotItem(symbol="o", brush=QBrush(), pen=pg.mkPen(FRONT_PEN, width=2)),
                       "frontier member")
        legend.addItem(pg.ScatterPlotItem(symbol="d", brush=pg.mkBrush(*ANSWER_BRUSH), pen=pg.mkPen("k")),
                       "search answer")
        legend.addItem(pg.ScatterPlotItem(symbol="o", brush=QBrush(), pen=pg.mkPen((220, 0, 120), width=3)),
                       "current configuration")
        self.legend = legend
        self.graphics.ci.layout.setRowStretchFactor(0, 10)

        self.set_switch = QComboBox()
        self.set_switch.setToolTip("Points measured on other samples are not comparable: the plot and its frontiers "
                                   "show one evaluation set at a time, the others greyed.")
        self.set_switch.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.set_switch.activated.connect(self._choose_set)
        self.set_switch.hide()  # until there are two sets
        self.latency_switch = QComboBox()
        for source in LATENCY_SOURCES:
            self.latency_switch.addItem(source.label, source.key)
        self.latency_switch.setToolTip(
            "Plot the roofline estimate for every point, or the latency measured on a runtime where a point was "
            "timed there; points with only an estimate are then drawn as hollow triangles and left off the "
            "latency frontier (measured and estimated latencies never share a frontier).")
        self.latency_switch.currentIndexChanged.connect(self._switch_latency)
        self.three_box = QCheckBox("3-objective frontier")
        self.three_box.setToolTip("Ring the configurations no other beats on accuracy, latency and memory at once "
                                  "(instead of each view's own 2-D frontier).")
        self.three_box.toggled.connect(self.set_three_objective)
        self.summary = QLabel(EMPTY_HINT)
        self.summary.setToolTip("How many configurations were evaluated and how many are on a frontier.")
        self.summary.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)  # long text never widens the window
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.set_switch)
        top.addWidget(self.latency_switch)
        top.addWidget(self.three_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.graphics, 1)

        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_INTERVAL_MS)
        self._timer.timeout.connect(self.redraw)

    # -- feeding -------------------------------------------------------------------------------------------------
    def add_result(self, result: Any, meta: dict) -> int:
        index = self.store.add(result, meta)
        self._schedule()
        return index

    def clear(self) -> None:
        self.store = PointStore()
        self.highlighted = ()
        self.answer = None
        self.eval_set_choice = None
        for name in self._follow:  # a new model's points: fit the views to them afresh
            self._follow[name] = _REFIT
        self._schedule()

    def set_highlight(self, indices: tuple[int, ...] | list[int]) -> None:
        """Outline these points (the results table's selection) in both views."""
        self.highlighted = tuple(int(i) for i in indices if 0 <= int(i) < len(self.store))
        self._schedule()

    def set_answer(self, index: int | None) -> None:
        """Mark a search's answer (a store row; None forgets it). Its meta says so, for the results table."""
        if self.answer is not None and self.answer < len(self.store):
            self.store.meta[self.answer].pop("answer", None)
        self.answer = index if index is not None and 0 <= index < len(self.store) else None
        if self.answer is not None:
            self.store.meta[self.answer]["answer"] = True
        self._schedule()

    def _release(self, name: str) -> None:
        self._follow[name] = None

    def set_current(self, config_key: str | None) -> None:
        self.current_key = config_key
        self._schedule()

    # -- what is shown -------------------------------------------------------------------------------------------
    @property
    def prefer_measured(self) -> bool:
        return latency_source(self.latency_source).measured

    def set_latency_source(self, key: str) -> None:
        """Plot latency from this source (a key of LATENCY_SOURCES)."""
        latency_source(key)  # validates
        index = self.latency_switch.findData(key)
        if self.latency_switch.currentIndex() != index:
            self.latency_switch.setCurrentIndex(index)  # calls back into _switch_latency
        elif self.latency_source != key:
            self._switch_latency(index)

    def _switch_latency(self, index: int) -> None:
        self.latency_source = str(self.latency_switch.itemData(index))
        if self._follow["latency"] is not None:
            self._follow["latency"] = _REFIT  # other x values
        self._schedule()

    def set_three_objective(self, on: bool) -> None:
        self.three_objective = bool(on)
        if self.three_box.isChecked() != self.three_objective:
            self.three_box.setChecked(self.three_objective)
        self._schedule()

    def set_work_samples(self, samples: int | None) -> None:
        """The subset size the current work is measured on: the plot shows that evaluation set (the user's own
        choice in the selector lasts until the work moves to another subset)."""
        self.work_samples = None if samples is None else int(samples)
        self.eval_set_choice = None
        self._refit()
        self._schedule()

    def show_eval_set(self, index: int | None) -> None:
        """Show evaluation set ``index`` of ``store.eval_sets`` (None: the set of the current work)."""
        self.eval_set_choice = index
        self._refit()
        self._schedule()

    def _choose_set(self, combo_index: int) -> None:
        self.show_eval_set(int(self.set_switch.itemData(combo_index)))

    def _refit(self) -> None:
        for name in self._follow:
            if self._follow[name] is not None:
                self._follow[name] = _REFIT

    def shown_set(self) -> int | None:
        """Index of the evaluation set the plot shows: the user's choice, else the latest set of the current
        work's subset size, else the latest point's set."""
        sets = self.store.eval_sets
        if not sets:
            return None
        if self.eval_set_choice is not None and 0 <= self.eval_set_choice < len(sets):
            return self.eval_set_choice
        if self.work_samples is not None:
            matching = [i for i, s in enumerate(sets) if s.samples == self.work_samples]
            if matching:
                return matching[-1]
        return int(self.store.eval_set[-1]) if len(self.store) else len(sets) - 1

    def _schedule(self) -> None:
        # The timer runs only while there is something to draw, so an idle window holds no active timer.
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def _range_changed(self, *_args: Any) -> None:
        if len(self.store) > self.decimate_above:
            self._schedule()  # which points a cell keeps depends on the range

    def stop(self) -> None:
        self._timer.stop()

    def forget_caches(self) -> None:
        """Drop the frontiers and decimations kept between redraws (the next redraw recomputes them from every
        row, as after a zoom or a replaced point); for benchmarks and tests."""
        self._fronts_cache = None
        for decimation in self._decimations.values():
            decimation.reset()
        self._dirty = True

    # -- frontiers -----------------------------------------------------------------------------------------------
    def _rows(self) -> np.ndarray:
        shown = self.shown_set()
        if shown is None:
            return np.empty(0, dtype=np.int64)
        return np.flatnonzero(self.store.eval_set == shown)

    def _fronts(self, rows: np.ndarray, latency: np.ndarray, measured: np.ndarray) -> dict[str, np.ndarray]:
        store = self.store
        # What the fronts depend on besides the rows added since: a replaced row may leave a frontier, so it
        # counts as a change of everything; an added row can only join one (see frontier_candidates).
        key = (store.replaced, self.latency_source, self.shown_set(), self.three_objective)
        cached = self._fronts_cache
        candidates = rows
        if cached is not None and cached[0] is store and cached[1] == key:
            if cached[2] == len(store):
                return cached[3]  # a redraw for a selection, the current point or a zoom
            if cached[2] < len(store):
                candidates = frontier_candidates(cached[3], rows, cached[2])
        fronts = view_fronts(candidates, latency, measured, store.memory, store.accuracy,
                             measured_only=self.prefer_measured, three_objective=self.three_objective)
        self._fronts_cache = (store, key, len(store), fronts)
        return fronts

    def frontier_indices(self, view: str) -> list[int]:
        """Store rows on ``view``'s frontier ("latency" or "memory"; the joint set when the 3-objective frontier is
        on), among the shown evaluation set's points only."""
        if not len(self.store):
            return []
        latency, measured = self.store.latency(self.latency_source)
        return [int(i) for i in self._fronts(self._rows(), latency, measured)[view]]

    # -- drawing -------------------------------------------------------------------------------------------------
    def redraw(self) -> None:
        if not self._dirty:
            self._timer.stop()
            return
        self._dirty = False
        self.redraw_count += 1
        store = self.store
        n = len(store)
        self._sync_set_switch()
        latency, measured = store.latency(self.latency_source)
        accuracy = store.accuracy
        memory = store.memory
        rows = self._rows()
        others = np.flatnonzero(store.eval_set != self.shown_set()) if n else rows
        max_memory = float(memory[rows].max()) if len(rows) else 0.0
        unit = (1024.0 * 1024.0, "MiB") if max_memory >= 4 << 20 else (1024.0, "KiB")
        if unit != self._memory_unit:  # only then: a new label re-lays out and repaints the axis
            if self._follow["memory"] is not None:
                self._follow["memory"] = _REFIT  # the x values changed scale
            self._memory_unit = unit
            self.memory_view.setLabel("bottom", f"Weight memory ({unit[1]})")
        memory_x = memory / self._memory_unit[0]
        fronts = self._fronts(rows, latency, measured)
        if self.prefer_measured:
            main, estimates = rows[measured[rows]], rows[~measured[rows]]
        else:
            main, estimates = rows, rows[:0]
        current = store.find(self.current_key, self.shown_set()) if self.current_key else None
        answer = self.answer
        if answer is not None and not (answer < n and store.eval_set[answer] == self.shown_set()):
            answer = None
        symbol = "o" if self.prefer_measured else "t"
        # log10 spans of the colouring values over the shown rows: the latency view is coloured by memory
        spans = {"latency": self._log_range(memory[rows]), "memory": self._log_range(latency[rows])}
        for name, x, colour_by in (("latency", latency, memory), ("memory", memory_x, latency)):
            items = self._items[name]
            box = self.latency_view.getViewBox() if name == "latency" else self.memory_view.getViewBox()
            (vx0, vx1), (vy0, vy1) = box.viewRange()
            bounds, pixels = (vx0, vy0, vx1, vy1), (box.width(), box.height())
            # the x values of a group's rows change only with what the fronts depend on and the memory unit
            key = (store, store.replaced, self.latency_source, self.shown_set(), self._memory_unit)
            drawn_main, drawn_est, drawn_others = (
                self._decimations[name, group](group_rows, x, accuracy, bounds, pixels, count=n, key=key,
                                               above=self.decimate_above)
                for group, group_rows in (("main", main), ("estimates", estimates), ("others", others)))
            self.drawn[name] = len(drawn_main) + len(drawn_est) + len(drawn_others)
            items["origin"].set_points([0.0] if len(rows) else [], [float(np.nanmax(accuracy[rows]))]
                                       if len(rows) else [])
            bins = self._bins(colour_by[drawn_main], spans[name])
            # higher colour steps drawn over lower ones, as when each colour was an item of its own
            order = np.argsort(bins, kind="stable")
            drawn_main, bins = drawn_main[order], bins[order]
            items["points"].set_points(x[drawn_main], accuracy[drawn_main], drawn_main, symbol=symbol,
                                       brush_index=bins, brushes=self._brushes)
            items["estimates"].set_points(x[drawn_est], accuracy[drawn_est], drawn_est)
            items["others"].set_points(x[drawn_others], accuracy[drawn_others], drawn_others)
            with_bars = np.concatenate((drawn_main, drawn_est))
            if len(with_bars) > self.decimate_above:  # error bars of thousands of points are a grey smear
                with_bars = with_bars[:0]
            items["errors"].setData(x=x[with_bars], y=(store.ci_high[with_bars] + store.ci_low[with_bars]) / 2,
                                    height=store.ci_high[with_bars] - store.ci_low[with_bars])
            front = fronts[name]
            if self.three_objective:
                items["frontier"].setData(x=[], y=[])
            else:
                order = front[np.lexsort((accuracy[front], x[front]))]
                items["frontier"].setData(*self._staircase(x[order], accuracy[order]))
            items["rings"].set_points(x[front], accuracy[front], front)
            base = rows[store.baseline[rows]]
            base = base[np.isfinite(x[base])]
            items["baseline"].set_points(x[base], accuracy[base], base)
            marked = [answer] if answer is not None and np.isfinite(x[answer]) else []
            items["answer"].set_points(x[marked], accuracy[marked], marked)
            chosen = [i for i in self.highlighted if i < n and np.isfinite(x[i])]
            items["selected"].set_points(x[chosen], accuracy[chosen], chosen)
            marked = [current] if current is not None and np.isfinite(x[current]) else []
            items["current"].set_points(x[marked], accuracy[marked], marked)
        self._colour_bar("memory", spans["latency"], *self._memory_unit)
        self._colour_bar("latency", spans["memory"], 1.0, "ms")
        if len(rows):
            y_low = float(np.nanmin(np.minimum(store.ci_low[rows], accuracy[rows])))
            y_high = float(np.nanmax(np.maximum(store.ci_high[rows], accuracy[rows])))
            self._fit("latency", self.latency_view, latency[rows], y_low, y_high)
            self._fit("memory", self.memory_view, memory_x[rows], y_low, y_high)
        self.summary.setText(self._summary_text(rows, others, fronts) if n else EMPTY_HINT)
        others_n = int(len(others)) if n else 0
        self.summary.setToolTip(self.summary.text() + (f" ({others_n} point(s) measured on other evaluation sets are "
                                                       "grey: not comparable with these)" if others_n else ""))

    def _summary_text(self, rows: np.ndarray, others: np.ndarray, fronts: dict[str, np.ndarray]) -> str:
        on_front = len(set(fronts["latency"].tolist()) | set(fronts["memory"].tolist()))
        shown = self.shown_set()
        # the selector names the set once there are two
        where = f" on {self.store.eval_sets[shown].label()}" if shown is not None and not len(others) else ""
        # short: it shares the header row with two selectors and must fit a 1366-pixel screen (tooltip: the same)
        text = (f"{len(rows)} points{where} · {on_front} on "
                + ("the 3-objective frontier" if self.three_objective else "a frontier"))
        if len(others):
            text += f" · {len(others)} greyed"
        return text

    def _sync_set_switch(self) -> None:
        sets = self.store.eval_sets
        labels = tuple(s.label() for s in sets)
        if labels != self._set_labels:
            self._set_labels = labels
            self.set_switch.blockSignals(True)
            self.set_switch.clear()
            for i, text in enumerate(labels):
                self.set_switch.addItem(text, i)
            self.set_switch.blockSignals(False)
            self.set_switch.setVisible(len(sets) >= 2)
        shown = self.shown_set()
        if shown is not None and self.set_switch.currentIndex() != shown:
            self.set_switch.blockSignals(True)
            self.set_switch.setCurrentIndex(shown)
            self.set_switch.blockSignals(False)

    @staticmethod
    def _log_range(values: np.ndarray) -> tuple[float, float] | None:
        finite = values[np.isfinite(values) & (values > 0)]
        if not len(finite):
            return None
        return math.log10(float(finite.min())), math.log10(float(finite.max()))

    @staticmethod
    def _bins(values: np.ndarray, span: tuple[float, float] | None) -> np.ndarray:
        """Colour step (0..N_COLOURS-1) of each value, on a log scale over ``span`` (the shown rows' log10 range):
        sizes and latencies span orders of magnitude between fp32 and 2-bit configurations."""
        bins = np.zeros(len(values), dtype=np.int64)
        if span is None:
            return bins
        lo, hi = span
        width = hi - lo if hi > lo else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(np.clip(np.nan_to_num(values, nan=10.0 ** lo), 1e-12, None))
        bins[:] = np.clip(np.rint((logs - lo) / width * (N_COLOURS - 1)), 0, N_COLOURS - 1)
        return bins

    def _colour_bar(self, name: str, span: tuple[float, float] | None, unit: float, suffix: str) -> None:
        if self._bar_state.get(name) == (span, unit, suffix):
            return  # unchanged: new ticks would repaint the bar's axis
        self._bar_state[name] = (span, unit, suffix)
        bar = self.colour_bars[name]
        if span is None:
            bar.setLevels((0.0, 1.0))
            bar.axis.setTicks([[]])
            return
        lo, hi = span
        if hi - lo < 0.1:  # at least a tenth of a decade, so that a round tick falls inside
            centre = (lo + hi) / 2
            lo, hi = centre - 0.05, centre + 0.05
        bar.setLevels((lo, hi))
        bar.axis.setTicks([_log_ticks(lo, hi, unit, suffix)])

    def _fit(self, name: str, view: Any, x: np.ndarray, y_low: float, y_high: float) -> None:
        """Grow ``view``'s range to hold every point, with headroom, when one falls outside; leave it otherwise
        (and leave it alone once the user has panned, zoomed or turned pyqtgraph's auto-range on)."""
        follow = self._follow[name]
        box = view.getViewBox()
        if follow is None or any(box.autoRangeEnabled()):
            return
        finite = x[np.isfinite(x)]
        if not len(finite) or not (math.isfinite(y_low) and math.isfinite(y_high)):
            return
        x_max = float(finite.max())
        width, low, high = follow
        if x_max <= width and y_low >= low and y_high <= high:
            return  # NaN (a refit) compares False: never "fits"
        span = max(y_high - y_low, 1.0)  # percentage points; one point alone still gets a readable range
        width = x_max * (1.0 + HEADROOM) if x_max > 0 else 1.0
        low, high = y_low - HEADROOM * span, y_high + HEADROOM * span
        self._follow[name] = (width, low, high)
        # y is shared through the link: set (on the latency view) only while the user has moved neither view
        if name == "latency" and self._follow["memory"] is not None:
            box.setRange(xRange=(0.0, width), yRange=(low, high), padding=0.0)
        else:
            box.setRange(xRange=(0.0, width), padding=0.0)

    @staticmethod
    def _staircase(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frontier as steps: between two members, accuracy holds until the next (costlier) member."""
        if len(x) < 2:
            return x, y
        xs = np.repeat(x, 2)[1:]
        ys = np.repeat(y, 2)[:-1]
        return xs, ys

    def _tip(self, x: float, y: float, data: Any) -> str:
        try:
            index = int(data)
            result = self.store.results[index]
        except (TypeError, ValueError, IndexError):
            return ""
        meta = self.store.meta[index]
        ci = result.accuracy_ci95
        acc = (f"accuracy {result.accuracy:.1%} [{ci[0]:.1%}, {ci[1]:.1%}] on {result.eval_samples}"
               if result.accuracy is not None and ci else f"agreement {result.agreement:.1%}")
        lat = f"latency {latency_text(result)}"
        head = {"baseline": "fp32 baseline", "recovered": "recovered configuration (fine-tuned weights)"}.get(
            meta.get("tag"), "configuration")
        if index == self.answer:
            head = f"search answer ({meta.get('strategy', 'search')})"
        if int(self.store.eval_set[index]) != self.shown_set():
            head += " · on another evaluation set (not comparable)"
        return (f"{head}\n{acc}\n{lat}\nweights {format_bytes(result.weight_bytes)} "
                f"({result.weight_bytes / max(1, result.fp32_weight_bytes):.0%} of fp32)\n"
                f"{describe_config(result.config)}\nclick to load it")

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if points is None or len(points) == 0:
            return
        self.point_clicked.emit(int(points[0].data()))

    # -- images --------------------------------------------------------------------------------------------------
    def save_image(self, path: str | Path, scale: float = 1.0) -> bool:
        """Save both views (with legend and colour bars): SVG when ``path`` ends in .svg, else PNG at ``scale``
        times the on-screen size (pyqtgraph's exporters: the scene is redrawn at that size, not magnified)."""
        from pyqtgraph.exporters import ImageExporter

        self._dirty = True
        self.redraw()
        path = str(path)
        scene_item = self.graphics.ci
        try:
            if path.lower().endswith(".svg"):
                self._save_svg(path)  # pyqtgraph's SVGExporter fails on empty items (pyqtgraph 0.14)
            else:
                exporter = ImageExporter(scene_item)
                width = max(1, int(round(scene_item.boundingRect().width() * scale)))
                exporter.parameters()["width"] = width
                exporter.parameters()["antialias"] = True
                exporter.export(path)
        except Exception:  # noqa: BLE001 - an exporter failure is reported as "not saved"
            return False
        return Path(path).is_file() and Path(path).stat().st_size > 0

    def _save_svg(self, path: str) -> None:
        """Render the plot's scene as vector graphics through Qt's SVG generator."""
        from PySide6.QtCore import QRectF, QSize
        from PySide6.QtGui import QPainter
        from PySide6.QtSvg import QSvgGenerator

        view = self.graphics
        source = view.mapToScene(view.viewport().rect()).boundingRect()
        generator = QSvgGenerator()
        generator.setFileName(path)
        generator.setSize(QSize(int(source.width()), int(source.height())))
        generator.setViewBox(QRectF(0, 0, source.width(), source.height()))
        generator.setTitle("qtradeoff Pareto plot")
        painter = QPainter(generator)
        try:
            view.scene().render(painter, QRectF(0, 0, source.width(), source.height()), source)
        finally:
            painter.end()

    def save_png(self, path: str) -> bool:
        return self.save_image(path, 1.0)
