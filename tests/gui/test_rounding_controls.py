"""The rounding choice in the GUI: the defaults' combo and the layer table's column edit the configuration."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QStyleOptionViewItem

from qtradeoff.core.config import ROUNDINGS
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
    editor.setCurrentIndex(ROUNDINGS.index("adaround"))
    delegate.setModelData(editor, model, index)
    editor.deleteLater()
    assert window.state.config.resolve("conv2").weight.rounding == "adaround"
    assert window.state.config.resolve("conv1").weight.rounding == "nearest"
    assert model.is_overridden(1, COL_ROUND) and not model.is_overridden(1, COL_WEIGHT)
    assert "overrides default nearest" in index.data(Qt.ToolTipRole)
    window.table.selectAll()
    from qtradeoff.gui import editing

    window.selection_field.setCurrentIndex([field for field, _ in editing.SELECTION_FIELDS].index("rounding"))
    window.selection_value.setCurrentText("gptq")
    window.set_selection_button.click()
    assert {window.state.config.resolve(n).weight.rounding for n in ("conv1", "conv2", "fc")} == {"gptq"}
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=10000)
