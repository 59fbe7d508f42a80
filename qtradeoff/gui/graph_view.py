"""The model graph view (the Graph tab beside Layers and Results): the model's layers and the ops between them as a
layered DAG, each node coloured by a chosen per-layer quantity with a colour bar in its units, zoomable and
draggable, and linked both ways with the layer table (a click on a node selects its row; a selected row outlines
its node). "Profile layers" asks the worker for the measured per-layer time of the configuration against fp32.

The graph arrives as the core's plain :class:`~qtradeoff.core.loading.graph.ModelGraph` from the worker (traced
there, when the tab is first shown for a model); values are read from the layer table's model, so the graph and
the table always show the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QPointF, QRectF, Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor, QFont, QLinearGradient, QPainter, QPainterPath, QPen, QPolygonF
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from qtradeoff.core.precision import bits_of, is_lut
from qtradeoff.gui.graph_layout import layered_layout
from qtradeoff.gui.layer_table import COL_ACT, COL_MACS, COL_SHARE, COL_SPARSITY, COL_WEIGHT, SORT_ROLE, human_count

QUANTITIES: tuple[tuple[str, str], ...] = (
    ("precision", "Weight precision"),
    ("sparsity", "Sparsity"),
    ("sensitivity", "Sensitivity (accuracy change)"),
    ("share", "Size share"),
    ("macs", "MACs"),
    ("latency_ratio", "Measured time vs fp32"),
    ("latency_ms", "Measured time (this configuration)"),
)
NODE_W, NODE_H, GLUE_W, GLUE_H = 172.0, 32.0, 118.0, 20.0
STEP_X, STEP_Y = 194.0, 50.0
MIN_FIT_SCALE = 0.7  # the first view zooms out to show the whole graph, but not below where text stays readable
MISSING = QColor(200, 200, 200)
GLUE_FILL = QColor(246, 246, 246)
HIGHLIGHT = QColor(30, 110, 230)  # the results table and plot outline selections in the same blue
# a perceptually ordered ramp (viridis' stops, light end first so dark text stays readable on most of it)
RAMP = (QColor(253, 231, 37), QColor(122, 209, 81), QColor(34, 168, 132), QColor(42, 120, 142), QColor(65, 68, 135))
DIVERGING = (QColor(26, 152, 80), QColor(166, 217, 106), QColor(255, 255, 255), QColor(253, 174, 97),
             QColor(215, 48, 39))  # faster (green) … same (white) … slower (red)
RATIO_RANGE = 4.0  # the ratio bar spans 1/4× … 4× on a log scale


def precision_colour(precision: str) -> QColor:
    """One colour per precision family and width: floats blue, 8-bit green, narrower warmer, codebooks purple."""
    if is_lut(precision):
        return QColor(171, 130, 214)
    if precision == "fp32":
        return QColor(158, 190, 222)
    if precision.startswith(("fp16", "bf16")):
        return QColor(110, 170, 230)
    if precision.startswith("fp8"):
        return QColor(90, 200, 200)
    bits = bits_of(precision)
    if bits >= 16:
        return QColor(180, 220, 150)
    if bits >= 8:
        return QColor(102, 194, 110)
    if bits >= 5:
        return QColor(240, 210, 80)
    if bits == 4:
        return QColor(247, 150, 70)
    return QColor(222, 70, 60)


def _lerp(stops: tuple[QColor, ...], t: float) -> QColor:
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    a, b = stops[i], stops[i + 1]
    return QColor(round(a.red() + (b.red() - a.red()) * f), round(a.green() + (b.green() - a.green()) * f),
                  round(a.blue() + (b.blue() - a.blue()) * f))


@dataclass
class Colouring:
    """Per-layer values of one quantity and how to turn them into colours (what the colour bar says)."""

    key: str
    title: str
    values: dict[str, Any] = field(default_factory=dict)  # layer -> number, or precision name for categories
    texts: dict[str, str] = field(default_factory=dict)  # layer -> its value as the tooltip says it
    missing: dict[str, str] = field(default_factory=dict)  # layer -> why it has no value
    scale: str = "linear"  # "linear" | "log" | "diverging" | "category"
    unit: str = ""
    low: float = 0.0
    high: float = 1.0
    note: str = ""

    def fraction(self, value: float) -> float:
        if self.scale == "diverging":
            return 0.5 + math.log(max(value, 1e-9)) / (2 * math.log(RATIO_RANGE))
        if self.scale == "log":
            low, high = math.log10(max(self.low, 1e-12)), math.log10(max(self.high, 1e-12))
            return 0.5 if high <= low else (math.log10(max(value, 1e-12)) - low) / (high - low)
        return 0.5 if self.high <= self.low else (value - self.low) / (self.high - self.low)

    def colour(self, layer: str) -> QColor:
        value = self.values.get(layer)
        if value is None:
            return MISSING
        if self.scale == "category":
            return precision_colour(str(value))
        return _lerp(DIVERGING if self.scale == "diverging" else RAMP, self.fraction(float(value)))

    def categories(self) -> list[str]:
        return sorted({str(v) for v in self.values.values()}, key=lambda p: (-bits_of(p), p))

    def describe(self, value: float) -> str:
        if self.scale == "diverging":
            return f"{value:.2g}×"
        if self.unit == "%":
            return f"{value:.0%}" if value >= 0.1 or value == 0 else f"{value:.1%}"
        if self.unit == "ms":
            return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"
        if self.unit == "pts":  # an accuracy drop, shown as the change in accuracy (as the layer table and "vs fp32")
            return f"{-value:+.2f} pts" if value else "0.00 pts"
        return human_count(value)


def layer_colouring(key: str, table_model: Any) -> Colouring:
    """The values of quantity ``key`` for every layer of the layer table (read through its model's roles)."""
    title = dict(QUANTITIES)[key]
    names = table_model.layer_names()
    colouring = Colouring(key, title)
    if not names:
        return colouring

    def cell(row: int, column: int, role: int) -> Any:
        return table_model.data(table_model.index(row, column), role)

    if key == "precision":
        colouring.scale = "category"
        for row, name in enumerate(names):
            weight, activation = cell(row, COL_WEIGHT, Qt.EditRole), cell(row, COL_ACT, Qt.EditRole)
            if weight is None:
                colouring.missing[name] = "no configuration yet"
                continue
            shown = cell(row, COL_WEIGHT, Qt.DisplayRole) or weight
            colouring.values[name] = "fp32" if "skip" in str(shown) else weight
            colouring.texts[name] = f"weights {shown}, activations {activation}"
        return colouring
    numbers: dict[str, float] = {}
    if key == "sparsity":
        colouring.unit, colouring.low, colouring.high = "%", 0.0, 1.0
        for row, name in enumerate(names):
            value = cell(row, COL_SPARSITY, Qt.EditRole)
            if value is None:
                colouring.missing[name] = "no configuration yet"
            else:
                numbers[name] = float(value)
    elif key == "sensitivity":
        colouring.unit = "pts"
        drops = table_model.sensitivity()
        for name in names:
            if name in drops:
                numbers[name] = max(0.0, float(drops[name]) * 100.0)
            else:
                colouring.missing[name] = "not analysed: run a search (Explore) or the sensitivity analysis first"
        colouring.note = "change in accuracy when only this layer is compressed (darker: more lost)"
    elif key == "share":
        colouring.unit = "%"
        params = {name: float(cell(row, COL_SHARE, SORT_ROLE) or 0) for row, name in enumerate(names)}
        total = sum(params.values()) or 1.0
        numbers = {name: value / total for name, value in params.items()}
        colouring.note = "share of the fp32 model's weight storage"
    elif key == "macs":
        colouring.scale, colouring.unit = "log", "MACs"
        for row, name in enumerate(names):
            macs = float(cell(row, COL_MACS, SORT_ROLE) or 0)
            if macs > 0:
                numbers[name] = macs
            else:
                colouring.missing[name] = "no multiply-accumulates counted (the layer did not run in the example)"
        colouring.note = "multiply-accumulates per sample"
    elif key in ("latency_ratio", "latency_ms"):
        profile = table_model.profile()
        timings = profile.by_layer() if profile is not None else {}
        stale = profile is not None and not table_model.profile_is_current()
        for name in names:
            timing = timings.get(name)
            value = None if timing is None else (timing.ratio if key == "latency_ratio" else timing.config_ms)
            if profile is None:
                colouring.missing[name] = "not profiled: press “Profile layers”"
            elif value is None:
                colouring.missing[name] = "no time: not a module of the real-kernel model (counted in the glue)"
            else:
                numbers[name] = float(value)
                colouring.texts[name] = (f"{_ms_text(timing.config_ms)} in {timing.executed} vs "
                                         f"{_ms_text(timing.fp32_ms)} in fp32 = {timing.ratio:.2f}× "
                                         f"(±{timing.config_spread:.0%}{', NOISY' if timing.noisy else ''})")
        if key == "latency_ratio":
            colouring.scale, colouring.unit = "diverging", "× fp32"
        else:
            colouring.scale, colouring.unit = "log", "ms"
        if profile is not None:
            colouring.note = ("MEASURED for another configuration — profile again. " if stale else "") + \
                f"measured, batch {profile.batch}, {profile.threads} thread{'s' if profile.threads != 1 else ''}, " \
                f"median of {profile.rounds} rounds"
    colouring.values = dict(numbers)
    if numbers and key not in ("sparsity", "latency_ratio"):
        positive = [v for v in numbers.values() if v > 0] or [1.0]
        colouring.low = min(positive) if colouring.scale == "log" else 0.0
        colouring.high = max(numbers.values()) or 1.0
    for name, value in numbers.items():
        colouring.texts.setdefault(name, colouring.describe(value))
    return colouring


def _ms_text(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


class ColourBar(QWidget):
    """The legend: a gradient with its ends and unit, or one swatch per precision."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.colouring: Colouring | None = None
        self.setMinimumHeight(34)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def show_colouring(self, colouring: Colouring | None) -> None:
        self.colouring = colouring
        self.setToolTip(colouring.note if colouring is not None else "")
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802
        colouring = self.colouring
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        painter.setFont(font)
        width, height = self.width(), self.height()
        if colouring is None:
            return
        swatch = QRectF(4, 4, 14, 12)
        painter.setPen(QPen(QColor(90, 90, 90)))
        painter.setBrush(MISSING)
        painter.drawRect(QRectF(width - 98, 4, 14, 12))
        painter.drawText(QRectF(width - 80, 2, 80, 16), Qt.AlignLeft | Qt.AlignVCenter, "no value")
        if colouring.scale == "category":
            x = 4.0
            for name in colouring.categories():
                swatch.moveLeft(x)
                painter.setBrush(precision_colour(name))
                painter.drawRect(swatch)
                painter.drawText(QRectF(x + 18, 2, 60, 16), Qt.AlignLeft | Qt.AlignVCenter, name)
                x += 18 + painter.fontMetrics().horizontalAdvance(name) + 12
            return
        bar = QRectF(4, 4, max(40.0, width - 112), 12)
        gradient = QLinearGradient(bar.topLeft(), bar.topRight())
        stops = DIVERGING if colouring.scale == "diverging" else RAMP
        for i, colour in enumerate(stops):
            gradient.setColorAt(i / (len(stops) - 1), colour)
        painter.setBrush(QBrush(gradient))
        painter.drawRect(bar)
        if colouring.scale == "diverging":
            ends = (f"{1 / RATIO_RANGE:g}× (faster)", "1× fp32", f"{RATIO_RANGE:g}× (slower)")
        elif not colouring.values:
            ends = ("", "no layer has a value yet", "")
        else:
            middle = colouring.unit if colouring.scale != "log" else f"{colouring.unit} (log scale)"
            ends = (colouring.describe(colouring.low), middle, colouring.describe(colouring.high))
        text_box = QRectF(bar.left(), bar.bottom() + 1, bar.width(), height - bar.bottom() - 1)
        painter.drawText(text_box, Qt.AlignLeft | Qt.AlignTop, ends[0])
        painter.drawText(text_box, Qt.AlignHCenter | Qt.AlignTop, ends[1])
        painter.drawText(text_box, Qt.AlignRight | Qt.AlignTop, ends[2])


class _NodeItem(QGraphicsPathItem):
    def __init__(self, node: Any, rect: QRectF) -> None:
        path = QPainterPath()
        path.addRoundedRect(rect, 6, 6)
        super().__init__(path)
        self.node = node
        self.rect = rect
        self.setAcceptHoverEvents(True)
        self.setFlag(QGraphicsItem.ItemIsSelectable, False)
        self.setCursor(Qt.PointingHandCursor if node.layer else Qt.ArrowCursor)


class _Canvas(QGraphicsView):
    """Wheel zooms about the cursor, dragging pans, a click on a node reports it."""

    clicked = Signal(object)  # the GraphNode under a click (or None on the background)

    def __init__(self, scene: QGraphicsScene, parent: QWidget | None = None) -> None:
        super().__init__(scene, parent)
        self.setRenderHint(QPainter.Antialiasing)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setBackgroundBrush(QColor(255, 255, 255))
        self._press: QPointF | None = None

    def wheelEvent(self, event: Any) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom(1.15 ** steps)
        event.accept()

    def zoom(self, factor: float) -> None:
        scale = self.transform().m11() * factor
        if 0.05 <= scale <= 4.0:
            self.scale(factor, factor)

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802
        self._press = event.position()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: Any) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        press, self._press = self._press, None
        if press is None or (event.position() - press).manhattanLength() > 4:
            return  # a drag that panned, not a click
        self.clicked.emit(self.node_at(event.position().toPoint()))

    def node_at(self, point: Any) -> Any:
        for item in self.items(point):
            while item is not None and not isinstance(item, _NodeItem):
                item = item.parentItem()
            if isinstance(item, _NodeItem):
                return item.node
        return None


class GraphView(QWidget):
    """The Graph tab. Feed it ``set_graph`` (a ModelGraph) and a layer table model; it emits plain names."""

    layer_clicked = Signal(str)  # a layer node was clicked: its layer name
    profile_requested = Signal()
    graph_wanted = Signal()  # shown without a graph for the loaded model: ask the worker to trace it

    def __init__(self, table_model: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table_model = table_model
        self.graph: Any = None
        self.layout_: Any = None
        self.colouring: Colouring | None = None
        self.highlighted: tuple[str, ...] = ()
        self._items: dict[int, _NodeItem] = {}
        self._dirty = False
        self.has_model = False
        self.requested = False  # a graph was asked for the loaded model and has not come yet

        self.quantity = QComboBox()
        for key, text in QUANTITIES:
            self.quantity.addItem(text, key)
        self.quantity.setCurrentIndex(2)  # sensitivity: what the user decides with most
        self.quantity.setToolTip("The per-layer quantity the nodes are coloured by.")
        self.profile_button = QPushButton("Profile layers")
        self.profile_button.setToolTip("Measure each layer's time in the current configuration's real-kernel model "
                                       "against fp32 (on this machine's cores; cancellable in the status bar).")
        self.profile_button.setEnabled(False)
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Zoom to show the whole graph (wheel zooms, drag pans).")
        self.colour_bar = ColourBar()
        self.note = QLabel("Load a model to see its graph.")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #555;")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.scene = QGraphicsScene(self)
        self.canvas = _Canvas(self.scene)
        self.canvas.setToolTip("")

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Colour by:"))
        bar.addWidget(self.quantity)
        bar.addWidget(self.colour_bar, 1)
        bar.addWidget(self.fit_button)
        bar.addWidget(self.profile_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.note)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.info)

        self.quantity.currentIndexChanged.connect(lambda _i: self.refresh())
        self.fit_button.clicked.connect(self.fit)
        self.profile_button.clicked.connect(self.profile_requested)
        self.canvas.clicked.connect(self._on_clicked)

    # -- feeding ----------------------------------------------------------------------------------------------
    def model_changed(self, has_model: bool = True) -> None:
        """A new model (or none): the old graph is dropped; a visible view asks for the new one at once."""
        self.graph, self.layout_, self.highlighted = None, None, ()
        self.has_model, self.requested = has_model, False
        self._items.clear()
        self.scene.clear()
        self.info.setText("")
        self.note.setText("Tracing the model's graph…" if has_model else "Load a model to see its graph.")
        self.profile_button.setEnabled(has_model)
        if has_model and self.isVisible():
            self.request()

    def request(self) -> None:
        if self.has_model and self.graph is None and not self.requested:
            self.requested = True
            self.graph_wanted.emit()

    @Slot(object)
    def set_graph(self, graph: Any) -> None:
        self.graph, self.requested = graph, False
        self.layout_ = layered_layout(len(graph.nodes), list(graph.edges))
        self._build()
        layers = sum(1 for node in graph.nodes if node.layer)
        note = graph.note if not graph.traced else (
            f"{len(graph.nodes)} nodes, {layers} compressible layers; {graph.note}"
            + ("; BatchNorm and activations that follow a layer are folded into it (as int8 fuses them)"
               if graph.folded else "") + ".")
        self.note.setText(note)
        self.refresh()
        self.fit_width()

    def showEvent(self, event: Any) -> None:  # noqa: N802
        super().showEvent(event)
        self.request()
        if self._dirty:
            self.refresh()

    # -- drawing ----------------------------------------------------------------------------------------------
    def _rect(self, node: Any) -> QRectF:
        x, layer = self.layout_.positions[node.id]
        big = node.op == "layer"
        w, h = (NODE_W, NODE_H) if big else (GLUE_W, GLUE_H)
        return QRectF(x * STEP_X - w / 2, layer * STEP_Y - h / 2, w, h)

    def _build(self) -> None:
        self.scene.clear()
        self._items.clear()
        graph, layout = self.graph, self.layout_
        edge_pen = QPen(QColor(120, 120, 120), 1.2)
        rects = {node.id: self._rect(node) for node in graph.nodes}
        for (a, b), path in zip(graph.edges, layout.edge_paths, strict=True):
            points = [QPointF(x * STEP_X, y * STEP_Y) for x, y in path]
            points[0] = QPointF(points[0].x(), rects[a].bottom())
            points[-1] = QPointF(points[-1].x(), rects[b].top())
            line = QPainterPath(points[0])
            for point in points[1:]:
                line.lineTo(point)
            item = self.scene.addPath(line, edge_pen)
            item.setZValue(-1)
            tip, before = points[-1], points[-2]
            angle = math.atan2(tip.y() - before.y(), tip.x() - before.x())
            head = QPolygonF([tip, tip - QPointF(math.cos(angle - 0.4) * 8, math.sin(angle - 0.4) * 8),
                              tip - QPointF(math.cos(angle + 0.4) * 8, math.sin(angle + 0.4) * 8)])
            arrow = self.scene.addPolygon(head, edge_pen, QBrush(QColor(120, 120, 120)))
            arrow.setZValue(-1)
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() - 1.5))
        for node in graph.nodes:
            rect = rects[node.id]
            item = _NodeItem(node, rect)
            self.scene.addItem(item)
            self._items[node.id] = item
            kinds = node.kind
            if node.folded:
                kinds += " + " + " + ".join(part.split(" ")[0].replace("BatchNorm2d", "BN").replace("BatchNorm1d", "BN")
                                            for part in node.folded)
            # a layer: its name (what the table lists) over its kinds; an op: its kind alone
            lines = [(_short(node.layer, 30), self.font()), (kinds, small)] if node.op == "layer" else [(kinds, small)]
            texts = []
            for line, font in lines:
                text = QGraphicsSimpleTextItem(line, item)
                text.setFont(font)
                width = text.boundingRect().width()
                if width > rect.width() - 8:  # shrink the text rather than let it spill over the box
                    text.setScale((rect.width() - 8) / width)
                texts.append(text)
            height = sum(t.sceneBoundingRect().height() for t in texts)
            top = rect.center().y() - height / 2
            for text in texts:
                box = text.sceneBoundingRect()
                text.setPos(rect.center().x() - box.width() / 2, top)
                top += box.height()
        self.scene.setSceneRect(self.scene.itemsBoundingRect().adjusted(-40, -30, 40, 30))

    @Slot()
    def refresh(self) -> None:
        """Recolour the nodes from the layer table's current values (skipped while hidden, redone when shown)."""
        if not self.isVisible() and self.graph is not None:
            self._dirty = True
            return
        self._dirty = False
        self.colouring = layer_colouring(self.quantity.currentData(), self.table_model)
        self.colour_bar.show_colouring(self.colouring)
        if self.graph is None:
            return
        for item in self._items.values():
            node = item.node
            if node.layer:
                item.setBrush(self.colouring.colour(node.layer))
            else:
                item.setBrush(GLUE_FILL)
            item.setToolTip(self._tooltip(node))
        self._outline()

    def _tooltip(self, node: Any) -> str:
        lines = [f"<b>{node.layer or node.name}</b> — {node.kind}"]
        if node.folded:
            lines.append("with " + ", ".join(node.folded) + " folded in")
        if node.shape:
            lines.append(f"output {'×'.join(str(s) for s in node.shape)} per sample")
        colouring = self.colouring
        if node.layer and colouring is not None:
            if node.layer in colouring.values:
                lines.append(f"{colouring.title}: {colouring.texts.get(node.layer, '')}")
            else:
                lines.append(f"{colouring.title}: no value — {colouring.missing.get(node.layer, 'not available')}")
            if node.layer in self.highlighted:
                lines.append("selected in the Layers table")
            else:
                lines.append("click to select it in the Layers table")
        elif not node.layer and node.op not in ("input", "output"):
            lines.append("an op between layers (not compressed itself)")
        return "<br>".join(lines)

    def _outline(self) -> None:
        chosen = set(self.highlighted)
        for item in self._items.values():
            node = item.node
            if node.layer and node.layer in chosen:
                item.setPen(QPen(HIGHLIGHT, 3.5))
                item.setZValue(2)
            else:
                item.setPen(QPen(QColor(70, 70, 70) if node.layer else QColor(160, 160, 160), 1.0))
                item.setZValue(1)

    def highlight_layers(self, names: list[str] | tuple[str, ...]) -> None:
        """Outline the nodes of these layers (the layer table's selection) and say what the first one is."""
        self.highlighted = tuple(names)
        self._outline()
        if not names:
            self.info.setText("")
            return
        first = names[0]
        colouring = self.colouring
        value = "" if colouring is None else (
            f" · {colouring.title}: {colouring.texts[first]}" if first in colouring.texts
            else f" · {colouring.title}: no value ({colouring.missing.get(first, 'not available')})")
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        self.info.setText(f"Selected: {first}{more}{value}")
        node_id = self.graph.layer_nodes().get(first) if self.graph is not None else None
        if node_id is not None and node_id in self._items:
            self.canvas.ensureVisible(self._items[node_id], 40, 40)

    def node_item(self, layer: str) -> Any:
        """The scene item of a layer's node (tests click it)."""
        node_id = self.graph.layer_nodes().get(layer) if self.graph is not None else None
        return None if node_id is None else self._items.get(node_id)

    @Slot()
    def fit(self) -> None:
        if self.graph is not None:
            self.canvas.fitInView(self.scene.sceneRect(), Qt.KeepAspectRatio)

    def fit_width(self) -> None:
        """Zoom so the graph's width fits (at most 1:1), and its height too unless the text would get too small,
        and show its top: long chains stay readable and scroll."""
        if self.graph is None:
            return
        rect = self.scene.sceneRect()
        view_width = max(100, self.canvas.viewport().width())
        view_height = max(100, self.canvas.viewport().height())
        scale = min(1.0, view_width / max(rect.width(), 1.0),
                    max(view_height / max(rect.height(), 1.0), MIN_FIT_SCALE))
        self.canvas.resetTransform()
        self.canvas.scale(scale, scale)
        self.canvas.centerOn(rect.center().x(), rect.top() + self.canvas.viewport().height() / (2 * scale))

    @Slot(object)
    def _on_clicked(self, node: Any) -> None:
        if node is not None and node.layer:
            self.layer_clicked.emit(node.layer)


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def select_layer_rows(layer_panel: Any, names: list[str]) -> None:
    """Select these layers' rows in the layer table (whatever its sort) and scroll to the first."""
    model, proxy, table = layer_panel.table_model, layer_panel.table_proxy, layer_panel.table
    rows = {name: row for row, name in enumerate(model.layer_names())}
    selection = QItemSelection()
    first = None
    for name in names:
        if name not in rows:
            continue
        index = proxy.mapFromSource(model.index(rows[name], 0))
        selection.select(index, index)
        first = first or index
    table.selectionModel().select(selection, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
    if first is not None:
        table.selectionModel().setCurrentIndex(first, QItemSelectionModel.NoUpdate)
        table.scrollTo(first)


def attach_graph_view(window: Any) -> GraphView:
    """Add the Graph tab to a :class:`~qtradeoff.gui.main_window.MainWindow` and link it with the layer table,
    the worker (graph and profile requests) and the model loads."""
    view = GraphView(window.table_model)
    tabs = window.bottom_tabs
    tabs.addTab(view, "Graph")
    tabs.setTabToolTip(tabs.indexOf(view), "The model's graph coloured by a per-layer quantity; click a layer to "
                                           "select it in the Layers table.")
    service = window.service
    view.graph_wanted.connect(service.request_graph)
    service.graph_ready.connect(view.set_graph)
    service.model_loaded.connect(lambda _summary: view.model_changed(True))

    def profiled(profile: Any) -> None:
        window.table_model.set_profile(profile)
        if view.quantity.currentData() not in ("latency_ratio", "latency_ms"):
            view.quantity.setCurrentIndex([key for key, _ in QUANTITIES].index("latency_ratio"))
        view.refresh()
        window.statusBar().showMessage("Profiled the layers: " + profile.describe(), 15000)

    service.profiled.connect(profiled)

    def failed(kind: str, message: str) -> None:
        if kind == "graph":
            view.requested = False
            view.note.setText(f"No graph: {message}")

    service.failed.connect(failed)
    def profile() -> None:
        if window.summary is None:
            window.statusBar().showMessage("Load a model before profiling its layers.", 5000)
            return
        service.profile(window.state.config)

    view.profile_requested.connect(profile)
    menu = next((action.menu() for action in window.menuBar().actions() if action.text() == "&Evaluate"), None)
    if menu is not None:
        from PySide6.QtGui import QKeySequence

        from qtradeoff.gui.file_actions import add_action

        view.profile_action = add_action(window, menu, "Profile layers of this configuration", profile,
                                         QKeySequence("Ctrl+Shift+P"), "Measure each layer's time on real kernels "
                                         "against fp32 (the Layers table's Time column and the Graph tab).")
    view.layer_clicked.connect(lambda name: select_layer_rows(window.layers, [name]))
    window.table.selectionModel().selectionChanged.connect(
        lambda *_: view.highlight_layers(window.layers.selected_layers()))
    model = window.table_model
    model.dataChanged.connect(lambda *_: view.refresh())
    model.modelReset.connect(view.refresh)
    return view


__all__ = ["QUANTITIES", "Colouring", "GraphView", "attach_graph_view", "layer_colouring", "select_layer_rows"]
