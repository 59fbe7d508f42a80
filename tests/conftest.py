"""Shared fixtures: headless Qt, the sample model, and its data."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def manifest():
    import json

    from qtradeoff.core.data import SAMPLE_DIR

    return json.loads((SAMPLE_DIR / "manifest.json").read_text())
