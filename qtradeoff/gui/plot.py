"""The live Pareto plot: every evaluated configuration as a point in two y-linked views (accuracy–latency and
accuracy–memory, the third objective as colour), the frontier of each view, the fp32 baseline and the current
configuration. Results are kept in NumPy arrays and redrawn at most 15 times a second with one setData per item.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from qtradeoff.core.measurement.pareto import pareto_front_2d
from qtradeoff.core.precision import is_integer, label
from qtradeoff.gui.formatting import format_bytes, latency_text

REDRAW_INTERVAL_MS = 66  # ~15 Hz
N_COLOURS = 16
# The views' ranges follow the data with headroom instead of pyqtgraph's auto-range: auto-range moves both axes
# on every new point, and each move repaints the axes' tick pictures (about 6 ms an axis offscreen, 4 axes). With
# headroom a new point usually lands inside the range and the repaint is the points' alone.
HEADROOM = 0.15  # of the data's span, added above and to the right when the range has to grow
_REFIT = (math.nan, math.nan, math.nan)  # a followed range that nothing fits: set on the next redraw


def point_key(config: Any) -> str:
    """What identifies a point: the configuration's key without its locked layers. Locks steer searches, not
    what a configuration measures, so locking a layer neither adds a point nor re-evaluates one."""
    return config.with_locked(()).key() if config.locked else config.key()


def _point_key(result: Any) -> str:
    config = getattr(result, "config", None)
    key = point_key(config) if config is not None and config.locked else result.config_key
    # a recovered point is the same configuration with other weights: a point of its own beside the original
    recovered = (getattr(result, "provenance", None) or {}).get("recovered")
    return f"{key}+recovered:{recovered.get('file', '')}" if isinstance(recovered, dict) else key


@dataclass
class PointStore:
    """All evaluated configurations and their metrics, one row per (configuration, subset size)."""

    results: list[Any] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)
    accuracy: np.ndarray = field(default_factory=lambda: np.empty(0))  # percent
    ci_low: np.ndarray = field(default_factory=lambda: np.empty(0))
    ci_high: np.ndarray = field(default_factory=lambda: np.empty(0))
    latency_measured: np.ndarray = field(default_factory=lambda: np.empty(0))  # ms, NaN when not measured
    latency_estimated: np.ndarray = field(default_factory=lambda: np.empty(0))  # ms
    memory: np.ndarray = field(default_factory=lambda: np.empty(0))  # weight bytes
    baseline: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    _keys: list[str] = field(default_factory=list)  # point_key of each row
    _index: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.results)

    def find(self, key: str) -> int | None:
        """Index of the latest point evaluated for a :func:`point_key` (a config's key when it locks nothing)."""
        for i in range(len(self._keys) - 1, -1, -1):
            if self._keys[i] == key:
                return i
        return None

    def lookup(self, key: str, eval_samples: int) -> int | None:
        return self._index.get((key, eval_samples))

    def add(self, result: Any, meta: dict) -> int:
        """Add a result; one evaluated again on the same subset (e.g. now measured) replaces its old point."""
        accuracy = result.accuracy if result.accuracy is not None else result.agreement
        ci = result.accuracy_ci95 if result.accuracy is not None else result.agreement_ci95
        ci = ci or (accuracy, accuracy)
        measured = result.latency_ms(1, measured=True)
        estimated = result.latency_ms(1, measured=False)
        if estimated is None:
            estimated = measured
        row = (100.0 * accuracy, 100.0 * ci[0], 100.0 * ci[1],
               math.nan if measured is None else float(measured),
               math.nan if estimated is None else float(estimated), float(result.weight_bytes),
               meta.get("tag") == "baseline")
        key = (_point_key(result), int(result.eval_samples))
        index = self._index.get(key)
        if index is not None:
            old = self.results[index]
            if math.isnan(row[3]) and old.latency_ms(1, measured=True) is not None:
                return index  # keep the measured point: an estimate never replaces a measurement
            self.results[index] = result
            self.meta[index] = meta
            for array, value in zip(self._arrays(), row, strict=True):
                array[index] = value
            return index
        self.results.append(result)
        self.meta.append(meta)
        self._keys.append(key[0])
        (self.accuracy, self.ci_low, self.ci_high, self.latency_measured, self.latency_estimated, self.memory,
         self.baseline) = (np.append(a, v) for a, v in zip(self._arrays(), row, strict=True))
        self._index[key] = len(self.results) - 1
        return len(self.results) - 1

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.accuracy, self.ci_low, self.ci_high, self.latency_measured, self.latency_estimated,
                self.memory, self.baseline)

    def latency(self, prefer_measured: bool) -> tuple[np.ndarray, np.ndarray]:
        """x values in ms and whether each one is a measurement."""
        measured = ~np.isnan(self.latency_measured)
        if prefer_measured:
            return np.where(measured, self.latency_measured, self.latency_estimated), measured
        return self.latency_estimated.copy(), np.zeros(len(self), dtype=bool)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["config_key", "tag", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "agreement",
                         "sqnr_db", "eval_samples", "weight_bytes", "fp32_weight_bytes", "peak_activation_bytes",
                         "latency_ms_measured", "latency_ms_estimated", "weight_precision", "activation_precision",
                         "layer_overrides", "config_json"])
        import json

        for result, meta in zip(self.results, self.meta, strict=True):
            ci = result.accuracy_ci95 or (None, None)
            config = result.config
            writer.writerow([
                result.config_key, meta.get("tag", ""), result.accuracy, ci[0], ci[1], result.agreement,
                result.sqnr_db, result.eval_samples, result.weight_bytes, result.fp32_weight_bytes,
                result.peak_activation_bytes, result.latency_ms(1, measured=True),
                result.latency_ms(1, measured=False), config.weight.precision, config.activation.precision,
                len(config.overrides()), json.dumps(config.to_dict(), sort_keys=True),
            ])
        return out.getvalue()


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


