"""The edited configuration and its undo history: every edit replaces the whole (immutable) CompressionConfig
through a QUndoCommand, so undo/redo is a swap of two snapshots.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoCommand, QUndoStack

# Command ids for mergeable edits: consecutive moves of one slider collapse into one undo step.
MERGE_IDS = {
    "weight_precision": 1001,
    "activation_precision": 1002,
    "threshold": 1003,
    "eval_size": 1004,
}


class ConfigState(QObject):
    """Holds the configuration being edited (plus the evaluation subset size) and announces changes."""

    changed = Signal(object)  # CompressionConfig

    def __init__(self, config: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._config = config

    @property
    def config(self) -> Any:
        return self._config

    def set(self, config: Any) -> None:
        if config == self._config:
            return
        self._config = config
        self.changed.emit(config)


class ConfigEdit(QUndoCommand):
    """Replace the configuration. ``merge_key`` (a slider name) lets consecutive moves of one control merge."""

    def __init__(self, state: ConfigState, before: Any, after: Any, text: str, merge_key: str | None = None) -> None:
        super().__init__(text)
        self._state = state
        self.before = before
        self.after = after
        self._id = MERGE_IDS.get(merge_key, -1) if merge_key else -1

    def id(self) -> int:  # noqa: A003 - Qt's name
        return self._id

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt's name
        if not isinstance(other, ConfigEdit) or other.id() != self.id() or self.id() == -1:
            return False
        self.after = other.after
        self.setText(other.text())
        if self.after == self.before:
            self.setObsolete(True)  # dragged back to where it started: nothing left to undo
        return True

    def redo(self) -> None:
        self._state.set(self.after)

    def undo(self) -> None:
        self._state.set(self.before)


def push_edit(stack: QUndoStack, state: ConfigState, after: Any, text: str, merge_key: str | None = None) -> bool:
    """Push an edit that turns the current configuration into ``after``; no-op (False) if nothing changes."""
    before = state.config
    if after == before:
        return False
    stack.push(ConfigEdit(state, before, after, text, merge_key))
    return True


def undo_actions(stack: QUndoStack, parent: QObject) -> tuple[QAction, QAction]:
    """Undo and Redo actions for the Edit menu: they name the step they would undo or redo, and grey out."""
    undo = stack.createUndoAction(parent, "Undo")
    undo.setShortcut(QKeySequence("Ctrl+Z"))
    undo.setToolTip("Undo the last configuration edit.")
    redo = stack.createRedoAction(parent, "Redo")
    redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    redo.setToolTip("Redo the last undone configuration edit.")
    return undo, redo
