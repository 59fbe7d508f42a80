"""Shared fixtures: headless Qt, the sample model, and its data."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Caches (roofline calibration, architecture index, sensitivity) go to a fresh folder, not the user's home.
if "QTRADEOFF_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["QTRADEOFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="qtradeoff-test-cache-")
    atexit.register(shutil.rmtree, os.environ["QTRADEOFF_CACHE_DIR"], ignore_errors=True)  # one per test process

import pytest
import torch

from qtradeoff.core.runtime import tune_allocator

tune_allocator()  # as the app does at start

# The suite runs on two xdist workers (make test): each takes one of the machine's cores. Two threads each would
# oversubscribe them, and torch's spinning worker threads then cost several times the work (a resnet18 training
# step measured 7x slower beside a busy worker than alone).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 2) // _WORKERS)))


@pytest.fixture(scope="session")
def manifest():
    import json

    from qtradeoff.core.loading.data import SAMPLE_DIR

    return json.loads((SAMPLE_DIR / "manifest.json").read_text())
