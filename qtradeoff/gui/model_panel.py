"""The Model panel: what is loaded (file, format, trust, size, data) and how the fp32 baseline scored."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QLabel, QWidget

from qtradeoff.gui.formatting import format_bytes, quality

FIELDS = (
    ("name", "Name", "The loaded model file (drop another model file on the window to replace it)."),
    ("format", "Format", "How the file stores the model: safetensors, state dict, pickle, TorchScript…"),
    ("trust", "Trust", "Whether loading needed to run code from the file (only with your consent)."),
    ("params", "Parameters", "Number of parameters in the model."),
    ("size", "fp32 size", "Weight storage of the uncompressed fp32 model."),
    ("data", "Data", "The evaluation data (drop a dataset folder or tensor file to replace it)."),
    ("accuracy", "Baseline accuracy", "Top-1 accuracy of the fp32 model, with its 95% interval."),
    ("latency", "Baseline latency", "Median batch-1 latency of the fp32 model on real kernels."),
)


def selectable_form(box: QGroupBox, rows: tuple[tuple[str, str, str], ...], *, wrap: bool = False
                    ) -> dict[str, QLabel]:
    """Fill ``box`` with "name: value" rows whose values can be selected and copied; returns the value labels."""
    form = QFormLayout(box)
    fields: dict[str, QLabel] = {}
    for key, label, tip in rows:
        value = QLabel("—")
        value.setToolTip(tip)
        value.setWordWrap(wrap)
        value.setTextInteractionFlags(Qt.TextSelectableByMouse)
        name_label = QLabel(label)
        name_label.setToolTip(tip)
        form.addRow(name_label, value)
        fields[key] = value
    return fields


class ModelPanel(QGroupBox):
    """Shows a ModelSummary, the data it is evaluated on and the fp32 baseline's accuracy and latency."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.fields = selectable_form(self, FIELDS)
        # A measured baseline latency holds for every subset size: kept when a re-evaluation is only estimated.
        self._measured_ms: float | None = None

    def show_model(self, summary: Any) -> None:
        fields = self.fields
        self._measured_ms = None
        fields["name"].setText(summary.name)
        fields["name"].setToolTip(summary.path)
        fields["format"].setText(summary.format)
        fields["trust"].setText("trusted (code ran)" if summary.trusted else "safe (no code imported)")
        fields["params"].setText(f"{summary.params:,}")
        fields["size"].setText(format_bytes(summary.fp32_weight_bytes))
        fields["data"].setText(f"{summary.data_name or 'none'} ({summary.eval_samples_total} eval, "
                               f"{summary.calib_samples} calib)" if summary.data_name else "none: drop a dataset")
        # Without data nothing gets evaluated: say so instead of a spinner-like "evaluating…" that never ends.
        fields["accuracy"].setText("evaluating…" if summary.data_name else "— (no data)")
        fields["latency"].setText("measuring…" if summary.data_name else "— (no data)")

    def show_data(self, name: str, eval_samples: int, calib_samples: Any) -> None:
        self.fields["data"].setText(f"{name} ({eval_samples} eval, {calib_samples} calib)")

    def show_baseline(self, result: Any) -> None:
        accuracy, ci = quality(result)
        text = f"{accuracy:.2%}"
        if ci:
            text += f" [{ci[0]:.1%}, {ci[1]:.1%}] on {result.eval_samples}"
        self.fields["accuracy"].setText(text)
        measured = result.latency_ms(1, measured=True)
        estimated = result.latency_ms(1, measured=False)
        if measured is None:
            measured = self._measured_ms
        self._measured_ms = measured
        self.fields["latency"].setText(
            f"{measured:.3f} ms (batch 1, measured)" if measured is not None
            else f"≈{estimated:.3f} ms (estimated)" if estimated is not None else "n/a")
