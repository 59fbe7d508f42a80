"""The results table: every evaluated configuration of the plot, sortable and filterable, linked both ways with
the plot; points can be pinned and labelled; two selected points can be compared layer by layer.

The rows are the plot's :class:`~qtradeoff.gui.plot.PointStore` rows (no copy): the window calls :meth:`sync` after
adding results. Pins and labels live in the store's per-point ``meta`` (so sessions save them). Sorting and the
filter go through a proxy; selections are mapped back to store rows.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qtradeoff.gui.formatting import estimate_kind, format_bytes

COLUMNS = ("#", "Pin", "Label", "Tag", "Accuracy", "95 % CI", "Latency b1", "Latency is", "Weights", "Peak act.",
           "Weights at", "Activations at", "Overrides", "Subset")
(COL_NUM, COL_PIN, COL_LABEL, COL_TAG, COL_ACC, COL_CI, COL_LAT, COL_LAT_KIND, COL_WEIGHTS, COL_PEAK, COL_WPREC,
 COL_APREC, COL_OVERRIDES, COL_SUBSET) = range(len(COLUMNS))
TIPS = {
    COL_PIN: "Pinned points stay easy to find: sort by this column.",
    COL_LABEL: "Your name for the point (double-click to edit); saved with the session.",
    COL_TAG: "How the point was made: baseline, edit, search (· strategy, · ANSWER for its answer), sweep, restored "
             "from a session…",
    COL_ACC: "Top-1 accuracy (or agreement with fp32 where the data has no labels), percent.",
    COL_CI: "95 % Wilson interval of the accuracy on this subset.",
    COL_LAT: "Batch-1 latency in ms: measured on real kernels where it was timed, else the roofline estimate.",
    COL_LAT_KIND: "Whether the latency is a measurement (with its spread; NOISY when repeats disagree) or an estimate.",
    COL_WEIGHTS: "Weight memory as stored (counted from the packed tensors).",
    COL_PEAK: "Peak activation memory of one batch-1 forward.",
    COL_SUBSET: "How many evaluation samples the point was measured on: compare points of one subset.",
}
SORT_ROLE = Qt.UserRole + 1


class ResultsTableModel(QAbstractTableModel):
    """A view of the plot's point store; pins and labels are written into the store's meta."""

    changed = Signal()  # a pin or label was edited

    def __init__(self, plot: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self._plot = plot
        self._rows = 0

    @property
    def store(self) -> Any:
        return self._plot.store

    def sync(self) -> None:
        """Follow the store: new rows are inserted, changed ones repainted, a cleared store resets the table."""
        n = len(self.store)
        if n < self._rows:
            self.beginResetModel()
            self._rows = n
            self.endResetModel()
            return
        if n > self._rows:
            self.beginInsertRows(QModelIndex(), self._rows, n - 1)
            self._rows = n
            self.endInsertRows()
        if n:
            self.dataChanged.emit(self.index(0, 0), self.index(n - 1, len(COLUMNS) - 1))

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else self._rows

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ToolTipRole:
            return TIPS.get(section)
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        base = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if index.column() == COL_PIN:
            return base | Qt.ItemIsUserCheckable
        if index.column() == COL_LABEL:
            return base | Qt.ItemIsEditable
        return base

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self.store):
            return None
        row, column = index.row(), index.column()
        result, meta = self.store.results[row], self.store.meta[row]
        if column == COL_PIN and role == Qt.CheckStateRole:
            return Qt.Checked if meta.get("pinned") else Qt.Unchecked
        if role == SORT_ROLE:
            return self._sort_key(row, result, meta, column)
        if role in (Qt.DisplayRole, Qt.EditRole):
            return self._text(row, result, meta, column)
        if role == Qt.TextAlignmentRole and column in (COL_NUM, COL_ACC, COL_LAT, COL_WEIGHTS, COL_PEAK, COL_SUBSET,
                                                        COL_OVERRIDES):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if role == Qt.ToolTipRole:
            if column in (COL_TAG, COL_LABEL):  # elided in the cell: the whole text, then what the column means
                text = self._text(row, result, meta, column)
                return f"{text}\n\n{TIPS.get(column, '')}".strip() if text else TIPS.get(column)
            return TIPS.get(column)
        return None

    @staticmethod
    def _accuracy(result: Any) -> float:
        value = result.accuracy if result.accuracy is not None else result.agreement
        return 100.0 * value

    @staticmethod
    def _latency(result: Any) -> tuple[float | None, str]:
        measured = result.latency_ms(1, measured=True)
        if measured is not None:
            stats = next((s for s in getattr(result, "latency_measured", ()) if getattr(s, "batch", 1) == 1),
                         None)
            return measured, "measured, NOISY" if getattr(stats, "noisy", False) else "measured"
        kind = {"fitted": "estimated, fitted", "machine": "estimated, unfitted"}.get(estimate_kind(result), "estimated")
        return result.latency_ms(1, measured=False), kind

    def _text(self, row: int, result: Any, meta: dict, column: int) -> Any:
        if column == COL_NUM:
            return str(row + 1)
        if column == COL_PIN:
            return ""
        if column == COL_LABEL:
            return meta.get("label", "")
        if column == COL_TAG:
            return (str(meta.get("tag", "")) + (f" · {meta['strategy']}" if meta.get("strategy") else "")
                    + (" · ANSWER" if meta.get("answer") else "") + (" (restored)" if meta.get("restored") else ""))
        if column == COL_ACC:
            return f"{self._accuracy(result):.2f} %"
        if column == COL_CI:
            ci = result.accuracy_ci95 if result.accuracy is not None else result.agreement_ci95
            return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
        if column == COL_LAT:
            value, _ = self._latency(result)
            return "" if value is None else f"{value:.3g} ms"
        if column == COL_LAT_KIND:
            return self._latency(result)[1]
        if column == COL_WEIGHTS:
            return format_bytes(result.weight_bytes)
        if column == COL_PEAK:
            return format_bytes(result.peak_activation_bytes)
        if column == COL_WPREC:
            return result.config.weight.precision
        if column == COL_APREC:
            return result.config.activation.precision
        if column == COL_OVERRIDES:
            return str(len(result.config.overrides()))
        if column == COL_SUBSET:
            return str(result.eval_samples)
        return None

    def _sort_key(self, row: int, result: Any, meta: dict, column: int) -> Any:
        if column == COL_NUM:
            return row
        if column == COL_PIN:
            return 0 if meta.get("pinned") else 1  # ascending: pinned first
        if column == COL_ACC:
            return self._accuracy(result)
        if column == COL_LAT:
            value = self._latency(result)[0]
            return math.inf if value is None else float(value)
        if column == COL_WEIGHTS:
            return int(result.weight_bytes)
        if column == COL_PEAK:
            return int(result.peak_activation_bytes)
        if column in (COL_OVERRIDES, COL_SUBSET):
            return int(self._text(row, result, meta, column))
        return str(self._text(row, result, meta, column)).lower()

    def setData(self, index: QModelIndex, value: Any, role: int = Qt.EditRole) -> bool:  # noqa: N802
        if not index.isValid():
            return False
        meta = self.store.meta[index.row()]
        if index.column() == COL_PIN and role == Qt.CheckStateRole:
            meta["pinned"] = value in (Qt.Checked, Qt.Checked.value, 2, True)
        elif index.column() == COL_LABEL and role == Qt.EditRole:
            meta["label"] = str(value).strip()[:200]
        else:
            return False
        self.dataChanged.emit(index, index)
        self.changed.emit()
        return True


class _Proxy(QSortFilterProxyModel):
    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:  # noqa: N802
        text = self.filterRegularExpression().pattern()
        if not text:
            return True
        model = self.sourceModel()
        needle = text.lower()
        return any(needle in str(model.index(row, column, parent).data() or "").lower()
                   for column in range(model.columnCount()))


class ResultsPanel(QWidget):
    """The table, its filter box and the Compare button."""

    selection_changed = Signal(object)  # store rows selected (list of int)
    compare_requested = Signal(int, int)  # two store rows
    apply_requested = Signal(int)  # a store row to make the edited configuration (double-click)
    recover_requested = Signal(int)  # a store row to fine-tune (context menu "Recover (fine-tune)…")

    def __init__(self, plot: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = ResultsTableModel(plot, self)
        self.proxy = _Proxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_NUM, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setDefaultSectionSize(86)
        # one line per row: tags such as "explore · greedy · ANSWER" are elided (full text in the tooltip), never
        # wrapped into rows of double height
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.ElideMiddle)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 8)
        for column, width in ((COL_NUM, 44), (COL_PIN, 34), (COL_LABEL, 140), (COL_TAG, 150), (COL_LAT_KIND, 110)):
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.setContextMenuPolicy(Qt.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter: any text in a row (int4, search, a label…)")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter)
        self.compare_button = QPushButton("Compare the two selected")
        self.compare_button.setToolTip("Select two rows (Ctrl+click) to list their differing layers and metrics.")
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self._compare)
        self.count = QLabel("")
        bar = QHBoxLayout()
        bar.addWidget(self.filter, 1)
        bar.addWidget(self.count)
        bar.addWidget(self.compare_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)

    def sync(self) -> None:
        self.model.sync()
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count.setText(f"{shown} of {total}" if shown != total else f"{total} points")

    def selected_rows(self) -> list[int]:
        """Selected store rows, in the view's order."""
        rows = {self.proxy.mapToSource(index).row() for index in self.table.selectionModel().selectedRows()}
        return sorted(rows, key=lambda r: self.proxy.mapFromSource(self.model.index(r, 0)).row())

    def select_rows(self, rows: list[int]) -> None:
        """Select these store rows (from a plot click), scrolled into view; emits no selection_changed loop."""
        selection = self.table.selectionModel()
        selection.clearSelection()
        for row in rows:
            index = self.proxy.mapFromSource(self.model.index(row, 0))
            if index.isValid():
                selection.select(index, selection.SelectionFlag.Select | selection.SelectionFlag.Rows)
                self.table.scrollTo(index)

    def _filter(self, text: str) -> None:
        self.proxy.setFilterFixedString(text.strip())
        self.sync()

    def _selection_changed(self, *_args: Any) -> None:
        rows = self.selected_rows()
        self.compare_button.setEnabled(len(rows) == 2)
        self.selection_changed.emit(rows)

    def _compare(self) -> None:
        rows = self.selected_rows()
        if len(rows) == 2:
            self.compare_requested.emit(rows[0], rows[1])

    def context_menu(self, row: int) -> QMenu:
        """The menu of store row ``row``: use it as the edited configuration, or fine-tune it to recover accuracy."""
        menu = QMenu(self)
        use = menu.addAction("Use this configuration")
        use.triggered.connect(lambda: self.apply_requested.emit(row))
        recover = menu.addAction("Recover (fine-tune)…")
        recover.setToolTip("Fine-tune this point's compressed model for a bounded number of steps with distillation "
                           "from fp32 on the calibration split; the result is a new point tagged 'recovered'.")
        meta = self.model.store.meta[row] if 0 <= row < len(self.model.store) else {}
        result = self.model.store.results[row] if 0 <= row < len(self.model.store) else None
        recovered = isinstance((getattr(result, "provenance", None) or {}).get("recovered"), dict)
        recover.setEnabled(result is not None and meta.get("tag") != "baseline" and not recovered)
        recover.triggered.connect(lambda: self.recover_requested.emit(row))
        return menu

    def _context_menu(self, position: Any) -> None:
        index = self.table.indexAt(position)
        if not index.isValid():
            return
        menu = self.context_menu(self.proxy.mapToSource(index).row())
        menu.aboutToHide.connect(menu.deleteLater)
        menu.popup(self.table.viewport().mapToGlobal(position))

    def _double_clicked(self, index: QModelIndex) -> None:
        source = self.proxy.mapToSource(index)
        if source.column() not in (COL_PIN, COL_LABEL):
            self.apply_requested.emit(source.row())


