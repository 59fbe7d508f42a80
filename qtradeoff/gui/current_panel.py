"""The Current configuration panel: what the edited configuration measured, against the fp32 baseline."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QGroupBox, QWidget

from qtradeoff.gui.formatting import format_bytes, latency_text, quality
from qtradeoff.gui.model_panel import selectable_form

FIELDS = (
    ("accuracy", "Accuracy", "Top-1 accuracy of the current configuration with its 95% Wilson interval."),
    ("delta", "vs fp32", "Accuracy change against the fp32 baseline on the same samples, in points."),
    ("latency", "Latency", "Batch-1 latency: measured on real kernels, or estimated from MACs and bytes."),
    ("weights", "Weights", "Weight storage of the current configuration and its share of fp32."),
    ("activations", "Peak activations", "Largest activation memory alive at once, at batch size 1."),
    ("note", "Note", "Warnings about the model (e.g. NaN weights) and what the measurement could not do for real "
                     "(e.g. no sparse kernel)."),
)


class CurrentPanel(QGroupBox):
    """Accuracy (with interval and change vs fp32), latency, memory and notes of one result."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Current configuration", parent)
        self.fields = selectable_form(self, FIELDS, wrap=True)

    def show(self, result: Any, baseline: Any = None, *, evaluating: bool = False) -> None:
        """Show ``result`` against ``baseline``; without a result, "evaluating…" if one is on its way (there is
        data) or dashes."""
        fields = self.fields
        if result is None:
            for label in fields.values():
                label.setText("—")
            if evaluating:
                fields["accuracy"].setText("evaluating…")
            return
        accuracy, ci = quality(result)
        name = "" if result.accuracy is not None else " agreement with fp32"
        fields["accuracy"].setText(f"{accuracy:.2%}{name}" + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")
                                   + f" on {result.eval_samples}")
        if baseline is not None and baseline.eval_samples == result.eval_samples:
            fields["delta"].setText(f"{(accuracy - quality(baseline)[0]) * 100:+.2f} pts")
        else:
            fields["delta"].setText("— (baseline on another subset)" if baseline is not None else "—")
        fields["latency"].setText(latency_text(result))
        provenance = getattr(result, "provenance", None)
        roofline = provenance.get("roofline") if isinstance(provenance, dict) else None
        calibration = roofline.get("calibration") if isinstance(roofline, dict) else None
        fields["latency"].setToolTip(f"The estimate is a roofline {calibration}." if calibration else "")
        executed = getattr(result, "executed_precisions", None) or {}
        int8 = sum(1 for precision in executed.values() if precision.startswith("int8"))
        fields["weights"].setText(f"{format_bytes(result.weight_bytes)} "
                                  f"({result.weight_bytes / max(1, result.fp32_weight_bytes):.1%} of fp32)"
                                  + (f", {int8}/{len(executed)} layers on int8 kernels" if executed else ""))
        fields["activations"].setText(format_bytes(result.peak_activation_bytes))
        provenance = getattr(result, "provenance", None)
        warnings = list(provenance.get("warnings") or ()) if isinstance(provenance, dict) else []
        notes = [f"Warning: {text}" for text in warnings] + [getattr(result, "measured_note", "") or ""]
        fields["note"].setText("; ".join(filter(None, notes)) or "—")
