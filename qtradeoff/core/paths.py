"""Where qtradeoff keeps its on-disk caches (roofline calibration, architecture index, sensitivity reports)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$QTRADEOFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/qtradeoff``, else ``~/.cache/qtradeoff``."""
    root = os.environ.get("QTRADEOFF_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "qtradeoff"
