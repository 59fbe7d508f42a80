"""What differs between two evaluated configurations: their settings layer by layer, and their metrics.

Two configurations can say the same thing in different words (a default of int8 versus an override on every layer;
``re:`` and ``type:`` selectors), so they are compared by what each *layer* ends up with (``resolve``), field by
field (``weight.precision``, ``activation.calibration``, ``prune.sparsity``, ``skip`` …), never by their text.
A layer that resolves the same in both is not listed. Metric deltas are B minus A, in the units the table shows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldChange:
    layer: str
    field: str  # "weight.precision", "prune.sparsity", "skip", …
    a: Any
    b: Any


@dataclass(frozen=True)
class MetricChange:
    metric: str
    a: float | None
    b: float | None
    unit: str

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Comparison:
    changes: tuple[FieldChange, ...]
    metrics: tuple[MetricChange, ...]

    @property
    def layers(self) -> list[str]:
        """The layers whose resolved settings differ, in the model's order."""
        seen: dict[str, None] = {}
        for change in self.changes:
            seen.setdefault(change.layer, None)
        return list(seen)

    def to_dict(self) -> dict:
        return {"layers": self.layers,
                "changes": [dataclasses.asdict(c) for c in self.changes],
                "metrics": [dict(dataclasses.asdict(m), delta=m.delta) for m in self.metrics]}


def _flat(settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"skip": settings.skip}
    for part in ("weight", "activation", "prune"):
        for name, value in dataclasses.asdict(getattr(settings, part)).items():
            out[f"{part}.{name}"] = value
    return out


def _relevant(flat: dict[str, Any]) -> dict[str, Any]:
    """Leave out fields that do nothing in this layer's settings (a percentile when calibration is min-max, N:M
    sizes when pruning is not N:M, everything of a skipped layer): their difference changes no number."""
    if flat["skip"]:
        return {"skip": True}
    out = dict(flat)
    if out.get("activation.calibration") != "percentile":
        out.pop("activation.percentile", None)
    method = out.get("prune.method")
    if method != "nm":
        out.pop("prune.n", None)
        out.pop("prune.m", None)
    if method != "structured":
        out.pop("prune.norm", None)
    if method == "none":
        for name in ("prune.threshold", "prune.relative", "prune.sparsity"):
            out.pop(name, None)
    elif method == "magnitude":  # a target sparsity takes precedence over the threshold
        unused = ("prune.threshold", "prune.relative") if out.get("prune.sparsity") is not None else ("prune.sparsity",)
        for name in unused:
            out.pop(name, None)
    for part in ("weight", "activation"):
        if not str(out.get(f"{part}.precision", "")).startswith("int"):
            for name in [k for k in out if k.startswith(f"{part}.") and k != f"{part}.precision"]:
                out.pop(name)
    return out


def diff_configs(a: Any, b: Any, layers: Iterable[tuple[str, str]]) -> tuple[FieldChange, ...]:
    """The per-layer field differences of configurations ``a`` and ``b`` over ``layers`` ((name, kind) pairs)."""
    changes = []
    for name, kind in layers:
        left, right = _relevant(_flat(a.resolve(name, kind))), _relevant(_flat(b.resolve(name, kind)))
        if left["skip"] != right["skip"]:  # left at fp32 on one side: that is the whole difference
            changes.append(FieldChange(name, "skip", left["skip"], right["skip"]))
            continue
        for key in sorted(set(left) | set(right), key=lambda k: (k != "skip", k)):
            if left.get(key) != right.get(key):
                changes.append(FieldChange(name, key, left.get(key), right.get(key)))
    return tuple(changes)


def _accuracy(result: Any) -> float | None:
    value = result.accuracy if result.accuracy is not None else result.agreement
    return None if value is None else 100.0 * value


def compare(a: Any, b: Any, layers: Iterable[tuple[str, str]]) -> Comparison:
    """Compare two Results: their configurations layer by layer and their metrics (B − A)."""
    metrics = (
        MetricChange("accuracy" if a.accuracy is not None else "agreement", _accuracy(a), _accuracy(b), "pts"),
        MetricChange("weight bytes", float(a.weight_bytes), float(b.weight_bytes), "B"),
        MetricChange("peak activations", float(a.peak_activation_bytes), float(b.peak_activation_bytes), "B"),
        MetricChange("latency (estimated)", a.latency_ms(1, measured=False), b.latency_ms(1, measured=False), "ms"),
        MetricChange("latency (measured)", a.latency_ms(1, measured=True), b.latency_ms(1, measured=True), "ms"),
    )
    return Comparison(diff_configs(a.config, b.config, layers), metrics)


__all__ = ["Comparison", "FieldChange", "MetricChange", "compare", "diff_configs"]
