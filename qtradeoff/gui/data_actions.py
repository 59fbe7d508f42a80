"""Data into the window: File → Load data… and dropped data open the data dialog; a dataset hook asks for the
user's consent before it is imported; a model whose input is unknown opens the input dialog; an fp32 baseline
implausibly low for the model's classes is a warning saying what to check
(:mod:`qtradeoff.core.loading.plausibility`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMenu, QMessageBox

from qtradeoff.core.loading.data_kinds import HOOK_FORMAT
from qtradeoff.core.loading.plausibility import baseline_warning
from qtradeoff.gui.backend import INPUT_UNKNOWN
from qtradeoff.gui.data_dialog import DataDialog, InputDialog
from qtradeoff.gui.file_actions import add_action


class DataActions(QObject):
    """The data and input dialogs of one window (``window`` is the MainWindow: its ``summary``, ``messages``,
    ``service``, ``load_data`` and ``load_model``)."""

    def __init__(self, window: Any, menu: QMenu, before: Any = None) -> None:
        super().__init__(window)
        self._window = window
        # the last dialogs opened (kept until the next replaces them: tests and the window reach them here)
        self.dialog: DataDialog | None = None
        self.input_dialog: InputDialog | None = None
        self.trust_box: QMessageBox | None = None
        self.last_warning: str | None = None
        self._data_classes: int | None = None
        self._data_name = ""
        self._pending: tuple[str, dict] | None = None  # the hook waiting for consent, with its options
        self.load_data_action = add_action(window, menu, "Load data…", self.open_dialog, QKeySequence("Ctrl+D"),
                                           "Choose evaluation data and how to read it (kind, label column, image "
                                           "size, channels, mean/std, audio length, split, streaming).")
        self.input_action = add_action(window, menu, "Set model input…", lambda: self.ask_input(), None,
                                       "Describe the loaded model's input (name, type, shape, id range) when the "
                                       "file does not say it.")
        if before is not None:  # beside the other Open entries, not after Quit
            for action in (self.load_data_action, self.input_action):
                menu.removeAction(action)
                menu.insertAction(before, action)
        self._last_model: str | None = None
        service = window.service
        service.result_ready.connect(self._on_result)
        service.failed.connect(self._on_failed)
        service.data_loaded.connect(self._on_data_loaded)
        service.model_loaded.connect(self._on_model_loaded)

    # -- the data dialog -------------------------------------------------------------------------------------------
    @Slot()
    @Slot(str)
    def open_dialog(self, source: str = "") -> DataDialog | None:
        """Open the data dialog (non-modal), pre-filled with ``source`` and the model's data defaults."""
        window = self._window
        if window.summary is None:
            window.show_error("Load a model before loading evaluation data.")
            return None
        dialog = DataDialog(window, str(source or ""), getattr(window.summary, "data_defaults", {}) or {})
        dialog.chosen.connect(self._chosen)
        if self.dialog is not None:
            self.dialog.deleteLater()
        self.dialog = dialog
        dialog.open()
        return dialog

    @Slot(str, dict)
    def _chosen(self, source: str, options: dict) -> None:
        self._window.load_data(source, options=options)

    # -- consent for a dataset hook ---------------------------------------------------------------------------------
    def ask_hook_trust(self, source: str, options: dict | None) -> QMessageBox:
        """Ask before importing a dataset hook (non-modal; Cancel is the default)."""
        box = QMessageBox(self._window)
        box.setIcon(QMessageBox.Warning)
        box.setWindowTitle("Trust this dataset hook?")
        box.setText(f"Loading the data {source} imports the Python module and runs the callable it names.")
        box.setInformativeText("Only load it if you trust that code.")
        box.setStandardButtons(QMessageBox.Cancel)
        load = box.addButton("Import and trust", QMessageBox.AcceptRole)
        box.setDefaultButton(QMessageBox.Cancel)
        box.setEscapeButton(QMessageBox.Cancel)
        box.setProperty("trust_button", load)

        def finished(_code: int) -> None:
            trusted = box.clickedButton() is load
            self.trust_box = None
            box.deleteLater()
            if trusted:
                self._window.load_data(source, options=options, trust=True,
                                        eval_size=getattr(self._window, "_requested_data_eval_size", None))
            else:
                self._window.sessions.load_failed()
                self._window._set_status(f"Did not import {source}: not trusted. The current data is unchanged.")

        box.finished.connect(finished)
        self.trust_box = box
        box.open()
        return box

    def needs_trust(self, source: str, fmt: str, options: dict | None) -> bool:
        """Whether this consent request is a hook's (then it is asked here)."""
        if fmt != HOOK_FORMAT:
            return False
        self.ask_hook_trust(source, options)
        return True

    # -- the input dialog -------------------------------------------------------------------------------------------
    def ask_input(self, path: str | None = None, message: str = "") -> InputDialog | None:
        """Open the input dialog for the model at ``path`` (default: the last one asked for, else the loaded one);
        its answer reloads the model with that input."""
        window = self._window
        path = path or self._last_model or (window.summary.path if window.summary is not None else None)
        if not path:
            window.show_error("Open a model first; its input is asked for when the file does not say it.")
            return None
        dialog = InputDialog(window, Path(path).name, message)
        dialog.chosen.connect(lambda text: window.load_model(path, input_text=text))
        if self.input_dialog is not None:
            self.input_dialog.deleteLater()
        self.input_dialog = dialog
        dialog.open()
        return dialog

    # -- what the service says ----------------------------------------------------------------------------------------
    @Slot(object)
    def _on_model_loaded(self, summary: Any) -> None:
        self._data_classes, self._data_name = None, getattr(summary, "data_name", "")
        self.last_warning = None

    @Slot(object)
    def _on_data_loaded(self, info: dict) -> None:
        self._data_classes, self._data_name = info.get("num_classes"), str(info.get("name") or "")
        self.last_warning = None

    @Slot(object, object)
    def _on_result(self, result: Any, meta: dict) -> None:
        if meta.get("tag") != "baseline":
            return
        summary = self._window.summary
        classes = self._data_classes or (summary.num_classes if summary is not None else None)
        labelled = summary is None or summary.labelled
        text = baseline_warning(getattr(result, "accuracy", None) if labelled else None, classes,
                                self._data_name or (summary.data_name if summary is not None else "the data"))
        self.last_warning = text
        if text:
            self._window.messages.show_message(text, "warning")

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        if kind == "load" and INPUT_UNKNOWN in message:
            source = getattr(self._window, "_requested_source", None)
            if source and source[0] == "file":
                self._last_model = source[1]
                self.ask_input(source[1], message)
