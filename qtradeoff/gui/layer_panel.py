"""The per-layer panel: the sortable layer table (with its editors) and the "Selected layers" bar under it.

It reports what the user asks for as plain data (layer names, field, value; layer names to lock or unlock); the
window turns that into undoable configuration edits and hands the panel the configuration to show.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qtradeoff.gui import editing
from qtradeoff.gui.layer_table import (
    ACTIVATION_PRECISION_ORDER,
    COL_ACT,
    COL_NAME,
    COL_ROUND,
    COL_SENS,
    COL_SPARSITY,
    COL_WEIGHT,
    PRECISION_ORDER,
    SORT_ROLE,
    LayerTableModel,
    PrecisionDelegate,
    RoundingDelegate,
    SensitivityBarDelegate,
    SparsityDelegate,
)

# Rows the layer table reads to size its columns (a model drop must not stall the window).
RESIZE_ROWS = 24
# Rows whose text sizes the columns when a model loads (the rest is elided where wider): a dozen covers the
# variety of names and kinds of a network's first blocks at a few milliseconds of the GUI thread.
FIT_ROWS = 12
FIT_DELAY_MS = 25  # see set_model


class LayerPanel(QWidget):
    """The layer table and the bar that sets one setting on every selected layer."""

    edit_requested = Signal(object, str, object)  # layer names, field, value
    clear_requested = Signal(object)  # layer names
    lock_requested = Signal(object, bool)  # layer names, locked
    reset_requested = Signal()
    message = Signal(str)  # a hint for the status bar

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table_model = LayerTableModel(self)
        self.table_model.edit_handler = lambda names, field, value: self.edit_requested.emit(names, field, value)
        self.table_model.lock_handler = lambda names, locked: self.lock_requested.emit(names, locked)
        self._fit_timer = QTimer(self)  # see set_model; stopped when the panel is hidden (nothing to size then)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(FIT_DELAY_MS)
        self._fit_timer.timeout.connect(self.fit_columns)
        self.table = QTableView()
        # Sorting goes through a proxy so the model's rows stay in execution order; selections map back.
        self.table_proxy = QSortFilterProxyModel(self)
        self.table_proxy.setSourceModel(self.table_model)
        self.table_proxy.setSortRole(SORT_ROLE)
        self.table.setModel(self.table_proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COL_NAME, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed
                                   | QAbstractItemView.SelectedClicked)
        self._precision_delegate = PrecisionDelegate(self.table)
        self._sparsity_delegate = SparsityDelegate(self.table)
        self._sensitivity_delegate = SensitivityBarDelegate(self.table_model, self.table)
        self.table.setItemDelegateForColumn(COL_WEIGHT, self._precision_delegate)
        self.table.setItemDelegateForColumn(COL_ACT, self._precision_delegate)
        self.table.setItemDelegateForColumn(COL_SPARSITY, self._sparsity_delegate)
        self.table.setItemDelegateForColumn(COL_SENS, self._sensitivity_delegate)
        self._rounding_delegate = RoundingDelegate(self.table)
        self.table.setItemDelegateForColumn(COL_ROUND, self._rounding_delegate)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        # Interactive, sized once per model: ResizeToContents would re-query every cell on each edit.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        # Sizing columns to their contents asks for every cell (88 layers x 15 columns: ~75 ms on the GUI thread
        # per model drop); the first rows are enough to size them, and what is wider is elided.
        self.table.horizontalHeader().setResizeContentsPrecision(RESIZE_ROWS)
        self.table.verticalHeader().setResizeContentsPrecision(RESIZE_ROWS)
        self.table.setAlternatingRowColors(True)
        self.table.setToolTip("Per-layer settings: select rows and use “Set for selection”, or double-click a cell. "
                              "Tick a layer's name to lock it for searches.")

        self.selection_field = QComboBox()
        self.selection_field.addItems([label for _, label in editing.SELECTION_FIELDS])
        self.selection_field.setToolTip("Which per-layer setting “Set for selection” changes.")
        self.selection_value = QComboBox()
        self.selection_value.setToolTip("The value “Set for selection” gives the selected layers.")
        self.selection_value.setMinimumContentsLength(8)
        self.set_selection_button = QPushButton("Set for selection")
        self.set_selection_button.setToolTip("Override the chosen setting on every selected layer (one undo step).")
        self.clear_selection_button = QPushButton("Clear overrides")
        self.clear_selection_button.setToolTip("Make the selected layers follow the global defaults again.")
        self.reset_button = QPushButton("Reset to defaults")
        self.reset_button.setToolTip("Remove every per-layer override so all layers follow the global defaults.")
        self._fill_selection_values()

        bar = QHBoxLayout()
        selected_label = QLabel("Selected layers:")
        selected_label.setToolTip("Select rows in the table (Shift/Ctrl for several), then set one setting for all.")
        bar.addWidget(selected_label)
        bar.addWidget(self.selection_field)
        bar.addWidget(self.selection_value)
        bar.addWidget(self.set_selection_button)
        bar.addWidget(self.clear_selection_button)
        bar.addStretch(1)
        bar.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addLayout(bar)

        self.selection_field.currentIndexChanged.connect(self._fill_selection_values)
        self.set_selection_button.clicked.connect(self._set_for_selection)
        self.clear_selection_button.clicked.connect(lambda: self.clear_requested.emit(self.selected_layers()))
        self.reset_button.clicked.connect(self.reset_requested)

    # -- feeding -------------------------------------------------------------------------------------------------
    def set_model(self, summary: Any, config: Any) -> None:
        self.table_model.set_model(summary, config)
        # Sized a little later: the reset (the proxy sorts every row), the window's repaint and the sizing (every
        # cell of the first rows) are each tens of milliseconds on a large model; back to back they were one stall
        # of the GUI thread (72 ms for a MobileNet drop). A zero timer still ran before the repaint; after
        # FIT_DELAY_MS the repaint has gone first and the three are separate short stalls.
        self._fit_timer.start()

    def hideEvent(self, event) -> None:
        if self._fit_timer.isActive():  # closing right after a load: size now rather than leave a timer behind
            self._fit_timer.stop()
            self.fit_columns()
        super().hideEvent(event)

    def fit_columns(self) -> None:
        """Each column as wide as its header and its first :data:`FIT_ROWS` rows' text, measured here with the
        view's font metrics: Qt's own resizeColumnsToContents lays out every cell through the delegates (75-270 ms
        of the GUI thread for an 88-layer model on a busy 2-core machine), this is a few milliseconds."""
        model, header = self.table.model(), self.table.horizontalHeader()
        metrics, header_metrics = self.table.fontMetrics(), header.fontMetrics()
        rows = min(model.rowCount(), FIT_ROWS)
        pad = 2 * self.table.style().pixelMetric(QStyle.PM_FocusFrameHMargin, None, self.table) + 12
        check = self.table.style().pixelMetric(QStyle.PM_IndicatorWidth, None, self.table) + 8
        for column in range(model.columnCount()):
            if header.isSectionHidden(column):
                continue
            title = str(model.headerData(column, Qt.Horizontal, Qt.DisplayRole) or "")
            width = header_metrics.horizontalAdvance(title) + 24  # room for the sort arrow
            for row in range(rows):
                index = model.index(row, column)
                text = str(model.data(index, Qt.DisplayRole) or "")
                extra = check if model.flags(index) & Qt.ItemIsUserCheckable else 0
                width = max(width, metrics.horizontalAdvance(text) + pad + extra)
            header.resizeSection(column, min(width, 320))

    def set_editable(self, editable: bool) -> None:
        """Without a model there is nothing to edit (the choice boxes stay usable)."""
        for widget in (self.table, self.set_selection_button, self.clear_selection_button, self.reset_button):
            widget.setEnabled(editable)

    def show_config(self, config: Any) -> None:
        self.table_model.set_config(config, editing.threshold_index(config))

    # -- selection -----------------------------------------------------------------------------------------------
    def selected_layers(self) -> list[str]:
        """Names of the selected rows, in the model's execution order whatever the view's sort."""
        rows = sorted({self.table_proxy.mapToSource(index).row()
                       for index in self.table.selectionModel().selectedRows()})
        return [self.table_model.layer_at(row) for row in rows]

    def _selected_field(self) -> str:
        return editing.SELECTION_FIELDS[self.selection_field.currentIndex()][0]

    def _fill_selection_values(self, *_args: Any) -> None:
        self.selection_value.clear()
        if self._selected_field() in ("sparsity", "activation_sparsity"):
            self.selection_value.addItems([f"{percent} %" for percent in editing.SELECTION_SPARSITIES])
        elif self._selected_field() == "activation_precision":
            self.selection_value.addItems(ACTIVATION_PRECISION_ORDER)
        elif self._selected_field() == "rounding":
            for choice in editing.ROUNDING_CHOICES:
                self.selection_value.addItem(editing.rounding_choice_label(choice), choice)
        else:
            self.selection_value.addItems(PRECISION_ORDER)

    def _set_for_selection(self) -> None:
        names = self.selected_layers()
        if not names:
            self.message.emit("Select one or more layers in the table first.")
            return
        field = self._selected_field()
        choice = self.selection_value.currentData()  # a rounding choice; other fields' items carry only text
        value = choice if choice is not None else editing.selection_value(field, self.selection_value.currentText())
        self.edit_requested.emit(names, field, value)
