"""How numbers read in the window: byte sizes, and the quality figure of a result (top-1 accuracy, or agreement
with fp32 when the data has no labels).
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
