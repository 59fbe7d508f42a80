"""The Defaults panel's post-training algorithm controls: LUT precisions, SmoothQuant alpha, CLE checkbox."""

from __future__ import annotations

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.controls import GlobalControls
from qtradeoff.gui.layer_table import ACTIVATION_PRECISION_ORDER, PRECISION_ORDER


def test_lut_smoothquant_and_equalization_controls_edit_and_show_the_config(qtbot):
    controls = GlobalControls()
    qtbot.addWidget(controls)
    edits = []
    controls.edited.connect(lambda field, value, key: edits.append((field, value)))

    assert "lut3" in PRECISION_ORDER and not any(name.startswith("lut") for name in ACTIVATION_PRECISION_ORDER)
    assert controls.activation_precision.slider.maximum() == len(ACTIVATION_PRECISION_ORDER) - 1
    controls.weight_precision.setValue(PRECISION_ORDER.index("lut3"))
    controls.equalization.setChecked(True)
    controls.smoothquant.setValue(8)
    controls.smoothquant.setValue(0)
    assert edits == [("weight_precision", "lut3"), ("equalization", "cle"), ("smoothquant", 0.8),
                     ("smoothquant", None)]
    assert controls.smoothquant.label.text() == "off"

    edits.clear()
    config = (CompressionConfig().with_equalization("cle")
              .with_defaults(weight={"precision": "lut4"}, activation={"precision": "int4", "smoothquant": 0.5}))
    controls.show_config(config)
    assert edits == []  # showing a configuration emits nothing
    assert controls.equalization.isChecked() and controls.smoothquant.label.text() == "α = 0.5"
    assert controls.weight_precision.label.text() == "lut4" and controls.activation_precision.label.text() == "int4"
    controls.show_config(CompressionConfig())
    assert not controls.equalization.isChecked() and controls.smoothquant.value() == 0
