"""How numbers read in the window: byte sizes, the quality figure of a result (top-1 accuracy, or agreement
with fp32 when the data has no labels), and its batch-1 latency with its spread.
"""

from __future__ import annotations

from typing import Any


def format_bytes(value: float) -> str:
    if value >= 1 << 20:
        return f"{value / (1 << 20):.2f} MiB"
    return f"{value / 1024:.1f} KiB"


def quality(result: Any) -> tuple[float, tuple[float, float] | None]:
    """A result's headline quality and its 95% interval: accuracy when labelled, else agreement with fp32."""
    if result.accuracy is not None:
        return result.accuracy, result.accuracy_ci95
    return result.agreement, result.agreement_ci95


RUNTIME_LABELS = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def latency_text(result: Any) -> str:
    """Batch-1 latency as the window states it: measured with its IQR, and flagged when the timed repeats disagree
    (another process shared the cores: the median is not to be trusted), else the roofline estimate, marked."""
    parts = []
    for stats in getattr(result, "latency_measured", ()):
        if stats.batch == 1:
            text = f"{stats.median_ms:.3f} ms measured (IQR {stats.iqr_ms:.3f})"
            ratio = getattr(stats, "fp32_ratio", None)
            if ratio is not None:  # timed interleaved with fp32: the ratio is the figure to compare
                text += f", {ratio:.2f}× fp32 (±{getattr(stats, 'ratio_spread', 0.0):.0%})"
            if getattr(stats, "noisy", False):
                text += f" — NOISY: repeats disagree by {_worst_spread(stats):.0%} of the median, re-measure when idle"
            parts.append(text)
    measured = result.latency_ms(1, measured=True)
    if not parts and measured is not None:
        parts.append(f"{measured:.3f} ms measured")
    for runtime, label in RUNTIME_LABELS.items():
        for stats in (getattr(result, "latency_by_runtime", None) or {}).get(runtime, ()):
            if stats.batch == 1:
                parts.append(f"{stats.median_ms:.3f} ms on {label} (IQR {stats.iqr_ms:.3f})"
                             + (" — NOISY" if getattr(stats, "noisy", False) else ""))
    estimated = result.latency_ms(1, measured=False)
    if estimated is not None:
        how = {"fitted": " (fitted to this model's timings)", "machine": " (machine calibration only)"}
        parts.append(f"≈{estimated:.3f} ms estimated{how.get(estimate_kind(result), '')}")
    return ", ".join(parts) or "n/a"


def estimate_kind(result: Any) -> str:
    """How a result's latency estimate was made: "fitted" (scaled to the model's own measured anchors),
    "machine" (the machine calibration alone) or "" (a result from before fits existed says neither)."""
    from qtradeoff.core.compare import estimate_fitted  # torch-free

    fitted = estimate_fitted(result)
    return "" if fitted is None else "fitted" if fitted else "machine"


def _worst_spread(stats: Any) -> float:
    """The larger of a timing's own spread and the spread of its ratios to fp32 (either marks it noisy)."""
    return max(getattr(stats, "spread", 0.0), getattr(stats, "ratio_spread", 0.0))
