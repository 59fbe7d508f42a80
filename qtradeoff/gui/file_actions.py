"""Files in and out of the window: what a path is, the File menu (its dialogs, last folder and recent files),
atomic writes, and reading configuration and sweep files through the core. Failures are :class:`FileError` with
one sentence the message bar can show.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QObject, QSaveFile, QSettings, Signal, Slot
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QWidget

from qtradeoff.core import config as cfg

MAX_RECENT = 8
MODEL_SUFFIXES = {".safetensors", ".pt", ".pth", ".pt2", ".ptl", ".bin", ".ckpt", ".torchscript", ".jit", ".onnx"}
DATA_SUFFIXES = {".npz", ".npy", ".csv"}


class FileError(Exception):
    """A file could not be read, written or used; the message is one sentence for the user."""


SESSION_SUFFIX = ".qtsession"  # JSON inside (qtradeoff.core.session); its own suffix so a drop can tell it apart


def classify_path(path: Path) -> str:
    """What a dropped or opened path is: ``model``, ``data``, ``config``, ``results``, ``session`` or
    ``unsupported``."""
    if path.is_dir():
        return "data"
    suffix = path.suffix.lower()
    if suffix == SESSION_SUFFIX:
        return "session"
    if suffix == ".json":
        return "config"
    if suffix == ".jsonl":
        return "results"
    if suffix in DATA_SUFFIXES:
        return "data"
    if suffix in MODEL_SUFFIXES:
        return "model"
    return "unsupported"


def dropped_paths(mime: QMimeData) -> list[Path]:
    """The local files and folders of a drop (anything else, e.g. a web link, is left out)."""
    urls = mime.urls() if mime.hasUrls() else []
    return [Path(url.toLocalFile()) for url in urls if url.isLocalFile()]


def in_open_order(paths: list[Path]) -> list[Path]:
    """Models first, so that data and configurations dropped together with one apply to the new model."""
    order = {"session": 0, "model": 1, "data": 2, "config": 3, "results": 4}
    return sorted(paths, key=lambda p: order.get(classify_path(p), 9))


def export_format_for(path: str, chosen_filter: str = "") -> str:
    """The export format a save dialog's answer means: the file's suffix, else the chosen filter."""
    by_suffix = {".pt": "torch-int8", ".safetensors": "packed", ".onnx": "onnx"}
    return by_suffix.get(Path(path).suffix.lower()) or FileActions.MODEL_EXPORT_FILTERS.get(chosen_filter,
                                                                                            "torch-int8")


def add_action(window: QWidget, menu: QMenu, text: str, slot: Any, shortcut: Any, tip: str) -> QAction:
    """A menu entry that is also the window's, so its shortcut works with the menu bar hidden (and offscreen)."""
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(shortcut)
    action.setToolTip(tip)
    action.setStatusTip(tip)
    action.triggered.connect(slot)
    menu.addAction(action)
    window.addAction(action)
    return action


def _sentence(text: str) -> str:
    text = str(text).strip()
    return text if text.endswith((".", "?", "!")) else text + "."


def write_atomically(path: str | Path, data: bytes, what: str) -> None:
    """Write all of ``data`` or leave the old file as it was (QSaveFile renames a finished temporary file)."""
    target = QSaveFile(str(path))
    if not target.open(QSaveFile.WriteOnly):
        raise FileError(f"Could not write the {what} to {path}: {target.errorString()}.")
    target.write(data)
    if not target.commit():
        raise FileError(f"Could not write the {what} to {path}: {target.errorString()}.")


def configuration_from_file(path: Path, layer_names: list[str] | None) -> cfg.CompressionConfig:
    """A validated configuration file, whole, or a FileError saying why nothing can be applied.

    Read by the core's configuration-file reader, as the CLI's ``--config`` is: a pipe or device is refused
    without blocking the window, the size is bounded, UTF-8 only, duplicate keys refused."""
    try:
        return cfg.from_json_file(path, layer_names=layer_names)
    except cfg.ConfigFileError as error:
        if error.path is None:  # the file itself (missing, a pipe, too large), not what it says
            raise FileError(f"Could not read {path.name}: {error.problem}. Nothing was applied.") from None
        raise FileError(f"{path.name} is not a valid configuration: {error.path}: {error.problem}. "
                        "Nothing was applied.") from None


