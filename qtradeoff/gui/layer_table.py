"""The per-layer table: a QAbstractTableModel over the model's layers and the edited configuration, plus the
combobox/spinbox delegates. Edits never mutate anything here, not even a lock tick: they are handed to
``edit_handler`` / ``lock_handler``, which push an undoable configuration change, and the table shows the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from qtradeoff.core.precision import DISPLAY_ORDER, bits_of, is_integer, is_lut, label
from qtradeoff.gui.editing import ROUNDING_CHOICES, rounding_choice, rounding_choice_label

# Slider and combobox order: floats from widest to narrowest, then integers from widest to narrowest, then the
# lookup-table (k-means codebook) precisions, which are for weights only.
PRECISION_ORDER: tuple[str, ...] = DISPLAY_ORDER
ACTIVATION_PRECISION_ORDER: tuple[str, ...] = tuple(name for name in DISPLAY_ORDER if not is_lut(name))

COLUMNS = ("Lock · Layer", "Type", "Params", "MACs", "Size share", "Weights", "Activations", "Sparsity",
           "Sensitivity Δ", "Rounding", "Time vs fp32")
COL_NAME, COL_TYPE, COL_PARAMS, COL_MACS, COL_SHARE, COL_WEIGHT, COL_ACT, COL_SPARSITY, COL_SENS, COL_ROUND = range(10)
COL_PROFILE = 10
EDITABLE = {COL_WEIGHT: "weight_precision", COL_ACT: "activation_precision", COL_SPARSITY: "sparsity",
            COL_ROUND: "rounding"}
HEADER_TIPS = {
    COL_NAME: ("Tick a layer to lock it (automatic search leaves it as it is); then its fully-qualified name in "
               "the model."),
    COL_TYPE: "The layer's module type.",
    COL_PARAMS: "Number of weight parameters in the layer.",
    COL_MACS: "Multiply-accumulates per sample in one forward pass.",
    COL_SHARE: "The layer's share of the fp32 model's weight storage.",
    COL_WEIGHT: "Precision the layer's weights are stored in; double-click to override the default.",
    COL_ACT: "Precision of the layer's input activations; double-click to override the default.",
    COL_SPARSITY: "Fraction of the layer's weights pruned to zero; double-click to set a target sparsity.",
    COL_SENS: ("Change in accuracy when only this layer is compressed (negative: accuracy lost, the same sign as "
               "'vs fp32'), averaged over 8/6/4/3/2-bit weights and 25/50/75 % pruning (filled in by the sensitivity "
               "analysis; click the header to sort, most sensitive first)."),
    COL_ROUND: ("How the layer's integer weights are rounded onto their grid: nearest, or with calibration data "
                "(bias correction, AdaRound, GPTQ, GPTQ act-order), and how the grid is chosen (min-max, or "
                "'MSE range': the clipping of least squared rounding error); double-click to override the "
                "default."),
    COL_PROFILE: ("Measured time of the layer in the current configuration's real-kernel model over its time in fp32 "
                  "(below 1×: faster here), with both times; filled in by “Profile layers” in the Graph tab."),
}
SORT_ROLE = Qt.UserRole + 1  # numbers to sort by (the display text of "1.18 M" would sort as a string)
# The roles data() answers (any other returns None before any work).
_ROLES = frozenset({Qt.DisplayRole, Qt.EditRole, SORT_ROLE, Qt.CheckStateRole, Qt.BackgroundRole, Qt.ToolTipRole,
                    Qt.ForegroundRole, Qt.TextAlignmentRole, Qt.FontRole})
OVERRIDE_TINT = QColor(255, 236, 179)  # amber: a cell that differs from the global default
LOCK_TINT = QColor(207, 226, 243)  # pale blue: a layer the configuration locks (searches leave it as it is)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def human_count(value: int | float) -> str:
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


class LayerTableModel(QAbstractTableModel):
    """Rows are the model's compressible layers; the weight/activation/sparsity columns show the resolved config."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._layers: list[Any] = []
        self._config: Any = None
        self._total_params = 1
        self._threshold_index = 0
        self._layer_curve: dict[str, tuple[float, ...]] = {}
        self._sensitivity: dict[str, float] = {}
        self._profile: Any = None  # the core's LayerProfile of the last "Profile layers", for its config only
        self._timings: dict[str, Any] = {}
        # Called with (layer names, field, value) when a cell is edited; the window turns it into an undo command.
        self.edit_handler: Callable[[list[str], str, Any], None] | None = None
        # Called with (layer names, locked) when a name's tick is toggled; likewise an undoable edit of the config.
        self.lock_handler: Callable[[list[str], bool], None] | None = None

    # -- feeding -------------------------------------------------------------------------------------------------
    def set_model(self, summary: Any, config: Any = None, threshold_index: int = 0) -> None:
        """A new model's layers, shown under ``config`` (set inside the reset: one sort of the rows, not a reset
        and then a change of every row)."""
        self.beginResetModel()
        if config is not None:
            self._config, self._threshold_index = config, threshold_index
        self._layers = [layer for layer in summary.layers if getattr(layer, "compressible", True)]
        self._total_params = max(1, sum(int(layer.params) for layer in self._layers))
        self._layer_curve = dict(summary.layer_sparsity_curve)
        self._sensitivity = {}
        self._profile, self._timings = None, {}
        self.endResetModel()

    def set_config(self, config: Any, threshold_index: int = 0) -> None:
        self._config = config
        self._threshold_index = threshold_index
        if self._layers:  # from the name column: its tick shows whether the config locks the layer
            self.dataChanged.emit(self.index(0, COL_NAME), self.index(len(self._layers) - 1, COL_PROFILE))

    def set_sensitivity(self, sensitivity: dict[str, float]) -> None:
        """Fill the sensitivity column: accuracy drop (fraction, e.g. 0.012) per layer name; missing = empty."""
        self._sensitivity = dict(sensitivity)
        if self._layers:
            self.dataChanged.emit(self.index(0, COL_SENS), self.index(len(self._layers) - 1, COL_SENS))

    def sensitivity(self) -> dict[str, float]:
        """The sensitivity column's accuracy drops (fraction) per layer name; empty before an analysis."""
        return dict(self._sensitivity)

    def set_profile(self, profile: Any) -> None:
        """Fill the time column from a LayerProfile (None clears it)."""
        self._profile = profile
        self._timings = profile.by_layer() if profile is not None else {}
        if self._layers:
            self.dataChanged.emit(self.index(0, COL_PROFILE), self.index(len(self._layers) - 1, COL_PROFILE))

    def profile(self) -> Any:
        return self._profile

    def profile_is_current(self) -> bool:
        """Whether the shown profile was measured for the configuration being edited."""
        return self._profile is not None and self._config is not None and \
            self._profile.config_key == self._config.key()

    def sensitivity_scale(self) -> float:
        """The largest accuracy drop in the sensitivity column (bars are drawn relative to it); 0 when empty."""
        return max((value for value in self._sensitivity.values() if value > 0), default=0.0)

    def is_locked(self, row: int) -> bool:
        """Whether the configuration locks the layer of ``row`` (by name, ``re:`` or ``type:`` selector)."""
        layer = self._layers[row]
        return self._config is not None and self._config.is_locked(layer.name, layer.kind)

    def locked_layers(self) -> tuple[str, ...]:
        """The layers the configuration locks (ticked in the name column), in execution order."""
        return tuple(layer.name for row, layer in enumerate(self._layers) if self.is_locked(row))

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self._layers]

    def layer_at(self, row: int) -> str:
        return self._layers[row].name

    # -- values --------------------------------------------------------------------------------------------------
    def _override(self, name: str) -> Any:
        if self._config is None:
            return None
        return self._config.overrides().get(name)

    def is_overridden(self, row: int, column: int) -> bool:
        override = self._override(self._layers[row].name)
        if override is None:
            return False
        if column == COL_WEIGHT:
            return "precision" in override.weight
        if column == COL_ACT:
            return "precision" in override.activation
        if column == COL_SPARSITY:
            return bool(override.prune)
        if column == COL_ROUND:
            return any(name in override.weight for name in ("rounding", "gptq_act_order", "range"))
        return False

    def _kind(self, name: str) -> str:
        """Module class of layer ``name`` (what ``type:`` selectors match)."""
        return next((layer.kind for layer in self._layers if layer.name == name), "")

    def sparsity_of(self, name: str) -> float:
        """Sparsity the resolved prune settings produce for one layer (target, or the threshold's curve)."""
        if self._config is None:
            return 0.0
        prune = self._config.resolve(name, self._kind(name)).prune
        if prune.method == "none":
            return 0.0
        if prune.sparsity is not None:
            return float(prune.sparsity)
        if prune.method == "nm":
            return 1.0 - prune.n / prune.m
        curve = self._layer_curve.get(name)
        if curve and prune.relative:
            return curve[min(self._threshold_index, len(curve) - 1)]
        return 0.0

    def _default_text(self, column: int) -> str:
        if self._config is None:
            return ""
        if column == COL_WEIGHT:
            return self._config.weight.precision
        if column == COL_ACT:
            return self._config.activation.precision
        if column == COL_ROUND:
            return rounding_choice_label(rounding_choice(self._config.weight))
        prune = self._config.prune
        if prune.method == "none":
            return "no pruning"
        if prune.sparsity is not None:
            return f"{prune.sparsity:.0%} sparsity"
        return f"threshold {prune.threshold:g}{' σ' if prune.relative else ''}"

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._layers)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Horizontal:
            return None
        if role == Qt.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ToolTipRole:
            return HEADER_TIPS.get(section)
        return None

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        base = Qt.ItemIsEnabled | Qt.ItemIsSelectable
        if index.column() == COL_NAME:
            return base | Qt.ItemIsUserCheckable if self._config is not None else base
        if index.column() in EDITABLE and self._config is not None:
            return base | Qt.ItemIsEditable
        return base

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        # the view asks every cell for a dozen roles each time it sizes or paints it (decoration, size hint,
        # accessibility, ...): the ones this model never answers return at once (sizing the columns of an 88-layer
        # model to their contents took 75-160 ms of the GUI thread before)
        if role not in _ROLES or not index.isValid() or self._config is None and index.column() in EDITABLE:
            return None
        row, column = index.row(), index.column()
        layer = self._layers[row]
        if role in (Qt.DisplayRole, Qt.EditRole):
            return self._value(layer, column, role)
        if role == SORT_ROLE:
            return self._sort_key(row, layer, column)
        if column == COL_NAME:
            if role == Qt.CheckStateRole:
                return Qt.Checked if self.is_locked(row) else Qt.Unchecked
            if role == Qt.BackgroundRole and self.is_locked(row):
                return QBrush(LOCK_TINT)
        if column == COL_PROFILE and role in (Qt.ToolTipRole, Qt.ForegroundRole):
            return self._profile_extra(layer.name, role)
        if role == Qt.TextAlignmentRole and column in (COL_PARAMS, COL_MACS, COL_SHARE, COL_SPARSITY, COL_SENS,
                                                       COL_PROFILE):
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if column in EDITABLE and self.is_overridden(row, column):
            if role == Qt.FontRole:
                font = QFont()
                font.setBold(True)
                return font
            if role == Qt.BackgroundRole:
                return QBrush(OVERRIDE_TINT)
            if role == Qt.ToolTipRole:
                return f"This layer overrides default {self._default_text(column)}; edit it or clear its overrides."
        if role == Qt.ToolTipRole:
            if column in EDITABLE:
                return f"Follows the default ({self._default_text(column)}); double-click to override it."
            if column == COL_NAME:
                text = f"{layer.name} ({layer.kind}), output shape {tuple(getattr(layer, 'output_shape', ()))}. "
                if self.is_locked(row):
                    return text + "Locked: automatic search leaves it as it is; untick to unlock."
                return text + "Tick it to lock the layer: automatic search leaves it as it is."
            return HEADER_TIPS.get(column)
        return None

    def _profile_extra(self, name: str, role: int) -> Any:
        timing = self._timings.get(name)
        if role == Qt.ForegroundRole:  # a profile of another configuration is shown greyed
            return QBrush(QColor(140, 140, 140)) if timing is not None and not self.profile_is_current() else None
        if timing is None:
            return HEADER_TIPS[COL_PROFILE] if self._profile is None else \
                "No time: the layer is not a module of the real-kernel model (its time is in the glue)."
        parts = [f"{name}: {_ms(timing.config_ms)} in {timing.executed} vs {_ms(timing.fp32_ms)} in fp32 "
                 f"(spread ±{timing.config_spread:.0%} / ±{timing.fp32_spread:.0%}"
                 f"{', NOISY' if timing.noisy else ''}). {self._profile.describe()}"]
        if not self.profile_is_current():
            parts.append("Measured for another configuration: press “Profile layers” again.")
        return " ".join(parts)

    def _value(self, layer: Any, column: int, role: int) -> Any:
        if column == COL_NAME:
            return layer.name
        if column == COL_TYPE:
            kind = layer.kind
            groups = getattr(layer, "groups", 1)
            return f"{kind} (g={groups})" if groups and groups > 1 else kind
        if column == COL_PARAMS:
            return human_count(layer.params)
        if column == COL_MACS:
            return human_count(layer.macs)
        if column == COL_SHARE:
            return f"{layer.params / self._total_params:.1%}"
        settings = self._config.resolve(layer.name, layer.kind)
        if column == COL_WEIGHT:
            if role != Qt.DisplayRole:
                return settings.weight.precision
            return f"{label('fp32')} (skip)" if settings.skip else label(settings.weight.precision)
        if column == COL_ACT:
            return settings.activation.precision if role != Qt.DisplayRole else label(settings.activation.precision)
        if column == COL_SPARSITY:
            sparsity = self.sparsity_of(layer.name)
            return sparsity if role == Qt.EditRole else f"{sparsity:.1%}"
        if column == COL_SENS:
            value = self._sensitivity.get(layer.name)
            return "" if value is None else f"{-value * 100:+.2f} pts"  # a drop, shown as the change in accuracy
        if column == COL_PROFILE:
            timing = self._timings.get(layer.name)
            ratio = None if timing is None else timing.ratio
            return "" if ratio is None else f"{ratio:.2f}×{' ~' if timing.noisy else ''}"
        if column == COL_ROUND:
            choice = rounding_choice(settings.weight)
            if role != Qt.DisplayRole:
                return choice
            # only integer weights are rounded onto a grid: say so rather than show a choice with no effect
            applies = not settings.skip and is_integer(settings.weight.precision)
            return rounding_choice_label(choice) if applies else f"({rounding_choice_label(choice)})"
        return None

    def _sort_key(self, row: int, layer: Any, column: int) -> Any:
        if column == COL_NAME:
            return row  # execution order
        if column == COL_TYPE:
            return layer.kind
        if column in (COL_PARAMS, COL_SHARE):
            return int(layer.params)
        if column == COL_MACS:
            return int(layer.macs)
        if self._config is None:
            return 0
        settings = self._config.resolve(layer.name, layer.kind)
        if column == COL_WEIGHT:
            return 32 if settings.skip else bits_of(settings.weight.precision)
        if column == COL_ACT:
            return bits_of(settings.activation.precision)
        if column == COL_SPARSITY:
            return self.sparsity_of(layer.name)
        if column == COL_SENS:
            drop = self._sensitivity.get(layer.name)
            return float("inf") if drop is None else -drop  # as displayed; layers not analysed sort last
        if column == COL_ROUND:
            return ROUNDING_CHOICES.index(rounding_choice(settings.weight))
        if column == COL_PROFILE:
            timing = self._timings.get(layer.name)
            ratio = None if timing is None else timing.ratio
            return float("inf") if ratio is None else ratio
        return 0

    def setData(self, index: QModelIndex, value: Any, role: int = Qt.EditRole) -> bool:  # noqa: N802
        if role == Qt.CheckStateRole and index.column() == COL_NAME:
            if self.lock_handler is None or self._config is None:
                return False
            # the tick follows once the edited configuration comes back through set_config
            self.lock_handler([self._layers[index.row()].name], value in (Qt.Checked, Qt.Checked.value, 2, True))
            return True
        if role != Qt.EditRole or index.column() not in EDITABLE or self.edit_handler is None:
            return False
        self.edit_handler([self._layers[index.row()].name], EDITABLE[index.column()], value)
        return True


