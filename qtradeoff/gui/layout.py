"""How the window's panels are arranged: a scrolling column of panels on the left; the Pareto plot over the layer
table on the right, in splitters the user can drag (and the window remembers); the message bar across the top.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from PySide6.QtCore import QRect, QSettings, QSize, Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QSplitter, QVBoxLayout, QWidget


@dataclass(frozen=True)
class Arrangement:
    central: QWidget
    left_layout: QVBoxLayout  # panels added later (the Explore panel) go above its trailing stretch
    main_splitter: QSplitter
    right_splitter: QSplitter

    def _splitters(self) -> tuple[tuple[str, QSplitter], ...]:
        return (("main_splitter", self.main_splitter), ("right_splitter", self.right_splitter))

    def restore(self, settings: QSettings) -> None:
        """Put the splitters where the user left them last time."""
        for key, splitter in self._splitters():
            state = settings.value(key)
            if state is not None:
                splitter.restoreState(state)

    def save(self, settings: QSettings) -> None:
        for key, splitter in self._splitters():
            settings.setValue(key, splitter.saveState())


PREFERRED_SIZE = QSize(1400, 900)


def initial_size(available: QRect | None) -> QSize:
    """The first window's size: the preferred size, shrunk to fit the screen's free area (a 1366×768 laptop keeps
    the status bar's Cancel button and progress on screen) with room left for the window frame."""
    if available is None or available.isEmpty():
        return PREFERRED_SIZE
    return QSize(min(PREFERRED_SIZE.width(), int(available.width() * 0.95)),
                 min(PREFERRED_SIZE.height(), int(available.height() * 0.92)))


def arrange(messages: QWidget, left_panels: Iterable[QWidget], top_right: QWidget, bottom_right: QWidget
            ) -> Arrangement:
    left = QWidget()
    left_layout = QVBoxLayout(left)
    left_layout.setContentsMargins(0, 0, 0, 0)
    for panel in left_panels:
        left_layout.addWidget(panel)
    left_layout.addStretch(1)
    # Scrolls on short screens instead of forcing the window's minimum height.
    left_scroll = QScrollArea()
    left_scroll.setWidget(left)
    left_scroll.setWidgetResizable(True)
    left_scroll.setFrameShape(QFrame.NoFrame)
    left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    left_scroll.setMinimumWidth(400)

    right_splitter = QSplitter(Qt.Vertical)
    right_splitter.addWidget(top_right)
    right_splitter.addWidget(bottom_right)
    right_splitter.setStretchFactor(0, 3)
    right_splitter.setStretchFactor(1, 2)
    main_splitter = QSplitter(Qt.Horizontal)
    main_splitter.addWidget(left_scroll)
    main_splitter.addWidget(right_splitter)
    main_splitter.setStretchFactor(1, 1)

    central = QWidget()
    central_layout = QVBoxLayout(central)
    central_layout.setContentsMargins(6, 6, 6, 6)
    central_layout.addWidget(messages)
    central_layout.addWidget(main_splitter, 1)
    return Arrangement(central, left_layout, main_splitter, right_splitter)