class ParetoPlot(QWidget):
    """Two linked scatter views of every result, with frontiers, the baseline and the current configuration."""

    point_clicked = Signal(int)  # index into ``store``

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = PointStore()
        self.current_key: str | None = None
        self.highlighted: tuple[int, ...] = ()  # rows selected in the results table, outlined in blue
        # Estimates by default: every point has one, so the frontier compares like with like.
        self.prefer_measured = False
        self._dirty = False
        self._memory_unit = (1024.0, "KiB")
        self.redraw_count = 0

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.graphics.setToolTip("")
        self.latency_view = self.graphics.addPlot(row=0, col=0)
        self.memory_view = self.graphics.addPlot(row=0, col=1)
        self.memory_view.setYLink(self.latency_view)
        cmap = pg.colormap.get("viridis")
        self._brushes = [QBrush(QColor(*cmap.map(i / (N_COLOURS - 1), mode="byte"))) for i in range(N_COLOURS)]
        self._items: dict[str, dict[str, Any]] = {}
        # (x max, y low, y high) each view was last given while it follows the data; None once the user pans or
        # zooms it (pyqtgraph's "A" button gives it back to auto-range)
        self._follow: dict[str, tuple[float, float, float] | None] = {}
        for name, view in (("latency", self.latency_view), ("memory", self.memory_view)):
            view.showGrid(x=True, y=True, alpha=0.25)
            view.disableAutoRange()
            self._follow[name] = _REFIT
            view.getViewBox().sigRangeChangedManually.connect(lambda *_args, name=name: self._release(name))
            view.setLimits(xMin=0)  # latency and bytes are never negative; 0 in view shows the compression ratio
            view.setLabel("left", "Accuracy (%)")
            for side in ("left", "bottom"):
                view.getAxis(side).enableAutoSIPrefix(False)  # the units are in the labels already
            errors = pg.ErrorBarItem(x=np.empty(0), y=np.empty(0), height=np.empty(0), beam=0.0,
                                     pen=pg.mkPen((120, 120, 120, 70), width=1))
            frontier = pg.PlotDataItem(pen=pg.mkPen((220, 60, 40), width=2))
            points = pg.ScatterPlotItem(size=11, pen=pg.mkPen((40, 40, 40, 160)), hoverable=True,
                                        hoverPen=pg.mkPen((0, 0, 0), width=2), tip=self._tip)
            baseline = pg.ScatterPlotItem(size=22, symbol="star", brush=pg.mkBrush(255, 200, 0),
                                          pen=pg.mkPen((90, 60, 0), width=1.5))
            current = pg.ScatterPlotItem(size=24, symbol="o", brush=QBrush(), pen=pg.mkPen((220, 0, 120), width=3))
            selected = pg.ScatterPlotItem(size=18, symbol="s", brush=QBrush(), pen=pg.mkPen((0, 120, 255), width=2.5))
            # An invisible point at x = 0 keeps zero in the auto-range: without it, points that differ by 0.01 %
            # fill the whole axis and a negligible difference looks like a large one.
            origin = pg.ScatterPlotItem(size=1, pen=None, brush=QBrush())
            for item in (origin, errors, frontier, points, baseline, current, selected):
                view.addItem(item)
            points.sigClicked.connect(self._clicked)
            self._items[name] = {"origin": origin, "errors": errors, "frontier": frontier, "points": points,
                                 "baseline": baseline, "current": current, "selected": selected}
        self.latency_view.setLabel("bottom", "Latency, batch 1 (ms)")
        self.memory_view.setLabel("bottom", "Weight memory (KiB)")
        self.latency_view.setTitle("Accuracy vs latency · colour: memory (dark = small)",
                                   size="9pt", color=(60, 60, 60))
        self.memory_view.setTitle("Accuracy vs memory · colour: latency (dark = fast)",
                                  size="9pt", color=(60, 60, 60))
        # The legend sits in its own row under both views so it never hides a point.
        legend = pg.LegendItem(colCount=5, labelTextSize="8pt", labelTextColor=(60, 60, 60))
        self.graphics.addItem(legend, row=1, col=0, colspan=2)
        legend.addItem(pg.ScatterPlotItem(symbol="o", brush=self._brushes[8], pen=pg.mkPen("k")), "measured latency")
        legend.addItem(pg.ScatterPlotItem(symbol="t", brush=self._brushes[8], pen=pg.mkPen("k")),
                       "estimated latency")
        legend.addItem(pg.ScatterPlotItem(symbol="star", brush=pg.mkBrush(255, 200, 0), pen=pg.mkPen("k")),
                       "fp32 baseline")
        legend.addItem(pg.PlotDataItem(pen=pg.mkPen((220, 60, 40), width=2)), "Pareto frontier")
        legend.addItem(pg.ScatterPlotItem(symbol="o", brush=QBrush(), pen=pg.mkPen((220, 0, 120), width=3)),
                       "current configuration")
        self.graphics.ci.layout.setRowStretchFactor(0, 10)

        self.latency_switch = QComboBox()
        self.latency_switch.addItems(["Estimated latency for every point", "Measured latency where available"])
        self.latency_switch.setToolTip(
            "Plot measured latency where a point was timed on real kernels, or the roofline estimate for all points.")
        self.latency_switch.currentIndexChanged.connect(self._switch_latency)
        self.summary = QLabel(EMPTY_HINT)
        self.summary.setToolTip("How many configurations were evaluated and how many are on a frontier.")
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.latency_switch)
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
        for name in self._follow:  # a new model's points: fit the views to them afresh
            self._follow[name] = _REFIT
        self._schedule()

    def set_highlight(self, indices: tuple[int, ...] | list[int]) -> None:
        """Outline these points (the results table's selection) in both views."""
        self.highlighted = tuple(int(i) for i in indices if 0 <= int(i) < len(self.store))
        self._schedule()

    def _release(self, name: str) -> None:
        self._follow[name] = None

    def set_current(self, config_key: str | None) -> None:
        self.current_key = config_key
        self._schedule()

    def _switch_latency(self, index: int) -> None:
        self.prefer_measured = index == 1
        if self._follow["latency"] is not None:
            self._follow["latency"] = _REFIT  # other x values
        self._schedule()

    def _schedule(self) -> None:
        # The timer runs only while there is something to draw, so an idle window holds no active timer.
        self._dirty = True
        if not self._timer.isActive():
            self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    # -- drawing -------------------------------------------------------------------------------------------------
    def frontier_indices(self, view: str) -> list[int]:
        store = self.store
        if not len(store):
            return []
        x = store.latency(self.prefer_measured)[0] if view == "latency" else store.memory
        finite = np.flatnonzero(np.isfinite(x))
        front = pareto_front_2d([(x[i], store.accuracy[i]) for i in finite], maximize=(False, True))
        return [int(finite[i]) for i in front]

    def redraw(self) -> None:
        if not self._dirty:
            self._timer.stop()
            return
        self._dirty = False
        self.redraw_count += 1
        store = self.store
        n = len(store)
        latency, measured = store.latency(self.prefer_measured)
        memory = store.memory
        max_memory = float(memory.max()) if n else 0.0
        unit = (1024.0 * 1024.0, "MiB") if max_memory >= 4 << 20 else (1024.0, "KiB")
        if unit != self._memory_unit:  # only then: a new label re-lays out and repaints the axis
            if self._follow["memory"] is not None:
                self._follow["memory"] = _REFIT  # the x values changed scale
            self._memory_unit = unit
            self.memory_view.setLabel("bottom", f"Weight memory ({unit[1]})")
        memory_x = memory / self._memory_unit[0]
        symbols = np.where(measured, "o", "t").tolist()
        current = store.find(self.current_key) if self.current_key else None
        fronts = {}
        for name, x, colour_by in (("latency", latency, memory), ("memory", memory_x, latency)):
            items = self._items[name]
            items["origin"].setData(x=[0.0] if n else [], y=[float(np.nanmax(store.accuracy))] if n else [])
            items["points"].setData(x=x, y=store.accuracy, data=np.arange(n), symbol=symbols,
                                    brush=self._colour(colour_by))
            items["errors"].setData(x=x, y=(store.ci_high + store.ci_low) / 2,
                                    height=store.ci_high - store.ci_low)
            front = self.frontier_indices(name)
            fronts[name] = front
            order = sorted(front, key=lambda i, x=x: (x[i], store.accuracy[i]))
            items["frontier"].setData(*self._staircase(x[order], store.accuracy[order]))
            base = np.flatnonzero(store.baseline)
            items["baseline"].setData(x=x[base], y=store.accuracy[base], data=base)
            chosen = [i for i in self.highlighted if i < n and np.isfinite(x[i])]
            items["selected"].setData(x=x[chosen] if chosen else [], y=store.accuracy[chosen] if chosen else [])
            if current is not None and np.isfinite(x[current]):
                items["current"].setData(x=[x[current]], y=[store.accuracy[current]])
            else:
                items["current"].setData(x=[], y=[])
        if n:
            y_low = float(np.nanmin(np.minimum(store.ci_low, store.accuracy)))
            y_high = float(np.nanmax(np.maximum(store.ci_high, store.accuracy)))
            self._fit("latency", self.latency_view, latency, y_low, y_high)
            self._fit("memory", self.memory_view, memory_x, y_low, y_high)
        on_front = len(set(fronts.get("latency", [])) | set(fronts.get("memory", [])))
        self.summary.setText(f"{n} configuration(s) evaluated, {on_front} on a frontier." if n else
                             EMPTY_HINT)

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

    def _colour(self, values: np.ndarray) -> list[QBrush]:
        if not len(values):
            return []
        finite = np.isfinite(values)
        if not finite.any():
            return [self._brushes[0]] * len(values)
        # Log scale: sizes and latencies span orders of magnitude between fp32 and 2-bit configurations.
        logs = np.log10(np.clip(np.nan_to_num(values, nan=float(values[finite].min())), 1e-9, None))
        lo, hi = float(logs.min()), float(logs.max())
        span = hi - lo if hi > lo else 1.0
        steps = np.clip(((logs - lo) / span * (N_COLOURS - 1)).round(), 0, N_COLOURS - 1)
        return [self._brushes[int(s)] for s in steps]

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
        return (f"{head}\n{acc}\n{lat}\nweights {format_bytes(result.weight_bytes)} "
                f"({result.weight_bytes / max(1, result.fp32_weight_bytes):.0%} of fp32)\n"
                f"{describe_config(result.config)}\nclick to load it")

    def _clicked(self, _item: Any, points: Any, *_args: Any) -> None:
        if points is None or len(points) == 0:
            return
        self.point_clicked.emit(int(points[0].data()))

    def save_png(self, path: str) -> bool:
        self.redraw()
        return self.graphics.grab().save(path, "PNG")
