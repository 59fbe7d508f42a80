"""Shared fixtures: headless Qt, the sample model, and its data."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Caches (roofline calibration, architecture index, sensitivity) go to a fresh folder, not the user's home.
if "QTRADEOFF_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["QTRADEOFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="qtradeoff-test-cache-")

import pytest
import torch

from qtradeoff.core.runtime import tune_allocator

tune_allocator()  # as the app does at start

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def manifest():
    import json

    from qtradeoff.core.loading.data import SAMPLE_DIR

    return json.loads((SAMPLE_DIR / "manifest.json").read_text())
