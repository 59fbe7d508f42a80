"""The main window: composes the model panel, global controls, per-layer table, Pareto plot and status bar, turns
user gestures into undoable CompressionConfig edits, and routes drops and menu actions to the worker.
"""

from __future__ import annotations

import gc
import json
import platform
from pathlib import Path
from typing import Any

from PySide6.QtCore import QElapsedTimer, QSaveFile, QSettings, QSortFilterProxyModel, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from qtradeoff import __version__
from qtradeoff.core import config as cfg
from qtradeoff.gui.backend import THRESHOLD_STEP, ModelSummary
from qtradeoff.gui.controls import GlobalControls
from qtradeoff.gui.dialogs import MessageBar, trust_dialog
from qtradeoff.gui.layer_table import (
    COL_ACT,
    COL_NAME,
    COL_SENS,
    COL_SPARSITY,
    COL_WEIGHT,
    PRECISION_ORDER,
    SORT_ROLE,
    LayerTableModel,
    PrecisionDelegate,
    SensitivityBarDelegate,
    SparsityDelegate,
)
from qtradeoff.gui.plot import ParetoPlot, _format_bytes
from qtradeoff.gui.undo import ConfigState, push_edit
from qtradeoff.gui.worker import EvaluationService

ORGANIZATION = "qtradeoff"
APPLICATION = "qtradeoff"
MAX_RECENT = 8
DEFAULT_EVAL_SIZE = 100

MODEL_SUFFIXES = {".safetensors", ".pt", ".pth", ".pt2", ".ptl", ".bin", ".ckpt", ".torchscript", ".jit"}
DATA_SUFFIXES = {".npz", ".npy", ".csv"}


def classify_path(path: Path) -> str:
    """What a dropped or opened path is: ``model``, ``data``, ``config``, ``results`` or ``unsupported``."""
    if path.is_dir():
        return "data"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "config"
    if suffix == ".jsonl":
        return "results"
    if suffix in DATA_SUFFIXES:
        return "data"
    if suffix in MODEL_SUFFIXES:
        return "model"
    return "unsupported"


