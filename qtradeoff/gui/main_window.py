"""The main window: composes the panels (model, defaults, current configuration, layers, Pareto plot, status),
owns the evaluation service, the undo stack and the edited CompressionConfig, and wires the panels' plain-data
signals to edits (:mod:`qtradeoff.gui.editing`), evaluations and files (:mod:`qtradeoff.gui.file_actions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, Slot
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QUndoStack
from PySide6.QtWidgets import QApplication, QMainWindow, QMessageBox, QTabWidget, QWidget

from qtradeoff.core import config as cfg
from qtradeoff.gui import editing
from qtradeoff.gui.backend import ModelSummary
from qtradeoff.gui.collector import GuiThreadCollector
from qtradeoff.gui.controls import GlobalControls
from qtradeoff.gui.current_panel import CurrentPanel
from qtradeoff.gui.data_actions import DataActions
from qtradeoff.gui.dialogs import MessageBar, ask_trust
from qtradeoff.gui.file_actions import FileActions, add_action, configuration_from_file, results_from_file
from qtradeoff.gui.help import add_help_menu
from qtradeoff.gui.job_status import JobStatus
from qtradeoff.gui.layer_panel import LayerPanel
from qtradeoff.gui.layout import arrange, initial_size
from qtradeoff.gui.model_panel import ModelPanel
from qtradeoff.gui.plot import ParetoPlot, point_key
from qtradeoff.gui.remote import default_backend
from qtradeoff.gui.results_table import ResultsPanel, comparison_text
from qtradeoff.gui.session_actions import SessionActions
from qtradeoff.gui.undo import ConfigState, push_edit, undo_actions
from qtradeoff.gui.worker import EvaluationService

ORGANIZATION = "qtradeoff"
APPLICATION = "qtradeoff"
DEFAULT_EVAL_SIZE = 100


class MainWindow(QMainWindow):
    """The qtradeoff window. ``service`` and ``settings`` are injectable for tests."""

    def __init__(self, *, service: EvaluationService | None = None, settings: QSettings | None = None,
                 autosave_path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.collector = GuiThreadCollector(self)  # cyclic garbage (Qt wrappers among it) freed on this thread only
        self.setWindowTitle("qtradeoff")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings(
            QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)
        # The app's model work runs in worker processes (QTRADEOFF_BACKEND=thread keeps it in the worker thread).
        self.service = service if service is not None else EvaluationService(backend=default_backend(), parent=self)
        if self.service.parent() is None:
            self.service.setParent(self)
        self.summary: ModelSummary | None = None
        self.baseline: Any = None
        self.eval_size = DEFAULT_EVAL_SIZE
        # How the fp32 baseline is timed after a load: on real kernels and estimated (tests may pick "estimated").
        self.baseline_latency = "both"
        self.state = ConfigState(cfg.CompressionConfig(), self)
        self.undo_stack = QUndoStack(self)
        self._closing = False
        self._pending_trust: QMessageBox | None = None
        # Where the loaded model and data came from (for sessions): ("sample", name) or ("file", path).
        self.model_source: tuple[str, str] | None = None
        self.data_path: str | None = None
        self.data_options: dict | None = None  # how data_path was read (the data dialog's options)
        self._requested_source: tuple[str, str] | None = None
        self._requested_data: str | None = None
        self.sessions = SessionActions(self, autosave_path)
        self.last_comparison = ""
        self._comparison_box: QMessageBox | None = None

        self._build_panels()
        self._build_menus()
        self.job = JobStatus(self.statusBar(), pending=self.service.has_pending,
                             error_showing=self.messages.isVisible)
        self.progress, self.cancel_button = self.job.progress, self.job.cancel_button
        self._connect()
        self._set_editing_enabled(False)
        self._restore_settings()
        from qtradeoff.gui.explore_panel import attach_explore_panel  # search panel (issue 8), wires itself in

        self.explore_panel = attach_explore_panel(self)
        from qtradeoff.gui.recover_actions import attach_recovery  # recovery fine-tune (issue 17)

        attach_recovery(self)
        from qtradeoff.gui.graph_view import attach_graph_view  # model graph and layer profile (issue 18)

        self.graph_view = attach_graph_view(self)

    # -- construction --------------------------------------------------------------------------------------------
    def _build_panels(self) -> None:
        self.messages = MessageBar()
        self.model_panel = ModelPanel()
        self.controls = GlobalControls()
        self.current_panel = CurrentPanel()
        self.layers = LayerPanel()
        self.plot = ParetoPlot()
        self.results = ResultsPanel(self.plot)
        self.model_fields, self.current_fields = self.model_panel.fields, self.current_panel.fields
        layers = self.layers  # its parts under the names tests and the Explore panel reach them by
        self.table, self.table_model, self.table_proxy = layers.table, layers.table_model, layers.table_proxy
        self.selection_field, self.selection_value = layers.selection_field, layers.selection_value
        self.set_selection_button, self.reset_button = layers.set_selection_button, layers.reset_button

        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.layers, "Layers")
        self.bottom_tabs.addTab(self.results, "Results")
        self.bottom_tabs.setTabToolTip(1, "Every evaluated configuration: sort, filter, pin, label, compare two.")
        self.arrangement = arrange(self.messages, (self.model_panel, self.controls, self.current_panel), self.plot,
                                   self.bottom_tabs)
        self.setCentralWidget(self.arrangement.central)
        self.left_layout = self.arrangement.left_layout  # where the Explore panel goes
        self.main_splitter, self.right_splitter = self.arrangement.main_splitter, self.arrangement.right_splitter

    def _build_menus(self) -> None:
        self.files = FileActions(self, self.menuBar().addMenu("&File"), self.settings)
        self.data_actions = DataActions(self, self.files.menu, before=self.files.recent_menu.menuAction())
        self.recent_menu, self.recent_files = self.files.recent_menu, self.files.recent_files
        self.sessions.add_actions(self.files.menu, before=self.files.quit_action)

        edit_menu = self.menuBar().addMenu("&Edit")
        self.undo_action, self.redo_action = undo_actions(self.undo_stack, self)
        edit_menu.addActions([self.undo_action, self.redo_action])
        edit_menu.addSeparator()
        add_action(self, edit_menu, "Reset layers to defaults", self.reset_overrides, None,
                   "Remove every per-layer override.")
        add_action(self, edit_menu, "Reset everything to fp32", self.reset_all, None,
                   "Return to the uncompressed fp32 configuration.")

        run_menu = self.menuBar().addMenu("&Evaluate")
        self.cancel_action = add_action(self, run_menu, "Cancel", self.cancel, QKeySequence(Qt.Key_Escape),
                                        "Stop the running evaluation and drop queued ones.")
        add_action(self, run_menu, "Measure latency of this configuration", self.measure_current,
                   QKeySequence("Ctrl+M"), "Time the current configuration on real kernels.")
        self.help_menu = self.menuBar().addMenu("&Help")
        add_help_menu(self, self.help_menu)

    def _connect(self) -> None:
        service = self.service
        service.job_started.connect(self.job.started)
        service.job_finished.connect(self.job.finished)
        service.progress.connect(self.job.show_progress)
        service.model_loaded.connect(self._on_model_loaded)
        service.data_loaded.connect(self._on_data_loaded)
        service.result_ready.connect(self._on_result)
        service.failed.connect(self._on_failed)
        service.needs_trust.connect(self._on_needs_trust)
        service.subset_hints.connect(self.controls.set_subset_hints)
        service.exported.connect(self._on_exported)
        self.state.changed.connect(self._on_config_changed)
        self.job.cancel_requested.connect(self.cancel)
        self.controls.edited.connect(self._on_control_edited)
        self.controls.measure_requested.connect(self.measure_current)
        # Turning measurement on times the current configuration right away (if it was only estimated).
        self.controls.measure_latency.toggled.connect(lambda on: on and self.request_evaluation())
        self.plot.point_clicked.connect(self._on_point_clicked)
        self.plot.point_clicked.connect(lambda index: self.results.select_rows([index]))
        self.results.selection_changed.connect(self.plot.set_highlight)
        self.results.compare_requested.connect(self.compare_points)
        self.results.apply_requested.connect(self._on_point_clicked)
        self.layers.edit_requested.connect(
            lambda names, field, value: self.apply_edit(editing.edit_layers(self.state.config, names, field, value)))
        self.layers.clear_requested.connect(
            lambda names: self.apply_edit(editing.clear_layers(self.state.config, names)))
        self.layers.lock_requested.connect(self.lock_layers)
        self.layers.reset_requested.connect(self.reset_overrides)
        self.layers.message.connect(self._set_status)
        files = self.files
        files.model_requested.connect(self.load_model)
        files.data_requested.connect(self.load_data)
        files.data_options_requested.connect(self.data_actions.open_dialog)
        files.config_requested.connect(self.import_configuration_in_background)
        files.results_requested.connect(self.import_results_in_background)
        files.session_requested.connect(self.sessions.open_in_background)
        files.export_requested.connect(self.export_configuration)
        files.export_csv_requested.connect(self.export_csv)
        files.export_model_requested.connect(self.export_model)
        files.save_png_requested.connect(self.save_png)
        files.save_image_requested.connect(self.save_image)
        files.quit_requested.connect(self.close)
        files.failed.connect(self.show_error)
        files.saved.connect(self._set_status)

    # -- loading -------------------------------------------------------------------------------------------------
    def load_sample(self, name: str = "digits_cnn", *, baseline: bool = True) -> None:
        self._set_status(f"Loading the sample model {name}…")
        self._requested_source = ("sample", name)
        self.service.load_sample(name, eval_size=self.eval_size,
                                 baseline_latency=self.baseline_latency if baseline else "none")

    def load_model(self, path: str | Path, *, trust: bool = False, input_text: str | None = None,
                   baseline: bool = True) -> None:
        """``input_text``: the model's input (``--input`` syntax) when the file does not say it. ``baseline``
        False: no fp32 baseline on the model's own data (a session restore loads other data next)."""
        self._set_status(f"Loading {Path(path).name}…")
        self._requested_source = ("file", str(Path(path).resolve()))
        self._load_baseline = baseline  # kept for the load asked again once the user trusts the file
        self.service.load_model(str(path), trust=trust, eval_size=self.eval_size,
                                baseline_latency=self.baseline_latency if baseline else "none", input_text=input_text)

    def load_data(self, path: str | Path, *, options: dict | None = None, trust: bool = False,
                  eval_size: int | None = None) -> None:
        """``options``: how to read it (the data dialog's); ``trust``: consent to import a dataset hook.
        ``eval_size``: the subset edits are measured on afterwards (default :data:`DEFAULT_EVAL_SIZE`, at most
        the new data's evaluation split); the fp32 baseline is evaluated on that same subset."""
        self._set_status(f"Loading data from {Path(path).name}…")
        self._requested_data = str(Path(path).resolve()) if Path(path).exists() else str(path)
        self._requested_data_options = options
        self._requested_data_eval_size = int(eval_size or DEFAULT_EVAL_SIZE)
        self.service.load_data(str(path), eval_size=self._requested_data_eval_size,
                               baseline_latency=self.baseline_latency, options=options, trust=trust)

    def open_path(self, path: str | Path) -> str:
        """Open any supported path (as a drop does); returns what it was classified as."""
        return self.files.open(path)

    @Slot(object)
    def _on_model_loaded(self, summary: ModelSummary) -> None:
        self.summary = summary
        self.baseline = None
        self.undo_stack.clear()
        self.plot.clear()
        self.results.sync()
        config = cfg.CompressionConfig(model=cfg.ModelRef(file=Path(summary.path).name, sha256=summary.sha256,
                                                          format=summary.format))
        self.layers.set_model(summary, config)
        self.eval_size = min(self.eval_size, summary.eval_samples_total) or summary.eval_samples_total
        self.controls.set_model_facts(summary.sparsity_curve, summary.eval_samples_total)
        self.controls.set_subset_hints(None)  # the new model's proposal follows its baseline
        self.controls.set_eval_size(self.eval_size)
        self.plot.set_work_samples(self.eval_size)
        self.controls.set_baseline_accuracy(None)
        self.state.blockSignals(True)
        self.state.set(config)
        self.state.blockSignals(False)
        self._show_config(config)
        self.model_panel.show_model(summary)
        self.setWindowTitle(f"qtradeoff — {summary.name}")
        self._set_editing_enabled(True)
        self._set_status(f"Loaded {summary.name} ({summary.format}); evaluating the fp32 baseline…")
        self.model_source, self.data_path, self.data_options = self._requested_source, None, None
        self.sessions.model_loaded(summary)

    @Slot(object)
    def _on_data_loaded(self, info: dict) -> None:
        if self.summary is None:
            return
        self.messages.dismiss()  # an earlier "no data fits this model" no longer applies
        self.plot.clear()
        self.results.sync()
        self.baseline = None
        total = int(info.get("eval_samples", 0))
        self.summary = ModelSummary(**{**self.summary.__dict__, "data_name": info.get("name", ""),
                                       "eval_samples_total": total,
                                       "calib_samples": int(info.get("calib_samples", 0)),
                                       "labelled": bool(info.get("labelled", True))})
        self.controls.set_model_facts(self.summary.sparsity_curve, total)
        self.controls.set_subset_hints(None)
        # the subset its baseline was asked on (the worker evaluates at most the whole split)
        self.eval_size = min(getattr(self, "_requested_data_eval_size", DEFAULT_EVAL_SIZE), total) or total
        self.controls.set_eval_size(self.eval_size)
        self.plot.set_work_samples(self.eval_size)
        self.model_panel.show_data(info.get("name"), total, info.get("calib_samples"))
        self._set_status(f"Loaded data {info.get('name')}; evaluating the fp32 baseline…")
        self.data_path = self._requested_data
        self.data_options = getattr(self, "_requested_data_options", None)
        self.sessions.data_loaded()

    @Slot(str, object, str)
    def _on_needs_trust(self, path: str, globals_: list, fmt: str) -> None:
        if self.data_actions.needs_trust(path, fmt, getattr(self, "_requested_data_options", None)):
            return  # a dataset hook: asked by the data actions
        def answered(trusted: bool) -> None:
            self._pending_trust = None
            if trusted:
                self.load_model(path, trust=True, baseline=getattr(self, "_load_baseline", True))
            else:
                self.sessions.load_failed()
                self._set_status(f"Did not load {Path(path).name}: not trusted. The current model is unchanged.")

        self._pending_trust = ask_trust(self, path, list(globals_), fmt, answered)

    # -- results -------------------------------------------------------------------------------------------------
    @Slot(object, object)
    def _on_result(self, result: Any, meta: dict) -> None:
        index = self.plot.add_result(result, meta)
        self.results.sync()
        if meta.get("tag") == "baseline":
            self.baseline = result
            self.model_panel.show_baseline(result)
            self.controls.set_baseline_accuracy(result.accuracy if result.accuracy is not None else result.agreement)
        self.plot.set_current(point_key(self.state.config))
        self._show_current_metrics()
        self._set_status(f"Evaluated configuration #{index + 1}.")
        if meta.get("tag") == "baseline":
            self.sessions.baseline_ready()

    def restore_points(self, session: Any) -> None:
        """Put a session's points back on the plot (fresh points of the same configuration and subset are kept)
        and make its configuration the edited one (one undo step)."""
        store = self.plot.store
        restored = 0
        for point in session.points:
            result = point.result
            index = store.lookup(point_key(result.config), int(result.eval_samples))
            if index is None:
                meta = {"tag": point.tag, "label": point.label, "pinned": point.pinned, "restored": True}
                if point.strategy:
                    meta["strategy"] = point.strategy
                index = self.plot.add_result(result, meta)
                restored += 1
            if getattr(point, "answer", False):  # the search's answer is marked again, and Apply answer offered
                self.plot.set_answer(index)
                self.explore_panel.set_answer(store.results[index])
        self.results.sync()
        # edits go on on the subset the session worked on (a data load resets it to the default size)
        total = self.summary.eval_samples_total if self.summary is not None else 0
        samples = min(int(session.eval_size or 0), total) if total else int(session.eval_size or 0)
        if samples and samples != self.eval_size:
            self.eval_size = samples
            self.controls.set_eval_size(samples)
            self.plot.set_work_samples(samples)
        self.apply_config(session.current, "Open session")
        self.plot.set_current(point_key(self.state.config))
        self._show_current_metrics()
        self._set_status(f"Restored the session: {restored} points and its configuration.")

    def compare_points(self, a: int, b: int) -> str:
        """Show how point ``b`` differs from point ``a`` (layers and metrics); returns the text shown."""
        from qtradeoff.core.compare import compare

        store = self.plot.store
        layers = [(layer.name, layer.kind) for layer in (self.summary.layers if self.summary else ())
                  if getattr(layer, "compressible", True)]
        text = comparison_text(compare(store.results[a], store.results[b], layers), a + 1, b + 1)
        self.last_comparison = text
        box = QMessageBox(QMessageBox.Information, f"Compare #{a + 1} and #{b + 1}", text, QMessageBox.Close, self)
        box.setModal(False)
        box.show()
        self._comparison_box = box
        return text

    def current_result(self) -> Any:
        """The latest result of the edited configuration, or None while it has not been evaluated."""
        store, key = self.plot.store, point_key(self.state.config)
        index = store.lookup(key, self.eval_size)  # on the subset the work is measured on, if it has been
        index = store.find(key) if index is None else index
        return None if index is None else store.results[index]

    def follow_search(self, samples: int | None = None) -> None:
        """A search starts: edits move to the search's subset (``samples``, default the whole evaluation split)
        so that its points and the edits' are comparable, the plot shows that set, and the fp32 baseline and the
        current configuration are evaluated on it if they are not yet."""
        if self.summary is None:
            return
        samples = int(samples or self.summary.eval_samples_total)
        if samples <= 0:
            return
        if samples != self.eval_size:
            self.eval_size = samples
            self.controls.set_eval_size(samples)
        self.plot.set_work_samples(samples)
        self._request_baseline()
        if point_key(self.state.config) != point_key(cfg.CompressionConfig(model=self.state.config.model)):
            self.request_evaluation()  # (fp32 itself is the baseline just asked for: the newest request would win)

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        if kind in ("load", "sample", "data"):
            self.sessions.load_failed()
        if kind in ("load", "sample") and self.summary is not None:
            message += f" The current model ({self.summary.name}) is still loaded."
        elif kind == "data" and self.summary is not None:
            message += " The current data is unchanged."
        self.show_error(message)

    def show_error(self, message: str) -> None:
        self.messages.show_message(message, "error")
        self._set_status("Error: see the message above.")

    # -- editing -------------------------------------------------------------------------------------------------
    def _set_editing_enabled(self, enabled: bool) -> None:
        self.controls.setEnabled(enabled)
        self.layers.set_editable(enabled)
        self.files.set_model_loaded(enabled)

    def apply_config(self, config: Any, text: str, merge_key: str | None = None) -> bool:
        """Make ``config`` the edited configuration through the undo stack (keeps the model reference)."""
        config = editing.for_model(config, self.state.config.model)
        return push_edit(self.undo_stack, self.state, config, text, merge_key)

    def apply_edit(self, edit: editing.Edit) -> bool:
        return self.apply_config(edit.config, edit.text, edit.merge_key)

    @Slot(str, object, str)
    def _on_control_edited(self, field: str, value: Any, merge_key: str) -> None:
        if field == "eval_size":
            self.eval_size = int(value)
            self.plot.set_work_samples(self.eval_size)  # the plot shows the set the work is measured on
            self._request_baseline()
            self.request_evaluation()
            return
        edit = editing.edit_default(self.state.config, field, value, merge_key)
        if edit is not None and not self.apply_edit(edit):
            self._show_config(self.state.config)  # nothing changed: put the control back where the config is

    def selected_layers(self) -> list[str]:
        return self.layers.selected_layers()

    @Slot(object, bool)
    def lock_layers(self, names: list[str], locked: bool) -> None:
        """Lock layers for searches (or unlock them): an undoable edit of the configuration's ``locked``."""
        layers = self.summary.layers if self.summary is not None else ()
        self.apply_edit(editing.lock_layers(self.state.config, layers, names, locked))

    def reset_overrides(self) -> None:
        self.apply_edit(editing.reset_layers(self.state.config))

    def reset_all(self) -> None:
        self.apply_edit(editing.reset_all(self.state.config))

    @Slot(object)
    def _on_config_changed(self, config: Any) -> None:
        self._show_config(config)
        self.request_evaluation()

    def _show_config(self, config: Any) -> None:
        self.controls.show_config(config)
        self.layers.show_config(config)
        self.plot.set_current(point_key(config))
        self._show_current_metrics()
        self.explore_panel.show_locked(self.table_model.locked_layers())

    def _show_current_metrics(self) -> None:
        self.current_panel.show(self.current_result(), self.baseline,
                                evaluating=self.summary is not None and bool(self.summary.data_name))

    def request_evaluation(self, *, measured: bool | None = None) -> None:
        """Evaluate the current configuration unless the plot already has it on this subset size."""
        if self.summary is None or self._closing:
            return
        config = self.state.config
        measured = self.controls.measure_latency.isChecked() if measured is None else measured
        runtimes = self.controls.other_runtimes() if measured else ()
        index = self.plot.store.lookup(point_key(config), self.eval_size)
        if index is not None:
            known = self.plot.store.results[index]
            has_measured = known.latency_ms(1, measured=True) is not None and all(
                r in known.latency_by_runtime for r in runtimes)
            if has_measured or not measured:
                self._set_status(f"Configuration #{index + 1} was already evaluated.")
                return
        self.service.evaluate(config, eval_size=self.eval_size, latency="both" if measured else "estimated",
                              runtimes=runtimes)

    def _request_baseline(self) -> None:
        """Evaluate fp32 on the current subset size too, so "vs fp32" compares the same samples."""
        if self.summary is None or self._closing:
            return
        baseline = cfg.CompressionConfig(model=self.state.config.model)
        if self.plot.store.lookup(point_key(baseline), self.eval_size) is None:
            self.service.evaluate(baseline, eval_size=self.eval_size, latency="estimated", tag="baseline")

    def measure_current(self) -> None:
        self.request_evaluation(measured=True)

    @Slot(int)
    def _on_point_clicked(self, index: int) -> None:
        result = self.plot.store.results[index]
        # a point is how layers are compressed; which layers are locked stays the user's current choice
        config = result.config.with_locked(self.state.config.locked)
        self.apply_config(config, f"Load configuration #{index + 1} from the plot")
        self._set_status(f"Loaded configuration #{index + 1} from the plot.")

    # -- status --------------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        if self.service.cancel():
            self.job.set_text("Cancelling…", transient=True)

    def _set_status(self, text: str) -> None:
        self.job.set_text(text)

    # -- files ---------------------------------------------------------------------------------------------------
    def export_model(self, path: str | Path, fmt: str) -> None:
        """Export the current configuration as a ``fmt`` model file (off the GUI thread; verified after)."""
        weights = self.recovery.export_weights()
        self._set_status(f"Exporting {fmt} to {Path(path).name}{' with recovered weights' if weights else ''}…")
        self.service.export(self.state.config, fmt, str(path), weights=weights)

    def _on_exported(self, report: dict) -> None:
        passed = report.get("passed", False)
        self.last_export = report
        self.messages.show_message(("Export verified: " if passed else "Export FAILED its verification: ")
                                   + report.get("summary", ""), "info" if passed else "error")
        self._set_status(f"Exported {Path(report.get('file', '')).name}: " + ("PASS" if passed else "FAIL"))

    def export_configuration(self, path: str | Path) -> bool:
        return self.files.export_configuration(path, self.state.config, self.current_result())

    def export_csv(self, path: str | Path) -> bool:
        return self.files.save(path, self.plot.store.to_csv().encode("utf-8"), "results")

    def save_png(self, path: str | Path) -> bool:
        return self.save_image(path, "plot")

    IMAGE_KINDS = ("plot", "plot@2x", "plot@4x", "plot-svg", "window")

    def save_image(self, path: str | Path, what: str = "plot") -> bool:
        """Save an image: ``plot`` (PNG at screen size), ``plot@2x`` / ``plot@4x`` (PNG drawn at that scale),
        ``plot-svg`` (SVG) or ``window`` (the whole window as PNG)."""
        if what not in self.IMAGE_KINDS:
            raise ValueError(f"what must be one of {', '.join(self.IMAGE_KINDS)}, got {what!r}")
        if what == "window":
            ok = self.grab().save(str(path), "PNG")
        elif what == "plot-svg":
            ok = self.plot.save_image(str(path))
        else:
            ok = self.plot.save_image(str(path), {"plot": 1.0, "plot@2x": 2.0, "plot@4x": 4.0}[what])
        if ok:
            self._set_status(f"Saved the {'window' if what == 'window' else 'plot'} to {Path(path).name}.")
        else:
            self.show_error(f"Could not save the {'window' if what == 'window' else 'plot'} to {path}.")
        return ok

    def import_configuration(self, path: str | Path) -> bool:
        """Validate a configuration file and apply it whole (one undo step), or show why it was rejected. Reads
        on the calling thread (scripts, tests); the window's File menu and drops use the background variant."""
        path = Path(path)
        config = self.files.read_configuration(path, self._layer_names())
        return config is not None and self._apply_imported(path, config)

    @Slot(str)
    def import_configuration_in_background(self, path: str) -> None:
        """Read and validate the configuration off the GUI thread, then apply it here (or show why not)."""
        path, layer_names = Path(path), self._layer_names()
        self.files.read_in_background(lambda: configuration_from_file(path, layer_names),
                                      lambda config: self._apply_imported(path, config))

    def _layer_names(self) -> list[str] | None:
        return self.summary.layer_names if self.summary is not None else None

    def _apply_imported(self, path: Path, config: cfg.CompressionConfig) -> bool:
        if self.summary is None:
            self.show_error("Load a model before applying a configuration.")
            return False
        self.apply_config(config, f"Import {path.name}")
        self.files.add_recent(path)
        self._set_status(f"Applied the configuration from {path.name}.")
        return True

    def import_results(self, path: str | Path) -> int:
        """Plot the results of a sweep file (read by the core); returns how many points were added."""
        return self._plot_imported(Path(path), self.files.read_sweep(Path(path)))

    @Slot(str)
    def import_results_in_background(self, path: str) -> None:
        """Read the sweep file off the GUI thread, then plot its points here (or show why not)."""
        path = Path(path)
        self.files.read_in_background(lambda: results_from_file(path),
                                      lambda results: self._plot_imported(path, results))

    def _plot_imported(self, path: Path, results: list[Any]) -> int:
        for result in results:
            self.plot.add_result(result, {"tag": "sweep", "source": str(path)})
        if results:
            self._set_status(f"Plotted {len(results)} results from {path.name}.")
        return len(results)

    # -- settings, drops and closing -----------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            screen = self.screen() or QApplication.primaryScreen()
            self.resize(initial_size(screen.availableGeometry() if screen is not None else None))
        self.arrangement.restore(self.settings)
        self.controls.measure_latency.setChecked(self.settings.value("measure_latency", False, type=bool))
        saved_runtimes = str(self.settings.value("also_time_on", "") or "")
        self.controls.set_other_runtimes(tuple(r for r in saved_runtimes.split(",") if r))

    def _save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.arrangement.save(self.settings)
        self.settings.setValue("measure_latency", self.controls.measure_latency.isChecked())
        self.settings.setValue("also_time_on", ",".join(self.controls.other_runtimes()))
        self.settings.sync()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        self.files.drag_enter(event)

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self.files.drop(event)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self._closing = True
        self._save_settings()
        if self._pending_trust is not None:
            self._pending_trust.reject()
        self.job.stop()
        self.plot.stop()
        self.service.shutdown()
        self.sessions.stop(clean=True)
        self.collector.stop()
        event.accept()
