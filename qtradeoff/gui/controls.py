"""The global controls: labelled sliders and boxes for the configuration defaults, the pruning threshold (with the
sparsity it produces), the evaluation-subset size (with the confidence interval it buys) and the latency switch.

The widget only reports edits (``edited(field, value, merge_key)``) and shows a configuration it is given; it never
builds configurations itself.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from qtradeoff.core.config import ROUNDINGS, WEIGHT_RANGES
from qtradeoff.core.engine.estimate import format_seconds
from qtradeoff.core.precision import label
from qtradeoff.gui import layer_table
from qtradeoff.gui.backend import THRESHOLD_STEP, THRESHOLD_STEPS
from qtradeoff.gui.formatting import RUNTIME_LABELS
from qtradeoff.gui.layer_table import ACTIVATION_PRECISION_ORDER, PRECISION_ORDER

EVAL_SIZE_STEP = 25
SMOOTHQUANT_STEPS = 10  # the SmoothQuant slider: off, then alpha 0.1 .. 1.0


def runtime_choices() -> list[tuple[str, tuple[str, ...]]]:
    """The "also time on" entries: torch only, each installed runtime, and all of them when several are."""
    import importlib.util

    installed = [r for r in RUNTIME_LABELS if importlib.util.find_spec(r) is not None]
    choices = [("torch only", ())] + [(f"{RUNTIME_LABELS[r]} too", (r,)) for r in installed]
    if len(installed) > 1:
        choices.append(("ONNX Runtime and OpenVINO too", tuple(installed)))
    return choices


def wilson_half_width(p: float, n: int, z: float = 1.96) -> float:
    """Half-width of the 95% Wilson score interval (the core's) for accuracy ``p`` measured on ``n`` samples."""
    from qtradeoff.core.engine.measure import wilson_interval  # lazy: keeps torch out of the window's first paint

    if n <= 0:
        return float("nan")
    low, high = wilson_interval(round(p * n), n, z)
    return (high - low) / 2


class LabelledSlider(QWidget):
    """A horizontal slider over discrete steps with a text label describing the current step."""

    valueChanged = Signal(int)  # noqa: N815 - Qt naming

    def __init__(self, maximum: int, tooltip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, maximum)
        self.slider.setPageStep(1)
        self.slider.setTickPosition(QSlider.TicksBelow)
        self.slider.setToolTip(tooltip)
        self.label = QLabel()
        self.label.setMinimumWidth(150)
        self.label.setToolTip(tooltip)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self.slider.valueChanged.connect(self.valueChanged)

    def value(self) -> int:
        return self.slider.value()

    def setValue(self, value: int) -> None:  # noqa: N802
        self.slider.setValue(value)

    def setText(self, text: str) -> None:  # noqa: N802
        self.label.setText(text)


class GlobalControls(QGroupBox):
    """Defaults of the configuration, edited with labelled sliders and boxes."""

    edited = Signal(str, object, str)  # field, value, merge key ("" when edits should not merge)
    measure_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Defaults for every layer", parent)
        self._syncing = False
        self._sparsity_curve: tuple[float, ...] = ()
        self._eval_total = 0
        self._baseline_accuracy: float | None = None

        self.weight_precision = LabelledSlider(
            len(PRECISION_ORDER) - 1,
            "Precision the weights are stored in, from fp32 (left) down to 2-bit integers, then lookup tables "
            "(k-means codebooks of 2^bits values, lut8 down to lut2; right).")
        self.activation_precision = LabelledSlider(
            len(ACTIVATION_PRECISION_ORDER) - 1,
            "Precision of every layer's input activations, from fp32 (left) down to 2-bit integers (right).")
        self.granularity = QComboBox()
        self.granularity.addItems(["per_channel", "per_tensor"])
        self.granularity.setToolTip("Whether integer weights get one scale per output channel or one per tensor.")
        self.rounding = QComboBox()
        for name in ROUNDINGS:
            self.rounding.addItem(layer_table.ROUNDING_LABELS[name], name)
        self.rounding.setToolTip(
            "How integer weights are rounded onto their grid: to nearest, or with the calibration split — bias "
            "correction (cancels each layer's mean output shift), AdaRound (learned up/down rounding) or GPTQ "
            "(error feedback through the inputs' Hessian). The algorithms run once per layer and setting.")
        self.act_order = QCheckBox("act-order")
        self.act_order.setToolTip(
            "GPTQ's act-order: round the columns in order of decreasing input energy (the Hessian's diagonal) "
            "instead of their natural order; for the layers rounded with GPTQ. Often better on larger models, "
            "sometimes worse on small ones.")
        self.weight_range = QComboBox()
        for name, text in zip(WEIGHT_RANGES, ("min-max", "MSE"), strict=True):
            self.weight_range.addItem(text, name)
        self.weight_range.setToolTip(
            "How the integer weight grid is chosen, before any rounding: min-max covers every weight; MSE shrinks "
            "the range (per channel or per tensor) to the clipping of least squared rounding error. Same storage.")
        self.weight_symmetric = QCheckBox("Symmetric weights")
        self.weight_symmetric.setToolTip("Symmetric integer weights use a zero point of 0 (cheaper kernels).")
        self.activation_symmetric = QCheckBox("Symmetric activations")
        self.activation_symmetric.setToolTip(
            "Symmetric activation grids are centred on 0; asymmetric ones fit post-ReLU ranges better.")
        self.calibration = QComboBox()
        self.calibration.addItems(["minmax", "percentile", "mse"])
        self.calibration.setToolTip(
            "How activation ranges are set from the calibration split: min-max, a percentile, or MSE-optimal.")
        self.equalization = QCheckBox("Cross-layer equalization")
        self.equalization.setToolTip(
            "Rescale consecutive conv/linear layers with ReLU-family activations between them so their channel "
            "ranges match (Nagel et al. 2019) before quantizing: same fp32 function, sometimes much better at "
            "low bit-widths, sometimes worse.")
        self.smoothquant = LabelledSlider(
            SMOOTHQUANT_STEPS,
            "SmoothQuant (Xiao et al. 2023): move activation outliers into the weights with strength alpha, from "
            "calibration statistics; off at the left.")
        self.threshold = LabelledSlider(
            THRESHOLD_STEPS,
            "Prune weights whose magnitude is below this many standard deviations of their layer's weights.")
        self.threshold.slider.setTickInterval(10)
        self.eval_size = LabelledSlider(
            1, "Number of evaluation samples: more samples give a narrower confidence interval but take longer.")
        # What the engine proposes for this model (an estimate from a timed fp32 forward), and a button to take it.
        self.subset_hint = QLabel("")
        self.subset_hint.setWordWrap(True)
        self.subset_hint.setToolTip("Estimated from a timed fp32 forward of this model on this machine: a guide, "
                                    "not a measurement.")
        self.use_suggested = QPushButton("Use")
        self.use_suggested.setToolTip("Set the evaluation subset to the suggested size.")
        self.use_suggested.setVisible(False)
        self._hints: dict = {}
        self.measure_latency = QCheckBox("Measure latency on real kernels")
        self.measure_latency.setToolTip(
            "Time every edit on real CPU kernels (slower); otherwise latency is estimated from MACs and bytes.")
        # Other runtimes a measured point is also timed on (its ONNX export, interleaved with fp32's): only those
        # installed here are offered.
        self.also_time_on = QComboBox()
        for text, runtimes in runtime_choices():
            self.also_time_on.addItem(text, ",".join(runtimes))  # a string: Qt keeps it as it is
        self.also_time_on.setToolTip(
            "Measured points are also exported as ONNX and timed on these runtimes, so the plot can show the "
            "latency of the runtime you deploy on (slower: each runtime builds and times its own model).")
        self.also_time_on.setEnabled(False)
        self.measure_latency.toggled.connect(self.also_time_on.setEnabled)
        self.measure_now = QPushButton("Measure this configuration")
        self.measure_now.setToolTip("Time the current configuration on real kernels once, without changing it.")

        symmetry = QHBoxLayout()
        symmetry.addWidget(self.weight_symmetric)
        symmetry.addWidget(self.activation_symmetric)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("Weight precision", self.weight_precision)
        form.addRow("Activation precision", self.activation_precision)
        form.addRow("Granularity", self.granularity)
        rounding_row = QHBoxLayout()
        rounding_row.addWidget(self.rounding, 1)
        rounding_row.addWidget(self.act_order)
        form.addRow("Weight rounding", rounding_row)
        form.addRow("Weight range", self.weight_range)
        form.addRow("Symmetry", symmetry)
        form.addRow("Calibration", self.calibration)
        form.addRow("SmoothQuant α", self.smoothquant)
        form.addRow("Equalization", self.equalization)
        form.addRow("Pruning threshold", self.threshold)
        form.addRow("Evaluation subset", self.eval_size)
        hint_row = QHBoxLayout()
        hint_row.addWidget(self.subset_hint, 1)
        hint_row.addWidget(self.use_suggested)
        form.addRow("", hint_row)
        latency = QHBoxLayout()
        latency.addWidget(self.measure_latency)
        latency.addWidget(self.measure_now)
        latency.addStretch(1)
        runtimes_row = QHBoxLayout()
        runtimes_row.addWidget(QLabel("Also time measured points on"))
        runtimes_row.addWidget(self.also_time_on, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(latency)
        layout.addLayout(runtimes_row)

        self.weight_precision.valueChanged.connect(
            lambda i: self._emit("weight_precision", PRECISION_ORDER[i], "weight_precision"))
        self.activation_precision.valueChanged.connect(
            lambda i: self._emit("activation_precision", ACTIVATION_PRECISION_ORDER[i], "activation_precision"))
        self.granularity.currentTextChanged.connect(lambda t: self._emit("granularity", t, ""))
        self.rounding.currentIndexChanged.connect(lambda i: self._emit("rounding", ROUNDINGS[i], ""))
        self.act_order.toggled.connect(lambda b: self._emit("gptq_act_order", b, ""))
        self.weight_range.currentIndexChanged.connect(lambda i: self._emit("weight_range", WEIGHT_RANGES[i], ""))
        self.weight_symmetric.toggled.connect(lambda b: self._emit("weight_symmetric", b, ""))
        self.activation_symmetric.toggled.connect(lambda b: self._emit("activation_symmetric", b, ""))
        self.calibration.currentTextChanged.connect(lambda t: self._emit("calibration", t, ""))
        self.equalization.toggled.connect(lambda b: self._emit("equalization", "cle" if b else "none", ""))
        self.smoothquant.valueChanged.connect(
            lambda i: self._emit("smoothquant", round(i / SMOOTHQUANT_STEPS, 2) if i else None, "smoothquant"))
        self.threshold.valueChanged.connect(lambda i: self._emit("threshold", round(i * THRESHOLD_STEP, 4),
                                                                 "threshold"))
        self.eval_size.valueChanged.connect(self._eval_size_moved)
        self.measure_now.clicked.connect(self.measure_requested)
        self.use_suggested.clicked.connect(self._use_suggested)
        self._update_labels()

    # -- model facts ---------------------------------------------------------------------------------------------
    def other_runtimes(self) -> tuple[str, ...]:
        """The runtimes besides torch that measured points are also timed on (empty: torch only)."""
        return tuple(r for r in str(self.also_time_on.currentData() or "").split(",") if r)

    def set_other_runtimes(self, runtimes: tuple[str, ...] | list[str]) -> None:
        """Choose the entry for ``runtimes`` (as saved in the settings); unknown or uninstalled ones: torch only."""
        index = self.also_time_on.findData(",".join(runtimes))
        self.also_time_on.setCurrentIndex(max(index, 0))

    def set_model_facts(self, sparsity_curve: tuple[float, ...], eval_total: int) -> None:
        self._sparsity_curve = tuple(sparsity_curve)
        self._eval_total = int(eval_total)
        self._syncing = True
        try:
            steps = max(1, math.ceil(self._eval_total / EVAL_SIZE_STEP))
            self.eval_size.slider.setRange(1, steps)
        finally:
            self._syncing = False
        self._update_labels()

    def set_subset_hints(self, hints: dict | None) -> None:
        """The engine's subset proposal for the loaded model (plain values, every figure an estimate), or None."""
        self._hints = dict(hints or {})
        self._update_labels()

    def _seconds_for(self, samples: int) -> float | None:
        """Estimated seconds of one edit's evaluation on ``samples``, scaled from the proposal's own estimate."""
        proposed, seconds = self._hints.get("proposed_eval_size"), self._hints.get("proposed_seconds")
        if not proposed or seconds is None:
            return None
        return float(seconds) * samples / float(proposed)

    def _use_suggested(self) -> None:
        proposed = int(self._hints.get("proposed_eval_size") or 0)
        if proposed:
            self.set_eval_size(proposed)
            self.edited.emit("eval_size", self.eval_size_value(), "eval_size")

    def set_baseline_accuracy(self, accuracy: float | None) -> None:
        self._baseline_accuracy = accuracy
        self._update_labels()

    def eval_size_value(self) -> int:
        """Current evaluation subset size in samples (the last step is the whole split)."""
        return min(self._eval_total, self.eval_size.value() * EVAL_SIZE_STEP) if self._eval_total else 0

    def set_eval_size(self, samples: int) -> None:
        self._syncing = True
        try:
            self.eval_size.setValue(max(1, math.ceil(samples / EVAL_SIZE_STEP)))
        finally:
            self._syncing = False
        self._update_labels()

    # -- showing a configuration ---------------------------------------------------------------------------------
    def show_config(self, config: Any) -> None:
        """Reflect a configuration's defaults in the widgets without emitting edits."""
        self._syncing = True
        try:
            self.weight_precision.setValue(PRECISION_ORDER.index(config.weight.precision))
            self.activation_precision.setValue(ACTIVATION_PRECISION_ORDER.index(config.activation.precision))
            self.granularity.setCurrentText(config.weight.granularity)
            self.rounding.setCurrentIndex(ROUNDINGS.index(config.weight.rounding))
            self.act_order.setChecked(config.weight.gptq_act_order)
            self.weight_range.setCurrentIndex(WEIGHT_RANGES.index(config.weight.range))
            self.weight_symmetric.setChecked(config.weight.symmetric)
            self.activation_symmetric.setChecked(config.activation.symmetric)
            self.calibration.setCurrentText(config.activation.calibration)
            self.equalization.setChecked(getattr(config, "equalization", "none") == "cle")
            alpha = config.activation.smoothquant
            self.smoothquant.setValue(0 if alpha is None else max(1, round(alpha * SMOOTHQUANT_STEPS)))
            prune = config.prune
            step = round(prune.threshold / THRESHOLD_STEP) if prune.method == "magnitude" and prune.relative else 0
            self.threshold.setValue(min(THRESHOLD_STEPS, max(0, step)))
        finally:
            self._syncing = False
        self._update_labels()

    def _emit(self, field: str, value: Any, merge_key: str) -> None:
        self._update_labels()
        if not self._syncing:
            self.edited.emit(field, value, merge_key)

    def _eval_size_moved(self, _value: int) -> None:
        self._update_labels()
        if not self._syncing:
            self.edited.emit("eval_size", self.eval_size_value(), "eval_size")

    def _update_labels(self) -> None:
        self.weight_precision.setText(label(PRECISION_ORDER[self.weight_precision.value()]))
        self.activation_precision.setText(label(ACTIVATION_PRECISION_ORDER[self.activation_precision.value()]))
        alpha = self.smoothquant.value()
        self.smoothquant.setText(f"α = {alpha / SMOOTHQUANT_STEPS:.1f}" if alpha else "off")
        index = self.threshold.value()
        threshold = index * THRESHOLD_STEP
        if index == 0:
            self.threshold.setText("off (0 % sparse)")
        elif self._sparsity_curve:
            sparsity = self._sparsity_curve[min(index, len(self._sparsity_curve) - 1)]
            self.threshold.setText(f"{threshold:.2f} σ → {sparsity:.1%} sparse")
        else:
            self.threshold.setText(f"{threshold:.2f} σ")
        samples = self.eval_size_value()
        if samples and self._baseline_accuracy is not None:
            half = wilson_half_width(self._baseline_accuracy, samples)
            self.eval_size.setText(f"{samples} samples → ±{half * 100:.1f} pts")
        elif samples:
            self.eval_size.setText(f"{samples} samples")
        else:
            self.eval_size.setText("no data")
        # The time estimate and the proposal share one short line under the slider (the column is narrow); the
        # whole-split time sits in its tooltip. Every figure there is an estimate and says so.
        seconds = self._seconds_for(samples) if samples else None
        proposed = int(self._hints.get("proposed_eval_size") or 0)
        parts = [f"≈{format_seconds(seconds)} per evaluation (estimate)"] if seconds is not None else []
        if proposed and proposed != samples:
            parts.append(f"suggested {proposed}")
        warning = self._hints.get("memory_warning") or ""
        self.subset_hint.setText("; ".join(parts) + (f"\nWarning: {warning}" if warning else ""))
        if proposed:
            each = format_seconds(self._hints.get("proposed_seconds") or 0.0)
            whole = format_seconds(self._hints.get("all_samples_seconds") or 0.0)
            self.subset_hint.setToolTip(
                f"Suggested: {proposed} samples, ≈{each} per evaluation; the whole split ≈{whole}. Estimated from a "
                "timed fp32 forward of this model on this machine: a guide, not a measurement.")
        self.use_suggested.setVisible(bool(proposed) and proposed != samples)

