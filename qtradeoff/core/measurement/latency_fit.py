"""The roofline estimate fitted to one model: its own measured forward times scale the machine's kernel table.

The machine calibration (:mod:`.roofline`) times small blocks; a real model adds what no block holds (pooling,
additions, reshapes, the Python between layers, cache effects of its own sizes), so on its own the estimate was
off by -87 % to +194 % on the samples (issue 18). A fit fixes that per model. Every measured evaluation times
the fp32 model beside the configuration; the first one of a model also times the **anchors** not known yet — the
whole model on int8 kernels, and the reduced floats (bf16, fp16) the configuration uses — in the same interleaved
rounds. The fp32 anchor is the median of the recent fp32 timings; another family's anchor is that times the
median of its round-by-round ratios to fp32 (a ratio survives load that slows both; an absolute time measured once
on a busy machine would be frozen into every later estimate). An estimate then scales each layer's roofline time
by its compute family's factor ``anchor / roofline estimate of that anchor`` (the int8 factor also scales the
quantize/dequantize steps), so the anchors are reproduced and a mixed configuration is interpolated layer by
layer from the kernel table's shares. A family with no anchor takes fp32's factor, and the estimate says so.

Fits are kept per model file (sha256), input shape, thread count, quantized engine, CPU and torch version, in
memory and in ``latency-fit-<key>.json`` under the cache folder (see :mod:`qtradeoff.core.paths`): a later
session's estimates are fitted without timing anything. Every figure an estimate gives stays an estimate.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qtradeoff.core.paths import cache_dir

FIT_VERSION = 3
# The families an anchor can be measured for: what roofline.compute_family returns for a uniform configuration.
ANCHOR_FAMILIES = ("fp32", "int8", "bf16", "fp16")


def fit_key(model_sha: str, input_shape: Iterable[int], threads: int, engine: str, cpu: str) -> str:
    """A file-name-safe key of everything a model's measured forward time depends on here."""
    text = "|".join((model_sha, "x".join(str(int(s)) for s in input_shape), str(threads), engine, cpu,
                     torch.__version__, str(FIT_VERSION)))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# How many timings of each anchor a fit keeps (the most recent): their median is the anchor.
KEPT = 9