class PrecisionDelegate(QStyledItemDelegate):
    """Edits a precision cell with a combobox of every precision, widest first."""

    def createEditor(self, parent: QWidget, option: Any, index: QModelIndex) -> QWidget:  # noqa: N802
        editor = QComboBox(parent)
        for name in (ACTIVATION_PRECISION_ORDER if index.column() == COL_ACT else PRECISION_ORDER):
            editor.addItem(label(name), name)
        editor.setToolTip("Precision for this layer; it overrides the global default.")
        return editor

    def setEditorData(self, editor: QComboBox, index: QModelIndex) -> None:  # noqa: N802
        value = index.data(Qt.EditRole)
        found = editor.findData(value)
        if found >= 0:
            editor.setCurrentIndex(found)

    def setModelData(self, editor: QComboBox, model: Any, index: QModelIndex) -> None:  # noqa: N802
        model.setData(index, editor.currentData(), Qt.EditRole)


ROUNDING_LABELS = {"nearest": "nearest", "bias_correction": "bias correction", "adaround": "AdaRound",
                   "gptq": "GPTQ"}


class RoundingDelegate(QStyledItemDelegate):
    """Edits a rounding cell with a combobox of the rounding choices (algorithm, GPTQ's act-order, weight range)."""

    def createEditor(self, parent: QWidget, option: Any, index: QModelIndex) -> QWidget:  # noqa: N802
        editor = QComboBox(parent)
        for choice in ROUNDING_CHOICES:
            editor.addItem(rounding_choice_label(choice), choice)
        editor.setToolTip("How this layer's integer weights are rounded, and onto which grid (min-max or MSE "
                          "range); it overrides the global default.")
        return editor

    def setEditorData(self, editor: QComboBox, index: QModelIndex) -> None:  # noqa: N802
        found = editor.findData(index.data(Qt.EditRole))
        if found >= 0:
            editor.setCurrentIndex(found)

    def setModelData(self, editor: QComboBox, model: Any, index: QModelIndex) -> None:  # noqa: N802
        model.setData(index, editor.currentData(), Qt.EditRole)


