"""The foundation: the core imports without Qt, torchvision imports through the compat shim, samples are intact."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from qtradeoff.core import tvcompat
from qtradeoff.core.loading import architectures
from qtradeoff.core.loading.data import SAMPLE_DIR, load_digits


def test_core_imports_no_qt():
    probe = (
        "import sys, qtradeoff.core, pkgutil, importlib\n"
        "for info in pkgutil.walk_packages(qtradeoff.core.__path__, 'qtradeoff.core.'):\n"
        "    if not info.name.rsplit('.', 1)[-1].startswith('_'):\n"
        "        importlib.import_module(info.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'superqt', 'shiboken6')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"qtradeoff.core pulled in Qt modules: {out}"


def test_torchvision_models_build_through_compat():
    models = tvcompat.models()
    net = models.get_model("resnet18", weights=None, num_classes=10)
    assert net.fc.out_features == 10
    assert "mobilenet_v3_small" in models.list_models()


def test_manifest_files_match_their_sha256(manifest):
    for name, entry in manifest["models"].items():
        digest = hashlib.sha256((SAMPLE_DIR / entry["file"]).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{name}: {entry['file']} does not match the manifest"
        assert entry["test_accuracy"] >= 0.95, name
        assert architectures.is_known(entry["architecture"])


def test_sample_files_stay_small():
    total = sum(path.stat().st_size for path in SAMPLE_DIR.iterdir() if path.is_file())
    assert total < 15 * 1024 * 1024


def test_digits_splits_are_disjoint_and_stratified(manifest):
    import numpy as np

    with np.load(SAMPLE_DIR / "digits.npz") as archive:
        splits = {name: set(archive[f"{name}_idx"].tolist()) for name in ("train", "calib", "test")}
        labels = archive["labels"]
        assert len(labels) == 1797
    train, calib, test = splits["train"], splits["calib"], splits["test"]
    assert not (train & calib or train & test or calib & test)
    assert sum(map(len, splits.values())) == 1797
    test_counts = np.bincount(labels[sorted(splits["test"])], minlength=10)
    assert test_counts.min() >= 30  # every class is represented in the test split
    data = load_digits(manifest["models"]["digits_cnn"]["preprocessing"])
    assert data.input_shape == (1, 32, 32) and len(data.eval_inputs) == manifest["dataset"]["splits"]["test"]


def test_sample_readme_credits_the_data():
    text = (SAMPLE_DIR / "README.md").read_text()
    assert "UCI" in text and "CC BY 4.0" in text
    json.loads((SAMPLE_DIR / "manifest.json").read_text())


def test_core_public_api_is_lazy_and_complete():
    probe = (
        "import sys, qtradeoff.core as core\n"
        "assert 'torch' not in sys.modules, 'importing qtradeoff.core loaded torch'\n"
        "missing = [name for name in core.__all__ if getattr(core, name, None) is None]\n"
        "print(missing)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
