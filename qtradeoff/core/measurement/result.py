"""What one evaluation produces: the :class:`Result` (JSON-safe), :class:`Progress` events, and the statistics
behind the numbers (Wilson intervals, output SQNR)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.errors import CancelledError
from qtradeoff.core.measurement.latency import LatencyStats

Z95 = 1.959963984540054
LATENCY_MODES = ("both", "measured", "estimated", "none")


class Cancelled(CancelledError):
    """The evaluation was stopped by ``should_stop`` before it produced a result."""


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str  # "reference" | "compress" | "accuracy" | "memory" | "latency (measured)" | "latency (estimated)"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value of a paired comparison of two classifiers on the same samples: ``gained``
    samples only the second gets right, ``lost`` samples only the first does. Under "equally accurate" each
    discordant sample is a fair coin, so p = P(a binomial(n, 1/2) is at least as lopsided), n = gained + lost;
    1.0 when nothing differs. Small p: the accuracies really differ; large p: the difference is sample noise."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2.0 * tail / 2.0 ** n)


def sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    """Output SQNR ``10 log10(sum ref^2 / sum (ref - out)^2)`` in dB; ``inf`` when the outputs are identical,
    ``-inf`` when there is no signal or the output is not finite (NaN/inf logits)."""
    reference = reference.to(torch.float64)
    noise = float((reference - output.to(torch.float64)).square().sum())
    signal = float(reference.square().sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0 or not math.isfinite(noise):
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# JSON has no infinities: identical outputs (+inf dB) are stored as null, a failed output (-inf) as -SQNR_FLOOR_DB.
SQNR_FLOOR_DB = 999.0


def _sqnr_to_json(value: float) -> float | None:
    if value == math.inf:
        return None
    return max(value, -SQNR_FLOOR_DB)


def _sqnr_from_json(value) -> float:
    if value is None:
        return math.inf
    value = float(value)
    return -math.inf if value <= -SQNR_FLOOR_DB else value


def _pair(value) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class Result:
    """Everything measured about one configuration. JSON-safe through :meth:`to_dict` / :meth:`from_dict`.

    ``accuracy``/``top5`` are None when the data has no labels (``labelled`` False): fidelity
    (``agreement``, ``sqnr_db``) then takes accuracy's place. ``sqnr_db`` is ``math.inf`` when the outputs equal
    the fp32 model's bit for bit (JSON: ``null``) and ``-math.inf`` when the output is not finite (JSON: -999).
    ``top5`` is None with fewer than 5 classes. Memory: see :mod:`qtradeoff.core.measurement.memory` for what is
    counted.
    ``latency_estimated`` entries have ``iqr_ms == 0`` and ``repeats == 0``: they are roofline estimates.
    ``latency_by_runtime``: measured latency on other runtimes than torch (``latency_measured`` stays torch's), keyed
    by runtime (``"onnxruntime"``, ``"openvino"``) for the configuration and ``"<runtime>/fp32"`` for the fp32 model
    timed interleaved with it (both from exported ONNX files); empty when only torch was asked for.
    """

    config: CompressionConfig
    config_key: str
    labelled: bool
    accuracy: float | None
    accuracy_ci95: tuple[float, float] | None
    top5: float | None
    top5_ci95: tuple[float, float] | None
    agreement: float
    agreement_ci95: tuple[float, float]
    sqnr_db: float
    eval_samples: int
    weight_bytes: int
    fp32_weight_bytes: int
    peak_activation_bytes: int
    latency_measured: tuple[LatencyStats, ...] = ()
    executed_precisions: dict[str, str] = field(default_factory=dict)
    measured_note: str = ""
    latency_estimated: tuple[LatencyStats, ...] = ()
    provenance: dict = field(default_factory=dict)
    latency_by_runtime: dict[str, tuple[LatencyStats, ...]] = field(default_factory=dict)

    def latency_ms(self, batch: int = 1, measured: bool = True) -> float | None:
        """Median latency (ms) at ``batch``, measured or estimated; None when not available."""
        for stats in self.latency_measured if measured else self.latency_estimated:
            if stats.batch == batch:
                return stats.median_ms
        return None

    @property
    def compression_ratio(self) -> float:
        return self.fp32_weight_bytes / self.weight_bytes if self.weight_bytes else math.inf

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "config_key": self.config_key,
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "accuracy_ci95": None if self.accuracy_ci95 is None else list(self.accuracy_ci95),
            "top5": self.top5,
            "top5_ci95": None if self.top5_ci95 is None else list(self.top5_ci95),
            "agreement": self.agreement,
            "agreement_ci95": list(self.agreement_ci95),
            "sqnr_db": _sqnr_to_json(self.sqnr_db),
            "eval_samples": self.eval_samples,
            "weight_bytes": self.weight_bytes,
            "fp32_weight_bytes": self.fp32_weight_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "latency_measured": [s.to_dict() for s in self.latency_measured],
            "executed_precisions": dict(self.executed_precisions),
            "measured_note": self.measured_note,
            "latency_estimated": [dict(s.to_dict(), estimated=True) for s in self.latency_estimated],
            "provenance": self.provenance,
            "latency_by_runtime": {runtime: [s.to_dict() for s in stats]
                                   for runtime, stats in self.latency_by_runtime.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        sqnr = d.get("sqnr_db")
        return cls(
            config=CompressionConfig.from_dict(d["config"]),
            config_key=d["config_key"],
            labelled=bool(d["labelled"]),
            accuracy=d.get("accuracy"),
            accuracy_ci95=_pair(d.get("accuracy_ci95")),
            top5=d.get("top5"),
            top5_ci95=_pair(d.get("top5_ci95")),
            agreement=float(d["agreement"]),
            agreement_ci95=_pair(d["agreement_ci95"]),
            sqnr_db=_sqnr_from_json(sqnr),
            eval_samples=int(d["eval_samples"]),
            weight_bytes=int(d["weight_bytes"]),
            fp32_weight_bytes=int(d["fp32_weight_bytes"]),
            peak_activation_bytes=int(d["peak_activation_bytes"]),
            latency_measured=tuple(LatencyStats.from_dict(s) for s in d.get("latency_measured", ())),
            executed_precisions=dict(d.get("executed_precisions", {})),
            measured_note=d.get("measured_note", ""),
            latency_estimated=tuple(LatencyStats.from_dict(s) for s in d.get("latency_estimated", ())),
            provenance=dict(d.get("provenance", {})),
            latency_by_runtime={runtime: tuple(LatencyStats.from_dict(s) for s in stats)
                                for runtime, stats in (d.get("latency_by_runtime") or {}).items()},
        )
