"""Small dialogs and the non-modal message bar: the trust prompt for files that would import code, and the place
where errors are shown as one sentence (never a traceback).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget


def trust_dialog(parent: QWidget | None, path: str, globals_: list[str], fmt: str) -> QMessageBox:
    """A question box listing what loading ``path`` would import; the default (and Escape) button is Cancel."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Trust this model file?")
    shown = "\n".join(f"• {name}" for name in globals_[:30])
    if len(globals_) > 30:
        shown += f"\n… and {len(globals_) - 30} more"
    box.setText(f"Loading {path} ({fmt}) would run code from the file's pickle, importing:")
    box.setInformativeText((shown or "(nothing listed)")
                           + "\n\nOnly load it if you trust where this file came from.")
    box.setStandardButtons(QMessageBox.Cancel)
    load = box.addButton("Load and trust", QMessageBox.AcceptRole)
    load.setToolTip("Import the listed globals and run the file's pickle code.")
    box.setDefaultButton(QMessageBox.Cancel)
    box.setEscapeButton(QMessageBox.Cancel)
    box.setProperty("trust_button", load)
    return box


def ask_trust(parent: QWidget | None, path: str, globals_: list[str], fmt: str,
              answered: Callable[[bool], None]) -> QMessageBox:
    """Open the trust prompt without blocking; ``answered(trusted)`` is called once the user has chosen."""
    box = trust_dialog(parent, path, globals_, fmt)

    def finished(_code: int) -> None:
        trusted = box.clickedButton() is box.property("trust_button")
        box.deleteLater()
        answered(trusted)

    box.finished.connect(finished)
    box.open()
    return box


class MessageBar(QWidget):
    """A dismissable one-line message strip at the top of the window, coloured by severity."""

    STYLES = {
        "error": "background:#fde2e1; color:#7a1010; border:1px solid #e9a5a1; border-radius:4px;",
        "warning": "background:#fff4d6; color:#6b4e00; border:1px solid #e9cf8a; border-radius:4px;",
        "info": "background:#e3effd; color:#0c3a73; border:1px solid #a9c8ef; border-radius:4px;",
    }

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.close_button = QPushButton("Dismiss")
        self.close_button.setToolTip("Hide this message.")
        self.close_button.clicked.connect(self.dismiss)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.close_button)
        self.hide()

    def show_message(self, text: str, severity: str = "error") -> None:
        self.label.setText(text)
        self.setStyleSheet(f"MessageBar {{{self.STYLES.get(severity, '')}}} QLabel {{border:none;}}")
        self.label.setStyleSheet(self.STYLES.get(severity, ""))
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def dismiss(self) -> None:
        self.hide()