def _shown(value: Any, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g} {unit}" if unit == "ms" else format_bytes(value) if unit == "B" else f"{value:.2f} %"


def comparison_text(comparison: Any, number_a: int, number_b: int) -> str:
    """The comparison as plain text for a dialog: metric deltas, then every differing layer and field."""
    lines = [f"#{number_b} compared with #{number_a} (B − A):"]
    lines += [f"  Warning: {text}" for text in getattr(comparison, "warnings", ())]
    for metric in comparison.metrics:
        if metric.a is None and metric.b is None:
            continue  # neither point has it (e.g. no measured latency): nothing to compare
        if metric.delta is None:
            lines.append(f"  {metric.metric}: {_shown(metric.a, metric.unit)} → {_shown(metric.b, metric.unit)} "
                         "(only one of them has it)")
            continue
        if metric.unit == "pts":
            lines.append(f"  {metric.metric}: {metric.a:.2f} % → {metric.b:.2f} % ({metric.delta:+.2f} pts)")
        elif metric.unit == "B":
            lines.append(f"  {metric.metric}: {format_bytes(metric.a)} → {format_bytes(metric.b)} "
                         f"({'+' if metric.delta >= 0 else '−'}{format_bytes(abs(metric.delta))})")
        else:
            lines.append(f"  {metric.metric}: {metric.a:.4g} → {metric.b:.4g} {metric.unit} ({metric.delta:+.3g})")
    layers = comparison.layers
    if not layers:
        lines.append("Their configurations give every layer the same settings.")
    else:
        lines.append(f"{len(layers)} layer(s) differ:")
        for change in comparison.changes:
            a, b = ("—" if value is None else value for value in (change.a, change.b))
            lines.append(f"  {change.layer}: {change.field} {a} → {b}")
    return "\n".join(lines)
