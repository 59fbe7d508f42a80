"""editing: gestures become configuration edits by pure functions (no widgets, no Qt import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qtradeoff.core.config import CompressionConfig, ModelRef
from qtradeoff.gui import editing
from qtradeoff.gui.backend import THRESHOLD_STEP

MODEL = ModelRef(file="m.safetensors", sha256="0" * 64, format="safetensors")
BASE = CompressionConfig(model=MODEL)


def test_importing_the_editor_pulls_in_no_qt():
    probe = ("import sys, qtradeoff.gui.editing\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("field", "value", "check", "text"), [
    ("weight_precision", "int4", lambda c: c.weight.precision == "int4", "Weights → int4"),
    ("activation_precision", "int8", lambda c: c.activation.precision == "int8", "Activations → int8"),
    ("granularity", "per_tensor", lambda c: c.weight.granularity == "per_tensor", "Granularity → per_tensor"),
    ("weight_symmetric", False, lambda c: c.weight.symmetric is False, "Weight symmetry"),
    ("activation_symmetric", True, lambda c: c.activation.symmetric is True, "Activation symmetry"),
    ("calibration", "mse", lambda c: c.activation.calibration == "mse", "Calibration → mse"),
    ("equalization", "cle", lambda c: c.equalization == "cle", "Equalization → cle"),
    ("smoothquant", 0.8, lambda c: c.activation.smoothquant == 0.8, "SmoothQuant α → 0.8"),
    ("smoothquant", None, lambda c: c.activation.smoothquant is None, "SmoothQuant → off"),
    ("weight_precision", "lut4", lambda c: c.weight.precision == "lut4", "Weights → lut4"),
])
def test_default_edits(field, value, check, text):
    edit = editing.edit_default(BASE, field, value, field)
    assert check(edit.config) and edit.text == text and edit.merge_key == field
    assert edit.config.model == MODEL and edit.config.overrides() == {}


def test_threshold_edit_and_its_slider_step():
    edit = editing.edit_default(BASE, "threshold", 0.5, "threshold")
    prune = edit.config.prune
    assert (prune.method, prune.threshold, prune.relative, prune.sparsity) == ("magnitude", 0.5, True, None)
    assert edit.text == "Pruning threshold → 0.5 σ"
    assert editing.threshold_index(edit.config) == round(0.5 / THRESHOLD_STEP)
    off = editing.edit_default(edit.config, "threshold", 0.0)
    assert off.config.prune.method == "none" and off.merge_key is None
    assert editing.threshold_index(off.config) == 0
    target = BASE.with_defaults(prune={"method": "magnitude", "sparsity": 0.5})
    assert editing.threshold_index(target) == 0  # a target sparsity is not a slider position


def test_unknown_default_field_is_no_edit():
    assert editing.edit_default(BASE, "eval_size", 200) is None


def test_layer_edits_clear_and_reset():
    names = ["conv1", "fc"]
    edit = editing.edit_layers(BASE, names, "weight_precision", "int4")
    assert edit.text == "2 layers: weight precision → int4"
    assert set(edit.config.overrides()) == {"conv1", "fc"}
    assert edit.config.resolve("fc").weight.precision == "int4" and edit.config.weight.precision == "fp32"
    sparse = editing.edit_layers(edit.config, ["conv1"], "sparsity", 0.5)
    assert sparse.text == "conv1: sparsity → 50%"
    assert sparse.config.resolve("conv1").prune.sparsity == 0.5
    assert sparse.config.resolve("conv1").weight.precision == "int4"  # other settings of the layer stay
    dense = editing.edit_layers(sparse.config, ["conv1"], "sparsity", 0.0).config.resolve("conv1").prune
    assert dense.method == "none" and dense.sparsity is None
    activations = editing.edit_layers(BASE, ["fc"], "activation_precision", "int8").config
    assert activations.resolve("fc").activation.precision == "int8"
    cleared = editing.clear_layers(sparse.config, ["conv1"])
    assert set(cleared.config.overrides()) == {"fc"} and cleared.text == "Clear overrides of 1 layer(s)"
    reset = editing.reset_layers(sparse.config.with_defaults(weight={"precision": "int8"}))
    assert reset.config.overrides() == {} and reset.config.weight.precision == "int8"
    everything = editing.reset_all(reset.config)
    assert everything.config == BASE and everything.text == "Reset everything to fp32"


def test_selection_values_and_model_reference():
    assert editing.selection_value("sparsity", "75 %") == 0.75
    assert editing.selection_value("weight_precision", "int6") == "int6"
    assert [field for field, _ in editing.SELECTION_FIELDS] == ["weight_precision", "activation_precision",
                                                                "sparsity", "activation_sparsity", "rounding"]
    assert editing.selection_value("activation_sparsity", "25 %") == 0.25
    edit = editing.edit_layers(BASE, ["features.3.conv"], "activation_sparsity", 0.25)
    assert edit.config.resolve("features.3.conv").prune.method == "activation"
    assert edit.config.resolve("features.3.conv").prune.sparsity == 0.25
    foreign = CompressionConfig().with_defaults(weight={"precision": "int8"})
    aimed = editing.for_model(foreign, MODEL)
    assert aimed.model == MODEL and aimed.weight.precision == "int8"
    assert editing.for_model(foreign, None) is foreign


class _Layer:
    def __init__(self, name, kind):
        self.name, self.kind = name, kind


LAYERS = [_Layer("features.0.conv", "Conv2d"), _Layer("features.3.conv", "Conv2d"), _Layer("classifier", "Linear")]


def test_lock_and_unlock_by_name():
    edit = editing.lock_layers(BASE, LAYERS, ["classifier"], True)
    assert edit.config.locked == ("classifier",) and edit.text == "Lock classifier"
    assert editing.locked_names(edit.config, LAYERS) == ["classifier"]
    again = editing.lock_layers(edit.config, LAYERS, ["features.0.conv", "classifier"], True)
    assert again.config.locked == ("classifier", "features.0.conv") and again.text == "Lock 2 layers"
    back = editing.lock_layers(again.config, LAYERS, ["features.0.conv"], False)
    assert back.config == edit.config and back.text == "Unlock features.0.conv"


@pytest.mark.parametrize("selector", ["type:Conv2d", "re:features\\..*"])
def test_unlocking_a_layer_a_selector_locks_keeps_the_others_locked(selector):
    config = BASE.with_locked([selector, "classifier"])
    edit = editing.lock_layers(config, LAYERS, ["features.0.conv"], False)
    assert editing.locked_names(edit.config, LAYERS) == ["features.3.conv", "classifier"]
    assert edit.config.locked == ("classifier", "features.3.conv")


def test_reset_all_keeps_the_locks():
    config = BASE.with_defaults(weight={"precision": "int4"}).with_locked(["classifier"])
    assert editing.reset_all(config).config == BASE.with_locked(["classifier"])
