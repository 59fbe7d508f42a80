"""File → Save session / Open session, and the autosave that recovers an exploration after a crash.

A session (:mod:`qtradeoff.core.session`) is the model's source and sha256, the data's path, the subset size, the
configuration being edited and every point of the plot with its tag, label and pin. Opening one loads its model
(asking for trust again if the model needs it: a session file cannot grant consent), checks that the file still
has the saved sha256 (a changed model would mix old points with new ones, so nothing is restored then), loads the
data, and only then puts the points back and the configuration. A session that cannot be read changes nothing.

While the window is open, the session is written every ``AUTOSAVE_MS`` to an autosave file when something changed;
a clean close deletes it, so one that is still there at start-up comes from a run that did not end normally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Slot
from PySide6.QtGui import QKeySequence

from qtradeoff.gui.file_actions import SESSION_SUFFIX, FileError, write_atomically

AUTOSAVE_MS = 30_000


class SessionActions(QObject):
    """Owned by the main window; reads the window's state to save and drives its loads to restore."""

    def __init__(self, window: Any, autosave_path: Path | None = None) -> None:
        super().__init__(window)
        self._window = window
        self.autosave_path = autosave_path
        self._pending: Any = None  # a Session waiting for its model (and data) to load
        self._stage = ""  # "model", then "data" (when the session names data), then "baseline"
        self._saved_state: tuple | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(self.autosave)
        if autosave_path is not None:
            self._timer.start()

    def add_actions(self, menu: Any, before: Any) -> None:
        from qtradeoff.gui.file_actions import add_action

        window = self._window
        self.save_action = add_action(window, menu, "Save session…", self._ask_save, QKeySequence("Ctrl+Shift+S"),
                                      "Save the model and data references, every point and the current "
                                      "configuration in one file.")
        self.open_action = add_action(window, menu, "Open session…", self._ask_open, QKeySequence("Ctrl+Shift+O"),
                                      "Reopen a saved session: its model, data, points and configuration.")
        for action in (self.save_action, self.open_action):
            menu.removeAction(action)
            menu.insertAction(before, action)
        menu.insertSeparator(before)

    def _ask_save(self) -> None:
        self._window.files._ask_save(self.save, "Save session", f"qtradeoff{SESSION_SUFFIX}",
                                     f"qtradeoff session (*{SESSION_SUFFIX})")

    def _ask_open(self) -> None:
        self._window.files._ask_open(self.open_in_background, "Open session",
                                     f"qtradeoff session (*{SESSION_SUFFIX});;All files (*)")

    # -- building and writing ----------------------------------------------------------------------------------
    def current(self) -> Any:
        """The window's session now, or None before a model is loaded."""
        from qtradeoff.core.session import ModelSource, Session, SessionPoint

        window = self._window
        summary = window.summary
        if summary is None or window.model_source is None:
            return None
        kind, where = window.model_source
        model = ModelSource(kind, summary.name if kind == "file" else where, where if kind == "file" else "",
                            summary.sha256, summary.format, summary.trusted)
        store = window.plot.store
        points = tuple(SessionPoint(result, str(meta.get("tag", "")), str(meta.get("label", "")),
                                    bool(meta.get("pinned", False)), bool(meta.get("answer", False)),
                                    str(meta.get("strategy", "") or ""))
                       for result, meta in zip(store.results, store.meta, strict=True))
        return Session(model, window.state.config, points, window.data_path or "", int(window.eval_size),
                       data_options=dict(window.data_options or {}))

    def save(self, path: str | Path) -> bool:
        from qtradeoff.core.session import session_bytes

        path = Path(path)
        if path.suffix.lower() != SESSION_SUFFIX:
            path = path.with_name(path.name + SESSION_SUFFIX)
        session = self.current()
        if session is None:
            self._window.show_error("Load a model before saving a session.")
            return False
        try:
            data = session_bytes(session)
        except ValueError as error:  # a non-finite figure JSON cannot hold
            self._window.show_error(f"Could not save the session to {path.name}: {error}.")
            return False
        return self._window.files.save(path, data, "session")

    @Slot()
    def autosave(self) -> bool:
        """Write the autosave file when the points or the configuration changed since the last write."""
        from qtradeoff.core.session import session_bytes

        if self.autosave_path is None:
            return False
        session = self.current()
        if session is None:
            return False
        state = (len(session.points), session.current.key(), session.data_path, session.model.sha256,
                 next((i for i, point in enumerate(session.points) if point.answer), None))
        if state == self._saved_state:
            return False
        try:
            self.autosave_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.autosave_path, session_bytes(session), "autosave")
        except (OSError, ValueError, FileError):
            return False  # autosave is best effort; never interrupt the user for it
        self._saved_state = state
        return True

    def stop(self, *, clean: bool) -> None:
        """The window closes: a clean close removes the autosave (nothing to recover)."""
        self._timer.stop()
        if clean and self.autosave_path is not None:
            self.autosave_path.unlink(missing_ok=True)

    # -- reading and restoring ---------------------------------------------------------------------------------
    def open(self, path: str | Path) -> bool:
        """Read a session (on the calling thread) and start restoring it; False (and a message) when it cannot be
        used. The File menu and drops use :meth:`open_in_background`."""
        try:
            session = _read(path)
        except FileError as error:
            self._window.show_error(str(error))
            return False
        return self._restore(session)

    def open_in_background(self, path: str | Path) -> None:
        """Read the session off the GUI thread, then restore it here (or say why it cannot be used)."""
        self._window.files.read_in_background(lambda: _read(path), self._restore)

    def _restore(self, session: Any) -> bool:
        window = self._window
        self._pending, self._stage = session, "model"
        window.eval_size = session.eval_size or window.eval_size
        # with data of its own, the session's baseline comes after that data loads: none on the model's own data
        baseline = not session.data_path
        if session.model.source == "sample":
            window.load_sample(session.model.name, baseline=baseline)
        else:
            window.load_model(session.model.path, baseline=baseline)  # trust is asked again when it is needed
        return True

    def pending(self) -> Any:
        return self._pending

    def model_loaded(self, summary: Any) -> None:
        """A model finished loading: check it is the session's, then load the session's data (if any)."""
        session = self._pending
        if session is None:
            return
        if session.model.sha256 and summary.sha256 != session.model.sha256:
            self._pending = None
            self._window.show_error(
                f"{Path(summary.path).name} changed since the session was saved (its sha256 differs), so the "
                "session's points were not restored; the model is loaded as it is now.")
            return
        if session.data_path:
            self._stage = "data"
            self._window.load_data(session.data_path, options=session.data_options or None,
                                   eval_size=session.eval_size or None)
        else:
            self._stage = "baseline"

    def data_loaded(self) -> None:
        if self._pending is not None and self._stage == "data":
            self._stage = "baseline"

    def baseline_ready(self) -> None:
        """The fp32 baseline of the session's model and data is in: put the points and configuration back."""
        if self._pending is None or self._stage != "baseline":
            return
        session, self._pending, self._stage = self._pending, None, ""
        self._window.restore_points(session)

    def load_failed(self) -> None:
        """The session's model or data did not load (the window said why): the restore is abandoned."""
        self._pending, self._stage = None, ""


def _read(path: str | Path) -> Any:
    """The session in ``path`` (the core's reader: a regular file of bounded size, never blocking), or a FileError
    with the sentence the window shows."""
    from qtradeoff.core.session import SessionError, read_session

    try:
        return read_session(path)
    except SessionError as error:
        raise FileError(f"Could not open the session: {error}. Nothing was changed.") from None