class SparsityDelegate(QStyledItemDelegate):
    """Edits a target sparsity in percent with a spin box."""

    def createEditor(self, parent: QWidget, option: Any, index: QModelIndex) -> QWidget:  # noqa: N802
        editor = QDoubleSpinBox(parent)
        editor.setRange(0.0, 99.0)
        editor.setDecimals(1)
        editor.setSingleStep(5.0)
        editor.setSuffix(" %")
        editor.setToolTip("Target fraction of this layer's weights pruned by magnitude.")
        return editor

    def setEditorData(self, editor: QDoubleSpinBox, index: QModelIndex) -> None:  # noqa: N802
        editor.setValue(float(index.data(Qt.EditRole) or 0.0) * 100.0)

    def setModelData(self, editor: QDoubleSpinBox, model: Any, index: QModelIndex) -> None:  # noqa: N802
        editor.interpretText()
        model.setData(index, round(editor.value() / 100.0, 4), Qt.EditRole)


class SensitivityBarDelegate(QStyledItemDelegate):
    """Draws a layer's accuracy drop as a bar (relative to the most sensitive layer) behind its text."""

    BAR = QColor(230, 120, 60, 150)

    def __init__(self, model: LayerTableModel, parent: Any = None) -> None:
        super().__init__(parent)
        self._model = model

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        scale = self._model.sensitivity_scale()
        value = index.data(SORT_ROLE)
        if scale > 0 and isinstance(value, float) and value > 0 and not option.state & QStyle.State_Selected:
            rect = QRectF(option.rect).adjusted(2, 3, -2, -3)
            rect.setWidth(rect.width() * min(1.0, value / scale))
            painter.save()
            painter.fillRect(rect, self.BAR)
            painter.restore()
        super().paint(painter, option, index)