class MainWindow(QMainWindow):
    """The qtradeoff window. ``service`` and ``settings`` are injectable for tests."""

    def __init__(self, *, service: EvaluationService | None = None, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("qtradeoff")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings(
            QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)
        self.service = service if service is not None else EvaluationService(parent=self)
        if self.service.parent() is None:
            self.service.setParent(self)
        self.summary: ModelSummary | None = None
        self.baseline: Any = None
        self.eval_size = DEFAULT_EVAL_SIZE
        # How the fp32 baseline is timed after a load: on real kernels and estimated (tests may pick "estimated").
        self.baseline_latency = "both"
        self.baseline_measured_ms: float | None = None
        self.state = ConfigState(cfg.CompressionConfig(), self)
        self.undo_stack = QUndoStack(self)
        self._closing = False
        self._pending_trust: QMessageBox | None = None
        self._busy_kind = ""

        self._build_widgets()
        self._build_menus()
        self._build_status_bar()
        self._connect()
        self._set_editing_enabled(False)
        self._restore_settings()
        from qtradeoff.gui.explore_panel import attach_explore_panel  # search panel (issue 8), wires itself in

        self.explore_panel = attach_explore_panel(self)

    # -- construction --------------------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.messages = MessageBar()
        self.model_panel = QGroupBox("Model")
        form = QFormLayout(self.model_panel)
        self.model_fields: dict[str, QLabel] = {}
        for key, label, tip in (
            ("name", "Name", "The loaded model file (drop another model file on the window to replace it)."),
            ("format", "Format", "How the file stores the model: safetensors, state dict, pickle, TorchScript…"),
            ("trust", "Trust", "Whether loading needed to run code from the file (only with your consent)."),
            ("params", "Parameters", "Number of parameters in the model."),
            ("size", "fp32 size", "Weight storage of the uncompressed fp32 model."),
            ("data", "Data", "The evaluation data (drop a dataset folder or tensor file to replace it)."),
            ("accuracy", "Baseline accuracy", "Top-1 accuracy of the fp32 model, with its 95% interval."),
            ("latency", "Baseline latency", "Median batch-1 latency of the fp32 model on real kernels."),
        ):
            value = QLabel("—")
            value.setToolTip(tip)
            value.setTextInteractionFlags(Qt.TextSelectableByMouse)
            name_label = QLabel(label)
            name_label.setToolTip(tip)
            form.addRow(name_label, value)
            self.model_fields[key] = value

        self.current_panel = QGroupBox("Current configuration")
        current_form = QFormLayout(self.current_panel)
        self.current_fields: dict[str, QLabel] = {}
        for key, label, tip in (
            ("accuracy", "Accuracy", "Top-1 accuracy of the current configuration with its 95% Wilson interval."),
            ("delta", "vs fp32", "Accuracy change against the fp32 baseline on the same samples, in points."),
            ("latency", "Latency", "Batch-1 latency: measured on real kernels, or estimated from MACs and bytes."),
            ("weights", "Weights", "Weight storage of the current configuration and its share of fp32."),
            ("activations", "Peak activations", "Largest activation memory alive at once, at batch size 1."),
            ("note", "Note", "What the measurement could not do for real (e.g. no sparse kernel)."),
        ):
            value = QLabel("—")
            value.setToolTip(tip)
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextSelectableByMouse)
            name_label = QLabel(label)
            name_label.setToolTip(tip)
            current_form.addRow(name_label, value)
            self.current_fields[key] = value

        self.controls = GlobalControls()

        self.table_model = LayerTableModel(self)
        self.table_model.edit_handler = self._table_edit
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
        self.table.setItemDelegateForColumn(COL_WEIGHT, self._precision_delegate)
        self.table.setItemDelegateForColumn(COL_ACT, self._precision_delegate)
        self.table.setItemDelegateForColumn(COL_SPARSITY, self._sparsity_delegate)
        self._sensitivity_delegate = SensitivityBarDelegate(self.table_model, self.table)
        self.table.setItemDelegateForColumn(COL_SENS, self._sensitivity_delegate)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        # Interactive, sized once per model: ResizeToContents would re-query every cell on each edit.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setAlternatingRowColors(True)
        self.table.setToolTip("Per-layer settings: select rows and use “Set for selection”, or double-click a cell.")

        self.selection_field = QComboBox()
        self.selection_field.addItems(["Weight precision", "Activation precision", "Sparsity"])
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

        table_bar = QHBoxLayout()
        selected_label = QLabel("Selected layers:")
        selected_label.setToolTip("Select rows in the table (Shift/Ctrl for several), then set one setting for all.")
        table_bar.addWidget(selected_label)
        table_bar.addWidget(self.selection_field)
        table_bar.addWidget(self.selection_value)
        table_bar.addWidget(self.set_selection_button)
        table_bar.addWidget(self.clear_selection_button)
        table_bar.addStretch(1)
        table_bar.addWidget(self.reset_button)
        table_box = QWidget()
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addWidget(self.table, 1)
        table_layout.addLayout(table_bar)

        self.plot = ParetoPlot()

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.model_panel)
        left_layout.addWidget(self.controls)
        left_layout.addWidget(self.current_panel)
        left_layout.addStretch(1)
        self.left_layout = left_layout  # panels added by other features go here (above the trailing stretch)
        # Scrolls on short screens instead of forcing the window's minimum height.
        left_scroll = QScrollArea()
        left_scroll.setWidget(left)
        left_scroll.setWidgetResizable(True)
        left_scroll.setFrameShape(QFrame.NoFrame)
        left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        left_scroll.setMinimumWidth(400)

        self.right_splitter = QSplitter(Qt.Vertical)
        self.right_splitter.addWidget(self.plot)
        self.right_splitter.addWidget(table_box)
        self.right_splitter.setStretchFactor(0, 3)
        self.right_splitter.setStretchFactor(1, 2)
        self.main_splitter = QSplitter(Qt.Horizontal)
        self.main_splitter.addWidget(left_scroll)
        self.main_splitter.addWidget(self.right_splitter)
        self.main_splitter.setStretchFactor(1, 1)

        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(6, 6, 6, 6)
        central_layout.addWidget(self.messages)
        central_layout.addWidget(self.main_splitter, 1)
        self.setCentralWidget(central)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_model_action = self._action(file_menu, "Open model…", self.open_model_dialog, QKeySequence.Open,
                                              "Load a model file (safetensors, state dict, TorchScript, pickle…).")
        self.open_data_action = self._action(file_menu, "Open data…", self.open_data_dialog, None,
                                             "Load evaluation data from a dataset folder or tensor file.")
        self.open_folder_action = self._action(file_menu, "Open dataset folder…", self.open_data_folder_dialog,
                                               None, "Load evaluation data from an ImageFolder directory.")
        self.open_results_action = self._action(file_menu, "Open sweep results…", self.open_results_dialog, None,
                                                "Plot the points of a results file written by 'qtradeoff sweep'.")
        self.recent_menu = file_menu.addMenu("Open recent")
        file_menu.addSeparator()
        self.import_action = self._action(file_menu, "Import configuration…", self.import_configuration_dialog,
                                          QKeySequence("Ctrl+I"), "Validate a configuration JSON file and apply it.")
        self.export_action = self._action(file_menu, "Export configuration…", self.export_configuration_dialog,
                                          QKeySequence("Ctrl+E"),
                                          "Save the current configuration with its metrics and environment as JSON.")
        self.export_csv_action = self._action(file_menu, "Export results as CSV…", self.export_csv_dialog, None,
                                              "Save every evaluated configuration and its metrics as CSV.")
        self.save_png_action = self._action(file_menu, "Save plot as PNG…", self.save_png_dialog, None,
                                            "Save an image of the Pareto plot.")
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.Quit, "Close qtradeoff.")

        edit_menu = self.menuBar().addMenu("&Edit")
        self.undo_action = self.undo_stack.createUndoAction(self, "Undo")
        self.undo_action.setShortcut(QKeySequence("Ctrl+Z"))
        self.undo_action.setToolTip("Undo the last configuration edit.")
        self.redo_action = self.undo_stack.createRedoAction(self, "Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.setToolTip("Redo the last undone configuration edit.")
        edit_menu.addAction(self.undo_action)
        edit_menu.addAction(self.redo_action)
        edit_menu.addSeparator()
        self._action(edit_menu, "Reset layers to defaults", self.reset_overrides, None,
                     "Remove every per-layer override.")
        self._action(edit_menu, "Reset everything to fp32", self.reset_all, None,
                     "Return to the uncompressed fp32 configuration.")

        run_menu = self.menuBar().addMenu("&Evaluate")
        self.cancel_action = self._action(run_menu, "Cancel", self.cancel, QKeySequence(Qt.Key_Escape),
                                          "Stop the running evaluation and drop queued ones.")
        self._action(run_menu, "Measure latency of this configuration", self.measure_current, QKeySequence("Ctrl+M"),
                     "Time the current configuration on real kernels.")
        self._rebuild_recent_menu()

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any, tip: str) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work even when the menu bar is hidden (and offscreen in tests)
        return action

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_label = QLabel("Starting…")
        self.status_label.setToolTip("What the background worker is doing.")
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(260)
        self.progress.setMaximumWidth(320)
        self.progress.setTextVisible(True)
        self.progress.setToolTip("Progress of the running evaluation.")
        self.elapsed_label = QLabel("")
        self.elapsed_label.setMinimumWidth(90)
        self.elapsed_label.setToolTip("Time spent on the running job.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running evaluation and drop queued ones (Esc).")
        self.cancel_button.clicked.connect(self.cancel)
        bar.addWidget(self.status_label, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.elapsed_label)
        bar.addPermanentWidget(self.cancel_button)
        self._elapsed = QElapsedTimer()
        self._elapsed_timer = QTimer(self)
        self._elapsed_timer.setInterval(200)
        self._elapsed_timer.timeout.connect(self._tick_elapsed)
        self._show_busy(False)

    def _connect(self) -> None:
        service = self.service
        service.job_started.connect(self._on_job_started)
        service.job_finished.connect(self._on_job_finished)
        service.progress.connect(self._on_progress)
        service.model_loaded.connect(self._on_model_loaded)
        service.data_loaded.connect(self._on_data_loaded)
        service.result_ready.connect(self._on_result)
        service.failed.connect(self._on_failed)
        service.needs_trust.connect(self._on_needs_trust)
        self.state.changed.connect(self._on_config_changed)
        self.controls.edited.connect(self._on_control_edited)
        self.controls.measure_requested.connect(self.measure_current)
        # Turning measurement on times the current configuration right away (if it was only estimated).
        self.controls.measure_latency.toggled.connect(lambda on: on and self.request_evaluation())
        self.plot.point_clicked.connect(self._on_point_clicked)
        self.set_selection_button.clicked.connect(self.set_for_selection)
        self.clear_selection_button.clicked.connect(self.clear_selection_overrides)
        self.reset_button.clicked.connect(self.reset_overrides)
        self.selection_field.currentIndexChanged.connect(self._fill_selection_values)

    # -- loading -------------------------------------------------------------------------------------------------
    def load_sample(self, name: str = "digits_cnn") -> None:
        self._set_status(f"Loading the sample model {name}…")
        self.service.load_sample(name, eval_size=self.eval_size, baseline_latency=self.baseline_latency)

    def load_model(self, path: str | Path, *, trust: bool = False) -> None:
        path = str(path)
        self._set_status(f"Loading {Path(path).name}…")
        self.service.load_model(path, trust=trust, eval_size=self.eval_size,
                                baseline_latency=self.baseline_latency)

    def load_data(self, path: str | Path) -> None:
        self._set_status(f"Loading data from {Path(path).name}…")
        self.service.load_data(str(path), eval_size=self.eval_size, baseline_latency=self.baseline_latency)

    def open_path(self, path: str | Path) -> str:
        """Open any supported path (as a drop does); returns what it was classified as."""
        path = Path(path)
        kind = classify_path(path)
        if not path.exists():
            self.show_error(f"{path} does not exist.")
            return "missing"
        if kind == "model":
            self.load_model(path)
            self._add_recent(path)
        elif kind == "data":
            if self.summary is None:
                self.show_error("Load a model before dropping evaluation data.")
                return kind
            self.load_data(path)
            self._add_recent(path)
        elif kind == "config":
            self.import_configuration(path)
        elif kind == "results":
            self.import_results(path)
        else:
            self.show_error(f"{path.name} is not a model, dataset, configuration (.json) or results (.jsonl) file; "
                            "nothing was changed.")
        return kind

    @Slot(object)
    def _on_model_loaded(self, summary: ModelSummary) -> None:
        self.summary = summary
        self.baseline = None
        self.baseline_measured_ms = None
        self.undo_stack.clear()
        self.plot.clear()
        ref = cfg.ModelRef(file=Path(summary.path).name, sha256=summary.sha256, format=summary.format)
        config = cfg.CompressionConfig(model=ref)
        self.table_model.set_model(summary)
        self.table_model.set_config(config, 0)
        self.table.resizeColumnsToContents()
        self.eval_size = min(self.eval_size, summary.eval_samples_total) or summary.eval_samples_total
        self.controls.set_model_facts(summary.sparsity_curve, summary.eval_samples_total)
        self.controls.set_eval_size(self.eval_size)
        self.controls.set_baseline_accuracy(None)
        self.state.blockSignals(True)
        self.state.set(config)
        self.state.blockSignals(False)
        self._show_config(config)
        fields = self.model_fields
        fields["name"].setText(summary.name)
        fields["name"].setToolTip(summary.path)
        fields["format"].setText(summary.format)
        fields["trust"].setText("trusted (code ran)" if summary.trusted else "safe (no code imported)")
        fields["params"].setText(f"{summary.params:,}")
        fields["size"].setText(_format_bytes(summary.fp32_weight_bytes))
        fields["data"].setText(f"{summary.data_name or 'none'} ({summary.eval_samples_total} eval, "
                               f"{summary.calib_samples} calib)" if summary.data_name else "none: drop a dataset")
        # Without data nothing gets evaluated: say so instead of a spinner-like "evaluating…" that never ends.
        fields["accuracy"].setText("evaluating…" if summary.data_name else "— (no data)")
        fields["latency"].setText("measuring…" if summary.data_name else "— (no data)")
        self.setWindowTitle(f"qtradeoff — {summary.name}")
        # The model, torch and Qt wrappers are long-lived: moving them out of the collector's reach keeps full
        # collections (otherwise 100–150 ms with the GIL held, in whichever thread) from freezing the window.
        gc.collect()
        gc.freeze()
        self._set_editing_enabled(True)
        self._set_status(f"Loaded {summary.name} ({summary.format}); evaluating the fp32 baseline…")

    @Slot(object)
    def _on_data_loaded(self, info: dict) -> None:
        if self.summary is None:
            return
        self.messages.dismiss()  # an earlier "no data fits this model" no longer applies
        self.plot.clear()
        self.baseline = None
        total = int(info.get("eval_samples", 0))
        self.summary = ModelSummary(**{**self.summary.__dict__, "data_name": info.get("name", ""),
                                       "eval_samples_total": total,
                                       "calib_samples": int(info.get("calib_samples", 0)),
                                       "labelled": bool(info.get("labelled", True))})
        self.controls.set_model_facts(self.summary.sparsity_curve, total)
        self.eval_size = min(DEFAULT_EVAL_SIZE, total) or total
        self.controls.set_eval_size(self.eval_size)
        self.model_fields["data"].setText(f"{info.get('name')} ({total} eval, {info.get('calib_samples')} calib)")
        self._set_status(f"Loaded data {info.get('name')}; evaluating the fp32 baseline…")

    @Slot(str, object, str)
    def _on_needs_trust(self, path: str, globals_: list, fmt: str) -> None:
        box = trust_dialog(self, path, list(globals_), fmt)
        self._pending_trust = box

        def finished(_code: int) -> None:
            accepted = box.clickedButton() is box.property("trust_button")
            self._pending_trust = None
            box.deleteLater()
            if accepted:
                self.load_model(path, trust=True)
            else:
                self._set_status(f"Did not load {Path(path).name}: not trusted. The current model is unchanged.")

        box.finished.connect(finished)
        box.open()

    # -- results -------------------------------------------------------------------------------------------------
    @Slot(object, object)
    def _on_result(self, result: Any, meta: dict) -> None:
        index = self.plot.add_result(result, meta)
        if meta.get("tag") == "baseline":
            self.baseline = result
            accuracy = result.accuracy if result.accuracy is not None else result.agreement
            ci = result.accuracy_ci95 if result.accuracy is not None else result.agreement_ci95
            text = f"{accuracy:.2%}"
            if ci:
                text += f" [{ci[0]:.1%}, {ci[1]:.1%}] on {result.eval_samples}"
            self.model_fields["accuracy"].setText(text)
            measured = result.latency_ms(1, measured=True)
            estimated = result.latency_ms(1, measured=False)
            if measured is None and self.baseline_measured_ms is not None:
                measured = self.baseline_measured_ms  # latency does not depend on the subset size
            self.baseline_measured_ms = measured
            self.model_fields["latency"].setText(
                f"{measured:.3f} ms (batch 1, measured)" if measured is not None
                else f"≈{estimated:.3f} ms (estimated)" if estimated is not None else "n/a")
            self.controls.set_baseline_accuracy(accuracy)
        self.plot.set_current(self.state.config.key())
        self._show_current_metrics()
        self._set_status(f"Evaluated configuration #{index + 1}.")

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        if kind in ("load", "sample") and self.summary is not None:
            message += f" The current model ({self.summary.name}) is still loaded."
        elif kind == "data" and self.summary is not None:
            message += " The current data is unchanged."
        self.show_error(message)

    def show_error(self, message: str) -> None:
        self.messages.show_message(message, "error")
        self._set_status("Error: see the message above.")

    def show_info(self, message: str) -> None:
        self.messages.show_message(message, "info")

    # -- editing -------------------------------------------------------------------------------------------------
    def _set_editing_enabled(self, enabled: bool) -> None:
        for widget in (self.controls, self.table, self.set_selection_button, self.clear_selection_button,
                       self.reset_button):
            widget.setEnabled(enabled)
        for action in (self.export_action, self.import_action, self.open_data_action, self.open_folder_action):
            action.setEnabled(enabled)

    def apply_config(self, config: Any, text: str, merge_key: str | None = None) -> bool:
        """Make ``config`` the edited configuration through the undo stack (keeps the model reference)."""
        if self.state.config.model is not None and config.model != self.state.config.model:
            config = config.with_model(self.state.config.model)
        return push_edit(self.undo_stack, self.state, config, text, merge_key)

    @Slot(str, object, str)
    def _on_control_edited(self, field: str, value: Any, merge_key: str) -> None:
        if field == "eval_size":
            self.eval_size = int(value)
            self._request_baseline()
            self.request_evaluation()
            return
        config = self.state.config
        if field == "weight_precision":
            new, text = config.with_defaults(weight={"precision": value}), f"Weights → {value}"
        elif field == "activation_precision":
            new, text = config.with_defaults(activation={"precision": value}), f"Activations → {value}"
        elif field == "granularity":
            new, text = config.with_defaults(weight={"granularity": value}), f"Granularity → {value}"
        elif field == "weight_symmetric":
            new, text = config.with_defaults(weight={"symmetric": bool(value)}), "Weight symmetry"
        elif field == "activation_symmetric":
            new, text = config.with_defaults(activation={"symmetric": bool(value)}), "Activation symmetry"
        elif field == "calibration":
            new, text = config.with_defaults(activation={"calibration": value}), f"Calibration → {value}"
        elif field == "threshold":
            threshold = float(value)
            prune = ({"method": "magnitude", "threshold": threshold, "relative": True, "sparsity": None}
                     if threshold > 0 else {"method": "none", "threshold": 0.0, "relative": False, "sparsity": None})
            new, text = config.with_defaults(prune=prune), f"Pruning threshold → {threshold:g} σ"
        else:
            return
        if not self.apply_config(new, text, merge_key or None):
            self._show_config(self.state.config)

    def _table_edit(self, names: list[str], field: str, value: Any) -> None:
        config = self.state.config
        for name in names:
            if field == "weight_precision":
                config = config.with_layer(name, weight={"precision": value})
            elif field == "activation_precision":
                config = config.with_layer(name, activation={"precision": value})
            elif field == "sparsity":
                sparsity = float(value)
                prune = ({"method": "magnitude", "sparsity": sparsity} if sparsity > 0
                         else {"method": "none", "sparsity": None})
                config = config.with_layer(name, prune=prune)
        label = names[0] if len(names) == 1 else f"{len(names)} layers"
        pretty = f"{float(value):.0%}" if field == "sparsity" else value
        self.apply_config(config, f"{label}: {field.replace('_', ' ')} → {pretty}")

    def selected_layers(self) -> list[str]:
        rows = sorted({self.table_proxy.mapToSource(index).row()
                       for index in self.table.selectionModel().selectedRows()})
        return [self.table_model.layer_at(row) for row in rows]

    def _fill_selection_values(self, *_args: Any) -> None:
        self.selection_value.clear()
        if self.selection_field.currentIndex() == 2:
            self.selection_value.addItems([f"{p} %" for p in (0, 25, 50, 75, 90)])
        else:
            self.selection_value.addItems(PRECISION_ORDER)

    def set_for_selection(self) -> None:
        names = self.selected_layers()
        if not names:
            self._set_status("Select one or more layers in the table first.")
            return
        field = ("weight_precision", "activation_precision", "sparsity")[self.selection_field.currentIndex()]
        text = self.selection_value.currentText()
        value = float(text.rstrip(" %")) / 100.0 if field == "sparsity" else text
        self._table_edit(names, field, value)

    def clear_selection_overrides(self) -> None:
        config = self.state.config
        names = self.selected_layers()
        for name in names:
            config = config.without_layer(name)
        self.apply_config(config, f"Clear overrides of {len(names)} layer(s)")

    def reset_overrides(self) -> None:
        config = self.state.config
        for name in list(config.overrides()):
            config = config.without_layer(name)
        self.apply_config(config, "Reset layers to defaults")

    def reset_all(self) -> None:
        self.apply_config(cfg.CompressionConfig(model=self.state.config.model), "Reset everything to fp32")

    @Slot(object)
    def _on_config_changed(self, config: Any) -> None:
        self._show_config(config)
        self.request_evaluation()

    def _show_config(self, config: Any) -> None:
        self.controls.show_config(config)
        self.table_model.set_config(config, self.threshold_index(config))
        self.plot.set_current(config.key())
        self._show_current_metrics()

    def _show_current_metrics(self) -> None:
        """Fill the "Current configuration" panel from the latest result of the edited configuration."""
        fields = self.current_fields
        index = self.plot.store.find(self.state.config.key())
        if index is None:
            for label in fields.values():
                label.setText("—")
            fields["accuracy"].setText("evaluating…" if self.summary is not None and self.summary.data_name else "—")
            return
        result = self.plot.store.results[index]
        accuracy = result.accuracy if result.accuracy is not None else result.agreement
        ci = result.accuracy_ci95 if result.accuracy is not None else result.agreement_ci95
        name = "" if result.accuracy is not None else " agreement with fp32"
        fields["accuracy"].setText(f"{accuracy:.2%}{name}" + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")
                                   + f" on {result.eval_samples}")
        base = self.baseline
        if base is not None and base.eval_samples == result.eval_samples:
            base_accuracy = base.accuracy if base.accuracy is not None else base.agreement
            fields["delta"].setText(f"{(accuracy - base_accuracy) * 100:+.2f} pts")
        else:
            fields["delta"].setText("— (baseline on another subset)" if base is not None else "—")
        measured = result.latency_ms(1, measured=True)
        estimated = result.latency_ms(1, measured=False)
        parts = []
        if measured is not None:
            parts.append(f"{measured:.3f} ms measured")
        if estimated is not None:
            parts.append(f"≈{estimated:.3f} ms estimated")
        fields["latency"].setText(", ".join(parts) or "n/a")
        fields["weights"].setText(f"{_format_bytes(result.weight_bytes)} "
                                  f"({result.weight_bytes / max(1, result.fp32_weight_bytes):.1%} of fp32)")
        fields["activations"].setText(_format_bytes(result.peak_activation_bytes))
        fields["note"].setText(getattr(result, "measured_note", "") or "—")

    def request_evaluation(self, *, measured: bool | None = None) -> None:
        """Evaluate the current configuration unless the plot already has it on this subset size."""
        if self.summary is None or self._closing:
            return
        config = self.state.config
        measured = self.controls.measure_latency.isChecked() if measured is None else measured
        index = self.plot.store.lookup(config.key(), self.eval_size)
        if index is not None:
            has_measured = self.plot.store.results[index].latency_ms(1, measured=True) is not None
            if has_measured or not measured:
                self._set_status(f"Configuration #{index + 1} was already evaluated.")
                return
        self.service.evaluate(config, eval_size=self.eval_size, latency="both" if measured else "estimated")

    def _request_baseline(self) -> None:
        """Evaluate fp32 on the current subset size too, so "vs fp32" compares the same samples."""
        if self.summary is None or self._closing:
            return
        baseline = cfg.CompressionConfig(model=self.state.config.model)
        if self.plot.store.lookup(baseline.key(), self.eval_size) is None:
            self.service.evaluate(baseline, eval_size=self.eval_size, latency="estimated", tag="baseline")

    def measure_current(self) -> None:
        self.request_evaluation(measured=True)

    @Slot(int)
    def _on_point_clicked(self, index: int) -> None:
        result = self.plot.store.results[index]
        self.apply_config(result.config, f"Load configuration #{index + 1} from the plot")
        self._set_status(f"Loaded configuration #{index + 1} from the plot.")

    # -- busy state ----------------------------------------------------------------------------------------------
    @Slot(str, str)
    def _on_job_started(self, kind: str, description: str) -> None:
        self._busy_kind = kind
        self._show_busy(True)
        self.progress.setRange(0, 0)
        self._elapsed.restart()
        self._elapsed_timer.start()
        self._set_status(description[:1].upper() + description[1:] + "…")

    @Slot(str, bool)
    def _on_job_finished(self, kind: str, completed: bool) -> None:
        if not completed and not self.messages.isVisible() and kind == "eval":
            self._set_status("Cancelled.")
        if not self.service.has_pending():
            self._elapsed_timer.stop()
            self._show_busy(False)
            seconds = self._elapsed.elapsed() / 1000 if self._elapsed.isValid() else 0
            self.elapsed_label.setText(f"last job {seconds:.1f} s")

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, stage: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"{stage}: %p%")

    def _tick_elapsed(self) -> None:
        self.elapsed_label.setText(f"{self._elapsed.elapsed() / 1000:.1f} s")

    def _show_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setEnabled(busy)

    def cancel(self) -> None:
        if self.service.cancel():
            self._set_status("Cancelling…")

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    # -- files ---------------------------------------------------------------------------------------------------
    def _last_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home())))

    def _remember_dir(self, path: str) -> None:
        self.settings.setValue("last_dir", str(Path(path).parent))

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open model", self._last_dir(),
            "Models (*.safetensors *.pt *.pth *.pt2 *.ptl *.bin *.ckpt);;All files (*)")
        if path:
            self._remember_dir(path)
            self.open_path(path)

    def open_data_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open data", self._last_dir(),
                                              "Tensors (*.pt *.pth *.npz *.npy);;All files (*)")
        if path:
            self._remember_dir(path)
            self.load_data(path)
            self._add_recent(Path(path))

    def open_results_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open sweep results", self._last_dir(),
                                              "Sweep results (*.jsonl);;All files (*)")
        if path:
            self._remember_dir(path)
            self.import_results(path)

    def open_data_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open dataset folder", self._last_dir())
        if path:
            self.settings.setValue("last_dir", path)
            self.load_data(path)
            self._add_recent(Path(path))

    def current_metrics(self) -> dict | None:
        """Metrics of the current configuration if it was evaluated (DESIGN.md's ``metrics`` object)."""
        index = self.plot.store.find(self.state.config.key())
        if index is None:
            return None
        result = self.plot.store.results[index]
        measured = result.latency_ms(1, measured=True)
        latency = measured if measured is not None else result.latency_ms(1, measured=False)
        metrics: dict[str, Any] = {
            "accuracy": result.accuracy,
            "accuracy_ci95": list(result.accuracy_ci95) if result.accuracy_ci95 else None,
            "agreement": result.agreement,
            "sqnr_db": result.sqnr_db if result.sqnr_db is not None and abs(result.sqnr_db) != float("inf")
            else None,
            "eval_samples": result.eval_samples,
            "latency_ms": {"batch1": latency, "measured": measured is not None},
            "weight_bytes": result.weight_bytes,
            "peak_activation_bytes": result.peak_activation_bytes,
        }
        return {k: v for k, v in metrics.items() if v is not None}

    def environment(self) -> dict:
        index = self.plot.store.find(self.state.config.key())
        provenance = self.plot.store.results[index].provenance if index is not None else {}
        env = dict(provenance.get("environment", {})) if isinstance(provenance, dict) else {}
        env.setdefault("qtradeoff", __version__)
        env.setdefault("python", platform.python_version())
        env.setdefault("platform", platform.platform())
        return env

    def configuration_json(self) -> str:
        return cfg.to_json(self.state.config, metrics=self.current_metrics(), environment=self.environment())

    def export_configuration(self, path: str | Path) -> bool:
        return self._write_atomically(path, self.configuration_json().encode("utf-8"), "configuration")

    def _write_atomically(self, path: str | Path, data: bytes, what: str) -> bool:
        target = QSaveFile(str(path))
        if not target.open(QSaveFile.WriteOnly):
            self.show_error(f"Could not write the {what} to {path}: {target.errorString()}.")
            return False
        target.write(data)
        if not target.commit():
            self.show_error(f"Could not write the {what} to {path}: {target.errorString()}.")
            return False
        self._set_status(f"Saved the {what} to {path}.")
        return True

    def export_configuration_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export configuration", str(Path(self._last_dir()) /
                                                                                  "qtradeoff-config.json"),
                                              "Configuration (*.json)")
        if path:
            self._remember_dir(path)
            self.export_configuration(path)

    def import_configuration(self, path: str | Path) -> bool:
        """Validate a configuration file and apply it whole (one undo step), or show why it was rejected."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            layer_names = self.summary.layer_names if self.summary is not None else None
            config = cfg.from_json(text, layer_names=layer_names)
        except (OSError, UnicodeDecodeError) as error:
            self.show_error(f"Could not read {path.name}: {error}. Nothing was applied.")
            return False
        except cfg.ConfigError as error:
            self.show_error(f"{path.name} is not a valid configuration: {error}. Nothing was applied.")
            return False
        if self.summary is None:
            self.show_error("Load a model before applying a configuration.")
            return False
        self.apply_config(config, f"Import {path.name}")
        self._add_recent(path)
        self._set_status(f"Applied the configuration from {path.name}.")
        return True

    def import_configuration_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import configuration", self._last_dir(),
                                              "Configuration (*.json)")
        if path:
            self._remember_dir(path)
            self.import_configuration(path)

    def import_results(self, path: str | Path) -> int:
        """Plot the results of a sweep (.jsonl: one object per line with ``config`` and ``result``)."""
        from qtradeoff.core.engine.measure import Result

        path = Path(path)
        added = 0
        bad = 0
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            self.show_error(f"Could not read {path.name}: {error}.")
            return 0
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                result = Result.from_dict(record["result"] if "result" in record else record)
            except Exception:  # noqa: BLE001 - one bad line should not hide the others; counted and reported
                bad += 1
                continue
            self.plot.add_result(result, {"tag": "sweep", "source": str(path)})
            added += 1
        if added == 0:
            self.show_error(f"{path.name} holds no readable results (expected one JSON object per line with "
                            "'config' and 'result').")
        elif bad:
            self.show_info(f"Plotted {added} results from {path.name}; skipped {bad} unreadable line(s).")
        else:
            self._set_status(f"Plotted {added} results from {path.name}.")
        return added

    def export_csv(self, path: str | Path) -> bool:
        return self._write_atomically(path, self.plot.store.to_csv().encode("utf-8"), "results")

    def export_csv_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export results as CSV",
                                              str(Path(self._last_dir()) / "qtradeoff-results.csv"), "CSV (*.csv)")
        if path:
            self._remember_dir(path)
            self.export_csv(path)

    def save_png(self, path: str | Path) -> bool:
        ok = self.plot.save_png(str(path))
        if not ok:
            self.show_error(f"Could not save the plot to {path}.")
        return ok

    def save_png_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save plot as PNG",
                                              str(Path(self._last_dir()) / "qtradeoff-plot.png"), "PNG (*.png)")
        if path:
            self._remember_dir(path)
            self.save_png(path)

    # -- recent files and settings -------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _add_recent(self, path: Path) -> None:
        entry = str(Path(path).resolve())
        recent = [p for p in self.recent_files() if p != entry]
        recent.insert(0, entry)
        self.settings.setValue("recent_files", recent[:MAX_RECENT])
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        for path in recent:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_path(p))
        self.recent_menu.setEnabled(bool(recent))

    def _restore_settings(self) -> None:
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1400, 900)
        for key, splitter in (("main_splitter", self.main_splitter), ("right_splitter", self.right_splitter)):
            state = self.settings.value(key)
            if state is not None:
                splitter.restoreState(state)
        self.controls.measure_latency.setChecked(self.settings.value("measure_latency", False, type=bool))

    def _save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("main_splitter", self.main_splitter.saveState())
        self.settings.setValue("right_splitter", self.right_splitter.saveState())
        self.settings.setValue("measure_latency", self.controls.measure_latency.isChecked())
        self.settings.sync()

    # -- drag and drop -------------------------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and all(url.isLocalFile() for url in urls):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        paths = [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]
        if not paths:
            self.show_error("Only local files and folders can be dropped here.")
            event.ignore()
            return
        event.acceptProposedAction()
        # Models first so that data and configurations dropped together apply to the new model.
        order = {"model": 0, "data": 1, "config": 2, "results": 3}
        for path in sorted(paths, key=lambda p: order.get(classify_path(p), 9)):
            self.open_path(path)

    # -- closing -------------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self._closing = True
        self._save_settings()
        if self._pending_trust is not None:
            self._pending_trust.reject()
        self._elapsed_timer.stop()
        self.plot.stop()
        self.service.shutdown()
        event.accept()

    # threshold index of a configuration, for the table's derived sparsity
    @staticmethod
    def threshold_index(config: Any) -> int:
        prune = config.prune
        if prune.method == "magnitude" and prune.relative and prune.sparsity is None:
            return round(prune.threshold / THRESHOLD_STEP)
        return 0