@dataclass
class LatencyFit:
    """One model's anchors. fp32: the median forward ms of the recent measured evaluations (every one times the
    fp32 model); other families: fp32 times the median of their interleaved ratios to it (a ratio taken round by
    round survives load that moves both, an absolute figure does not). Family -> batch -> kept figures."""

    key: str
    threads: int
    fp32_ms: dict[int, list[float]] = field(default_factory=dict)
    # batches whose kept fp32 timings were all noisy (a busy machine): the first clean one replaces them
    fp32_noisy: set[int] = field(default_factory=set)
    ratios: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    measured_at: float = 0.0
    # families that cannot be anchored on this model (e.g. the int8 conversion failed), with the reason
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def measured_ms(self) -> dict[str, dict[int, float]]:
        """Family -> batch -> the anchor's forward ms."""
        fp32 = {b: statistics.median(v) for b, v in self.fp32_ms.items() if v}
        out = {"fp32": fp32} if fp32 else {}
        for family, by_batch in self.ratios.items():
            figures = {b: fp32[b] * statistics.median(v) for b, v in by_batch.items() if v and b in fp32}
            if figures:
                out[family] = figures
        return out

    def has(self, family: str, batches: Iterable[int]) -> bool:
        if family in self.unavailable:
            return True
        kept = self.fp32_ms if family == "fp32" else self.ratios.get(family, {})
        return all(kept.get(int(b)) for b in batches)

    def record(self, family: str, batch: int, value: float, noisy: bool = False) -> None:
        """One timing: fp32's median ms (``noisy``: its repeats disagreed), or another family's median ratio to
        fp32 in the same timing. A noisy fp32 timing is kept only while no clean one is: the first clean one
        replaces every noisy one kept before it, and later noisy ones are left out."""
        batch = int(batch)
        if family == "fp32":
            clean_kept = self.fp32_ms.get(batch) and batch not in self.fp32_noisy
            if noisy and clean_kept:
                return
            if not noisy and batch in self.fp32_noisy:
                self.fp32_ms[batch] = []
                self.fp32_noisy.discard(batch)
            elif noisy:
                self.fp32_noisy.add(batch)
        kept = self.fp32_ms if family == "fp32" else self.ratios.setdefault(family, {})
        values = kept.setdefault(batch, [])
        values.append(float(value))
        del values[:-KEPT]
        self.measured_at = time.time()

    def factors(self, raw_ms: Mapping[str, float], batch: int) -> tuple[dict[str, float], list[str]]:
        """Per family, measured / estimated at ``batch`` (``raw_ms``: the unfitted estimate of each family's
        anchor); families without a measured anchor take fp32's factor. Also the families so substituted."""
        measured = self.measured_ms
        factors: dict[str, float] = {}
        for family, raw in raw_ms.items():
            figure = measured.get(family, {}).get(int(batch))
            if figure is not None and raw > 0:
                factors[family] = figure / raw
        if "fp32" not in factors:
            return {}, []
        borrowed = sorted(f for f in raw_ms if f not in factors)
        for family in borrowed:
            factors[family] = factors["fp32"]
        return factors, borrowed

    def describe(self, batches: Iterable[int]) -> str:
        """One line: which anchors the estimate is scaled to, measured when."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.measured_at)) if self.measured_at else "?"
        batches = list(batches)
        parts = []
        for family, figures in self.measured_ms.items():
            parts.append(f"{family} " + "/".join(f"{figures[b]:.3g}" for b in batches if b in figures) + " ms")
        timings = max((len(v) for v in self.fp32_ms.values()), default=0)
        return (f"fitted to this model's measured forward times at batch {'/'.join(map(str, batches))} "
                f"({', '.join(parts)}; median of {timings} fp32 timing(s), {self.threads} thread(s), last "
                f"measured {when})")

    def to_dict(self) -> dict:
        return {"version": FIT_VERSION, "key": self.key, "threads": self.threads, "measured_at": self.measured_at,
                "fp32_ms": {str(b): v for b, v in self.fp32_ms.items()}, "fp32_noisy": sorted(self.fp32_noisy),
                "ratios": {f: {str(b): v for b, v in d.items()} for f, d in self.ratios.items()},
                "unavailable": dict(self.unavailable)}

    @classmethod
    def from_dict(cls, data: dict) -> LatencyFit:
        if data.get("version") != FIT_VERSION:
            raise ValueError("another version of the fit")
        return cls(str(data["key"]), int(data["threads"]),
                   fp32_ms={int(b): [float(x) for x in v] for b, v in data["fp32_ms"].items()},
                   fp32_noisy={int(b) for b in data.get("fp32_noisy", ())},
                   ratios={f: {int(b): [float(x) for x in v] for b, v in d.items()} for f, d in data["ratios"].items()},
                   measured_at=float(data.get("measured_at", 0.0)),
                   unavailable={str(k): str(v) for k, v in data.get("unavailable", {}).items()})


def fit_path(key: str) -> Path:
    return cache_dir() / f"latency-fit-{key}.json"


def load_fit(key: str, threads: int) -> LatencyFit:
    """The stored fit of ``key``, or an empty one (a missing, corrupt or foreign file is simply measured again)."""
    try:
        fit = LatencyFit.from_dict(json.loads(fit_path(key).read_text()))
        if fit.key == key:
            return fit
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return LatencyFit(key, threads)


def save_fit(fit: LatencyFit) -> None:
    """Write atomically; a read-only cache folder keeps the fit for this process only."""
    path = fit_path(fit.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{time.monotonic_ns()}.tmp")
        tmp.write_text(json.dumps(fit.to_dict(), indent=1))
        tmp.replace(path)
    except OSError:
        pass
