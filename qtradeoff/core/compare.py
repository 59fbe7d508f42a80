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
    # why some deltas compare unlike things (other evaluation samples, an estimate fitted on one side only, ...)
    warnings: tuple[str, ...] = ()

    @property
    def layers(self) -> list[str]:
        """The layers whose resolved settings differ, in the model's order."""
        seen: dict[str, None] = {}
        for change in self.changes:
            seen.setdefault(change.layer, None)
        return list(seen)

    def to_dict(self) -> dict:
        return {"layers": self.layers, "warnings": list(self.warnings),
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
    # an algorithm's parameters do nothing under another rounding (GPTQ's act-order under nearest rounding)
    used = {"adaround": ("adaround_iterations",),
            "gptq": ("gptq_damping", "gptq_block", "gptq_act_order")}.get(out.get("weight.rounding"), ())
    for name in ("adaround_iterations", "gptq_damping", "gptq_block", "gptq_act_order"):
        if name not in used:
            out.pop(f"weight.{name}", None)
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
            # a weight/activation field that applies on one side only follows from the precision change (int8 ->
            # fp32 has no calibration on the fp32 side): the precision line says it all
            if (key in left) != (key in right) and key.split(".")[0] in ("weight", "activation"):
                continue
            if left.get(key) != right.get(key):
                changes.append(FieldChange(name, key, left.get(key), right.get(key)))
    return tuple(changes)


def _accuracy(result: Any) -> float | None:
    value = result.accuracy if result.accuracy is not None else result.agreement
    return None if value is None else 100.0 * value


def _evaluation_set(result: Any) -> tuple:
    provenance = getattr(result, "provenance", None) or {}
    data = provenance.get("data") if isinstance(provenance.get("data"), dict) else {}
    return (getattr(result, "eval_samples", None), str(data.get("name", "") or ""), provenance.get("seed") or 0)


def estimate_fitted(result: Any) -> bool | None:
    """Whether a result's latency estimate was fitted to its model's own timings (``provenance["roofline"]["fit"]``,
    see :mod:`qtradeoff.core.measurement.latency_fit`); None for a result that says neither (no estimate, or one
    written before fits existed). Here, torch-free, for the GUI process."""
    provenance = getattr(result, "provenance", None)
    roofline = provenance.get("roofline") if isinstance(provenance, dict) else None
    fit = roofline.get("fit") if isinstance(roofline, dict) else None
    return bool(fit.get("fitted")) if isinstance(fit, dict) else None


def comparison_warnings(a: Any, b: Any) -> tuple[str, ...]:
    """What makes the metric deltas of ``a`` and ``b`` compare unlike things, one sentence each."""
    warnings = []
    set_a, set_b = _evaluation_set(a), _evaluation_set(b)
    if set_a != set_b:
        def text(s: tuple) -> str:
            return f"{s[0]} samples" + (f" of {s[1]}" if s[1] else "") + (f", seed {s[2]}" if s[2] else "")

        warnings.append(f"A and B were evaluated on different samples ({text(set_a)} vs {text(set_b)}): the "
                        "accuracy delta mixes the configurations' difference with the subsets'; evaluate both on "
                        "one set to compare them.")
    fitted = (estimate_fitted(a), estimate_fitted(b))
    if None not in fitted and fitted[0] != fitted[1]:
        warnings.append("Only one of the two latency estimates is fitted to this model's timings: the estimated "
                        "latency delta compares two different estimates.")
    for name, result in (("A", a), ("B", b)):
        if any(getattr(s, "noisy", False) for s in getattr(result, "latency_measured", ()) or ()):
            warnings.append(f"{name}'s measured latency is noisy (its timed repeats disagree): re-measure it when "
                            "the machine is idle before trusting the measured delta.")
    return tuple(warnings)


def compare(a: Any, b: Any, layers: Iterable[tuple[str, str]]) -> Comparison:
    """Compare two Results: their configurations layer by layer and their metrics (B − A)."""
    metrics = (
        MetricChange("accuracy" if a.accuracy is not None else "agreement", _accuracy(a), _accuracy(b), "pts"),
        MetricChange("weight bytes", float(a.weight_bytes), float(b.weight_bytes), "B"),
        MetricChange("peak activations", float(a.peak_activation_bytes), float(b.peak_activation_bytes), "B"),
        MetricChange("latency (estimated)", a.latency_ms(1, measured=False), b.latency_ms(1, measured=False), "ms"),
        MetricChange("latency (measured)", a.latency_ms(1, measured=True), b.latency_ms(1, measured=True), "ms"),
    )
    return Comparison(diff_configs(a.config, b.config, layers), metrics, comparison_warnings(a, b))


__all__ = ["Comparison", "FieldChange", "MetricChange", "compare", "comparison_warnings", "diff_configs",
           "estimate_fitted"]
