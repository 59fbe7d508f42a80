"""The rounding choice in the GUI: the defaults' combo (with GPTQ's act-order and the weight range) and the layer
table's column edit the configuration."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QStyleOptionViewItem

from qtradeoff.core.config import ROUNDINGS, CompressionConfig
from qtradeoff.gui import editing
from qtradeoff.gui.layer_table import COL_ROUND, COL_WEIGHT, PRECISION_ORDER


def test_the_defaults_combo_changes_the_config_and_undoes(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    combo = window.controls.rounding
    assert [combo.itemData(i) for i in range(combo.count())] == list(ROUNDINGS)
    window.controls.weight_precision.slider.setValue(PRECISION_ORDER.index("int4"))
    combo.setCurrentIndex(ROUNDINGS.index("gptq"))
    assert window.state.config.weight.rounding == "gptq"
    assert window.state.config.to_dict()["defaults"]["weight"]["rounding"] == "gptq"
    assert window.table_model.index(0, COL_ROUND).data() == "GPTQ"
    window.undo_stack.undo()
    assert window.state.config.weight.rounding == "nearest"
    assert combo.currentData() == "nearest"  # the combo shows the configuration it is given, without an edit
    assert window.undo_stack.count() == 2
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=10000)


def test_the_table_column_overrides_one_layer(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    model = window.table_model
    index = model.index(1, COL_ROUND)
    assert model.flags(index) & Qt.ItemIsEditable
    assert index.data() == "(nearest)"  # fp32 weights: no grid, the choice has no effect yet
    delegate = window.table.itemDelegateForColumn(COL_ROUND)
    editor = delegate.createEditor(window.table.viewport(), QStyleOptionViewItem(), index)
    assert isinstance(editor, QComboBox)
    delegate.setEditorData(editor, index)
    assert editor.currentData() == "nearest"
    assert editor.count() == len(editing.ROUNDING_CHOICES)
    editor.setCurrentIndex(editor.findData("adaround"))
    delegate.setModelData(editor, model, index)
    editor.deleteLater()
    assert window.state.config.resolve("conv2").weight.rounding == "adaround"
    assert window.state.config.resolve("conv1").weight.rounding == "nearest"
    assert model.is_overridden(1, COL_ROUND) and not model.is_overridden(1, COL_WEIGHT)
    assert "overrides default nearest" in index.data(Qt.ToolTipRole)
    window.table.selectAll()
    window.selection_field.setCurrentIndex([field for field, _ in editing.SELECTION_FIELDS].index("rounding"))
    window.selection_value.setCurrentIndex(window.selection_value.findData("gptq"))
    window.set_selection_button.click()
    assert {window.state.config.resolve(n).weight.rounding for n in ("conv1", "conv2", "fc")} == {"gptq"}
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=10000)


def test_act_order_and_range_are_defaults_and_layer_choices(make_window, fake_backend, qtbot):
    """The defaults' act-order box and range combo edit the configuration (and undo); the layer column's choice
    sets a layer's rounding, act-order and range at once, and shows them."""
    window = make_window(fake_backend)
    controls, model = window.controls, window.table_model
    controls.weight_precision.slider.setValue(PRECISION_ORDER.index("int4"))
    controls.rounding.setCurrentIndex(ROUNDINGS.index("gptq"))
    controls.act_order.setChecked(True)
    controls.weight_range.setCurrentIndex(controls.weight_range.findData("mse"))
    weight = window.state.config.weight
    assert weight.gptq_act_order and weight.range == "mse"
    assert model.index(0, COL_ROUND).data() == "GPTQ · act-order · MSE range"
    window.undo_stack.undo()
    assert window.state.config.weight.range == "minmax" and controls.weight_range.currentData() == "minmax"
    assert window.state.config.weight.gptq_act_order and controls.act_order.isChecked()

    index = model.index(1, COL_ROUND)
    delegate = window.table.itemDelegateForColumn(COL_ROUND)
    editor = delegate.createEditor(window.table.viewport(), QStyleOptionViewItem(), index)
    delegate.setEditorData(editor, index)
    assert editor.currentData() == "gptq+act-order"
    editor.setCurrentIndex(editor.findData("bias_correction+mse"))
    delegate.setModelData(editor, model, index)
    editor.deleteLater()
    layer = window.state.config.resolve("conv2").weight
    assert (layer.rounding, layer.range) == ("bias_correction", "mse")
    assert index.data() == "bias correction · MSE range" and model.is_overridden(1, COL_ROUND)
    # GPTQ in natural order on one layer while the default is act-order: only what differs is written
    window.table.selectRow(0)
    window.selection_field.setCurrentIndex([field for field, _ in editing.SELECTION_FIELDS].index("rounding"))
    window.selection_value.setCurrentIndex(window.selection_value.findData("gptq"))
    window.set_selection_button.click()
    assert dict(window.state.config.overrides()["conv1"].weight) == {"rounding": "gptq", "gptq_act_order": False}
    assert model.index(0, COL_ROUND).data() == "GPTQ"
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=10000)


def test_rounding_choices_name_every_combination():
    from qtradeoff.core.config import WeightSpec

    for choice in editing.ROUNDING_CHOICES:
        config = editing.edit_layers(CompressionConfig().with_defaults(weight={"precision": "int4"}), ["fc"],
                                     "rounding", choice).config
        assert editing.rounding_choice(config.resolve("fc").weight) == choice
    assert editing.rounding_choice(WeightSpec("int4", gptq_act_order=True)) == "nearest"  # act-order needs GPTQ