def results_from_file(path: Path) -> list[Any]:
    """The Results of a sweep file as the core reads them (a line cut off by an interrupted run is ignored)."""
    # Imported here: the search package pulls in torch, which the window's first paint does without.
    from qtradeoff.core.search.sweep import SweepError, read_results

    if not path.exists():  # the core reads a missing file as an empty sweep (one that has not started)
        raise FileError(f"{path} does not exist.")
    try:
        results = read_results(path)
    except SweepError as error:
        raise FileError(_sentence(error)) from None
    if not results:
        raise FileError(f"{path.name} holds no readable results (expected one JSON object per line with "
                        "'config' and 'result').")
    return results


class FileActions(QObject):
    """The File menu and every other way a file arrives (drop, recent entry, command line): decides what a path
    is, asks for paths (remembering the folder) and emits each request as a path for the window to carry out."""

    model_requested = Signal(str)
    data_requested = Signal(str)  # evaluation data for the loaded model
    data_options_requested = Signal(str)  # a dropped or recent data path: the data dialog asks how to read it
    config_requested = Signal(str)
    results_requested = Signal(str)
    session_requested = Signal(str)
    export_requested = Signal(str)
    export_csv_requested = Signal(str)
    export_model_requested = Signal(str, str)  # path, export format
    save_png_requested = Signal(str)
    save_image_requested = Signal(str, str)  # path, what (a value of IMAGE_FILTERS)
    quit_requested = Signal()
    failed = Signal(str)  # one sentence for the message bar
    saved = Signal(str)  # one sentence for the status bar
    _read_finished = Signal(object, object, object)  # (done, value, error), emitted by a reader thread

    def __init__(self, window: QWidget, menu: QMenu, settings: QSettings) -> None:
        super().__init__(window)
        self._read_finished.connect(self._on_read_finished)
        self._window = window
        self._settings = settings
        self._model_loaded = False
        # Dropped and recent data open the data dialog first (False: loaded at once with the model's defaults).
        self.ask_data_options = True

        def add(text: str, slot: Any, shortcut: Any, tip: str) -> QAction:
            return add_action(window, menu, text, slot, shortcut, tip)

        self.open_model_action = add(
            "Open model…", self._open_model, QKeySequence.Open,
            "Load a model file (safetensors, state dict, TorchScript, pickle…).")
        self.open_data_action = add("Open data…", self._open_data, None,
                                    "Load evaluation data from a dataset folder or tensor file.")
        self.open_folder_action = add("Open dataset folder…", self._open_folder, None,
                                      "Load evaluation data from an ImageFolder directory.")
        self.open_results_action = add(
            "Open sweep results…", lambda: self._ask_open(self.results_requested.emit, "Open sweep results",
                                                          "Sweep results (*.jsonl);;All files (*)"),
            None, "Plot the points of a results file written by 'qtradeoff sweep'.")
        self.recent_menu = menu.addMenu("Open recent")
        menu.addSeparator()
        self.import_action = add(
            "Import configuration…", lambda: self._ask_open(self.config_requested.emit, "Import configuration",
                                                            "Configuration (*.json)"),
            QKeySequence("Ctrl+I"), "Validate a configuration JSON file and apply it.")
        self.export_action = add(
            "Export configuration…", lambda: self._ask_save(self.export_requested.emit, "Export configuration",
                                                            "qtradeoff-config.json", "Configuration (*.json)"),
            QKeySequence("Ctrl+E"), "Save the current configuration with its metrics and environment as JSON.")
        self.export_model_action = add(
            "Export compressed model…", self._ask_export_model, QKeySequence("Ctrl+Shift+E"),
            "Write the current configuration (or the point last clicked on the plot) as a model file, verified "
            "in a fresh process.")
        self.export_csv_action = add(
            "Export results as CSV…", lambda: self._ask_save(self.export_csv_requested.emit, "Export results as CSV",
                                                             "qtradeoff-results.csv", "CSV (*.csv)"),
            None, "Save every evaluated configuration and its metrics as CSV.")
        self.save_png_action = add(
            "Save plot image…", self._ask_save_image, None,
            "Save the Pareto plot as PNG (1×, 2× or 4× the screen size) or SVG, or the whole window as PNG.")
        menu.addSeparator()
        self.menu = menu
        self.quit_action = add("Quit", self.quit_requested, QKeySequence.Quit, "Close qtradeoff.")
        self._rebuild_recent_menu()

    def set_model_loaded(self, loaded: bool) -> None:
        """Entries (and data paths) that need a model to act on."""
        self._model_loaded = loaded
        for action in (self.export_action, self.export_model_action, self.import_action, self.open_data_action,
                       self.open_folder_action):
            action.setEnabled(loaded)

    # -- paths in and out ----------------------------------------------------------------------------------------
    def open(self, path: str | Path) -> str:
        """Route any supported path (as a drop does) to its request; returns what it was classified as."""
        path = Path(path)
        kind = classify_path(path)
        if not path.exists():
            self.failed.emit(f"{path} does not exist.")
            return "missing"
        if kind == "data" and not self._model_loaded:
            self.failed.emit("Load a model before dropping evaluation data.")
            return kind
        requests = {"model": self.model_requested, "data": self.data_requested, "config": self.config_requested,
                    "results": self.results_requested, "session": self.session_requested}
        if kind not in requests:
            self.failed.emit(f"{path.name} is not a model, dataset, configuration (.json), results (.jsonl) or "
                             f"session ({SESSION_SUFFIX}) file; nothing was changed.")
            return kind
        if kind == "data" and self.ask_data_options:
            self.data_options_requested.emit(str(path))
            return kind
        requests[kind].emit(str(path))
        if kind in ("model", "data"):
            self.add_recent(path)
        return kind

    def drag_enter(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        if urls and all(url.isLocalFile() for url in urls):
            event.acceptProposedAction()
        else:
            event.ignore()

    def drop(self, event: QDropEvent) -> None:
        paths = dropped_paths(event.mimeData())
        if not paths:
            self.failed.emit("Only local files and folders can be dropped here.")
            event.ignore()
            return
        event.acceptProposedAction()
        for path in in_open_order(paths):
            self.open(path)

    def read_in_background(self, read: Callable[[], Any], done: Callable[[Any], Any]) -> threading.Thread:
        """Run ``read`` (plain file reading, no Qt) on a short-lived thread and call ``done(value)`` on this
        object's (the GUI) thread when it returns; a FileError it raises goes to ``failed`` instead.

        The window's thread never opens or reads a user's file: the core's readers refuse pipes and devices
        without blocking and bound what they read, but a file on a stalled network mount would still freeze
        the window. Returns the thread (tests join it)."""
        def run() -> None:
            try:
                value, error = read(), None
            except FileError as failure:
                value, error = None, failure
            except Exception as failure:  # noqa: BLE001 - any other failure of a reader is reported, not lost
                value, error = None, FileError(_sentence(f"Could not read the file ({type(failure).__name__}: "
                                                         f"{failure})"))
            self._read_finished.emit(done, value, error)

        thread = threading.Thread(target=run, name="qtradeoff-file-reader", daemon=True)
        thread.start()
        return thread

    @Slot(object, object, object)
    def _on_read_finished(self, done: Callable[[Any], Any], value: Any, error: FileError | None) -> None:
        if error is not None:
            self.failed.emit(str(error))
        else:
            done(value)

    def read_configuration(self, path: Path, layer_names: list[str] | None) -> cfg.CompressionConfig | None:
        """The validated configuration in ``path``, or None after saying why nothing can be applied."""
        try:
            return configuration_from_file(path, layer_names)
        except FileError as error:
            self.failed.emit(str(error))
            return None

    def read_sweep(self, path: Path) -> list[Any]:
        """The Results of a sweep file, or none after saying why the file cannot be plotted."""
        try:
            return results_from_file(path)
        except FileError as error:
            self.failed.emit(str(error))
            return []

    def export_configuration(self, path: str | Path, config: cfg.CompressionConfig, result: Any) -> bool:
        """Write the configuration file: ``config`` with the metrics and environment of its ``result`` (or None)."""
        from qtradeoff.core.engine import report  # torch stays out of the window's first paint

        return self.save(path, report.config_document(config, result).encode("utf-8"), "configuration")

    def save(self, path: str | Path, data: bytes, what: str) -> bool:
        """Write ``data`` atomically; says where it went or why it could not."""
        try:
            write_atomically(path, data, what)
        except FileError as error:
            self.failed.emit(str(error))
            return False
        self.saved.emit(f"Saved the {what} to {path}.")
        return True

    # -- dialogs -------------------------------------------------------------------------------------------------
    def last_dir(self) -> str:
        return str(self._settings.value("last_dir", str(Path.home())))

    def _remember_dir(self, path: str) -> None:
        self._settings.setValue("last_dir", str(Path(path).parent))

    def _ask_open(self, request: Callable[[str], Any], title: str, filters: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self._window, title, self.last_dir(), filters)
        if path:
            self._remember_dir(path)
            request(path)

    def _ask_save(self, request: Callable[[str], Any], title: str, name: str, filters: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self._window, title, str(Path(self.last_dir()) / name), filters)
        if path:
            self._remember_dir(path)
            request(path)

    # the images "Save plot image…" offers: filter text -> what MainWindow.save_image draws
    IMAGE_FILTERS = {"Plot, PNG at screen size (*.png)": "plot", "Plot, PNG at 2× (*.png)": "plot@2x",
                     "Plot, PNG at 4× (*.png)": "plot@4x", "Plot, SVG (*.svg)": "plot-svg",
                     "Whole window, PNG (*.png)": "window"}

    def _ask_save_image(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(self._window, "Save plot image",
                                                   str(Path(self.last_dir()) / "qtradeoff-plot.png"),
                                                   ";;".join(self.IMAGE_FILTERS))
        if path:
            self._remember_dir(path)
            what = self.IMAGE_FILTERS.get(chosen, "plot")
            if path.lower().endswith(".svg"):
                what = "plot-svg"  # the suffix typed wins
            elif what == "plot-svg":
                path += ".svg"
            self.save_image_requested.emit(path, what)

    # the export formats the dialog offers: filter text -> format name (file suffix decides when typed)
    MODEL_EXPORT_FILTERS = {"torch-int8: TorchScript int8 (*.pt)": "torch-int8",
                            "packed: bit-packed safetensors (*.safetensors)": "packed",
                            "onnx: QDQ ONNX (*.onnx)": "onnx"}

    def _ask_export_model(self) -> None:
        filters = ";;".join(self.MODEL_EXPORT_FILTERS)
        path, chosen = QFileDialog.getSaveFileName(self._window, "Export compressed model",
                                                   str(Path(self.last_dir()) / "model-int8.pt"), filters)
        if path:
            self._remember_dir(path)
            self.export_model_requested.emit(path, export_format_for(path, chosen))

    def _open_model(self) -> None:
        self._ask_open(self.open, "Open model",
                       "Models (*.safetensors *.pt *.pth *.pt2 *.ptl *.bin *.ckpt *.onnx);;All files (*)")

    def _open_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._window, "Open data", self.last_dir(),
                                              "Data (*.pt *.pth *.npz *.npy *.csv *.safetensors);;All files (*)")
        if path:
            self._remember_dir(path)
            self._request_data(path)

    def _request_data(self, path: str) -> None:
        self.data_requested.emit(path)
        self.add_recent(path)

    def _open_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self._window, "Open dataset folder", self.last_dir())
        if path:
            self._settings.setValue("last_dir", path)  # the folder itself: the next dataset is likely beside it
            self._request_data(path)

    # -- recent files --------------------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self._settings.value("recent_files", [])
        if isinstance(value, str):  # QSettings gives a one-entry list back as a plain string
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str | Path) -> None:
        entry = str(Path(path).resolve())
        recent = [p for p in self.recent_files() if p != entry]
        recent.insert(0, entry)
        self._settings.setValue("recent_files", recent[:MAX_RECENT])
        self._rebuild_recent_menu()

    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        for path in recent:
            action = self.recent_menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open(p))
        self.recent_menu.setEnabled(bool(recent))
