"""Estimates made before an evaluation runs: how long it will take, how many samples fit a time target, how much
memory it needs.

Every figure here is an *estimate* from one measured number, the fp32 forward time per sample of the base model
(taken from the reference forward when it already ran, else from a small probe), scaled by assumed factors for the
work an evaluation adds (written below beside each assumption). The engine's ``estimate_seconds``,
``propose_eval_size`` and ``memory_estimate`` are built on these pure functions; the CLI prints them before a
long run and the GUI shows them beside the evaluation-subset control.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Simulated forward time relative to a plain fp32 forward. benchmarks/bench_evaluate.py targets <= 1.2x
# weight-only and <= 1.5x W8A8 on the small sample models; on a resnet50 at 224x224 (bench_first_point.py) a W8A8
# edit, calibration included, took about 1x a plain forward: folding BatchNorm saves about what fake-quantization
# costs when convolutions dominate. Middle values; the estimate is labelled as one.
SIMULATED_FACTOR_WEIGHTS = 1.0
SIMULATED_FACTOR_ACTIVATIONS = 1.2
# Building a real int8 model calibrates it: about one forward of the calibration split, plus conversion.
REAL_MODEL_FACTOR = 1.5
# Roofline micro-benchmarks when the machine has no cached calibration: two rounds of matmuls, copies and the
# kernel table (3.1-3.3 s measured at load 6 on 2 cores; 2.2 s before the table).
ROOFLINE_CALIBRATION_SECONDS = 4.0
# Fewest samples the proposal goes down to: at 100 samples a 95% Wilson interval is at most about +-10 points
# wide; fewer samples make an accuracy too vague to compare configurations on.
MIN_EVAL_SAMPLES = 100
# The CLI and GUI mention the estimate only for runs longer than this.
NOTEWORTHY_SECONDS = 5.0


@dataclass(frozen=True)
class TimeEstimate:
    """Estimated wall time of one evaluation of ``samples`` samples (an estimate, not a measurement).

    ``seconds_per_sample`` is the measured fp32 forward time per sample it is built on (``probed`` when it was
    timed on a small probe for this estimate rather than on the reference forward); ``parts`` splits ``seconds``
    into its stages.
    """

    samples: int
    seconds: float
    seconds_per_sample: float
    probed: bool
    parts: Mapping[str, float] = field(default_factory=dict)

    @property
    def noteworthy(self) -> bool:
        return self.seconds >= NOTEWORTHY_SECONDS

    def describe(self) -> str:
        """One line for a user: ``estimated time ~N s for M samples``."""
        return (f"estimated time ~{format_seconds(self.seconds)} for {self.samples} samples (estimate from a "
                f"measured fp32 forward of {1e3 * self.seconds_per_sample:.1f} ms per sample)")

    def to_dict(self) -> dict:
        return {"estimated": True, "samples": self.samples, "seconds": round(self.seconds, 3),
                "seconds_per_sample": self.seconds_per_sample, "probed": self.probed,
                "parts": {k: round(v, 3) for k, v in self.parts.items()}}


@dataclass(frozen=True)
class EvaluationWork:
    """What one evaluation will have to compute, as the engine knows it before starting."""

    samples: int
    reference_cached: bool  # the fp32 outputs of these samples are already known
    reuses_reference: bool  # the plan changes nothing: no simulated forward
    casts_activations: bool  # some layer fake-quantizes activations (the slower simulation)
    needs_calibration: bool  # integer activations and the ranges are not calibrated yet
    calib_samples: int
    measured_batches: tuple[int, ...] = ()  # batch sizes timed on real kernels (empty: no measured latency)
    real_model_cached: bool = True
    real_model_calibrates: bool = False  # building the real model runs its own calibration pass
    measured_min_run_time: float = 0.3
    measured_min_repeats: int = 7
    measured_warmup: int = 3
    roofline: bool = False  # estimated latency wanted
    roofline_calibrated: bool = True
    profile_known: bool = True  # the activation profile (one forward of one sample) is known


def estimate_seconds(work: EvaluationWork, seconds_per_sample: float, *, probed: bool = False) -> TimeEstimate:
    """The wall time ``work`` should take at ``seconds_per_sample`` (fp32 forward), split into stages."""
    s = max(float(seconds_per_sample), 0.0)
    n = work.samples
    parts: dict[str, float] = {}
    if not work.reference_cached:
        parts["reference"] = n * s
    if not work.reuses_reference:
        factor = SIMULATED_FACTOR_ACTIVATIONS if work.casts_activations else SIMULATED_FACTOR_WEIGHTS
        parts["simulated"] = n * s * factor
    if work.needs_calibration:
        parts["calibration"] = work.calib_samples * s
    if not work.profile_known:
        parts["activation profile"] = s
    if work.measured_batches:
        if not work.real_model_cached and work.real_model_calibrates:
            parts["real model"] = work.calib_samples * s * REAL_MODEL_FACTOR
        timing = 0.0
        for batch in work.measured_batches:
            call = batch * s
            # warm-up calls, one sizing call, then blocks until both the run time and the repeat count are met
            timing += (work.measured_warmup + 1) * call + max(work.measured_min_run_time,
                                                              work.measured_min_repeats * call)
        parts["latency (measured)"] = timing
    if work.roofline and not work.roofline_calibrated:
        parts["roofline calibration"] = ROOFLINE_CALIBRATION_SECONDS
    return TimeEstimate(n, sum(parts.values()), s, probed, parts)


def propose_samples(estimate_for, target_seconds: float, available: int, *,
                    minimum: int = MIN_EVAL_SAMPLES) -> int:
    """The largest sample count in ``[min(minimum, available), available]`` whose ``estimate_for(n)`` (a
    TimeEstimate, non-decreasing in n) stays within ``target_seconds``; the lower bound when none does."""
    if target_seconds <= 0:
        raise ValueError(f"target time {target_seconds} s is not positive; give a number of seconds")
    if available <= 0:
        return 0
    low = max(1, min(minimum, available))
    if estimate_for(available).seconds <= target_seconds:
        return available
    if estimate_for(low).seconds > target_seconds:
        return low
    # invariant: estimate(low) fits, estimate(high) does not
    high = available
    while high - low > 1:
        middle = (low + high) // 2
        if estimate_for(middle).seconds <= target_seconds:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak resident bytes of one evaluation (an estimate) against the RAM available now."""

    model_bytes: int  # the base model's tensors
    data_bytes: int  # calibration and evaluation inputs held in memory
    activation_bytes: int  # live activations of one chunk of the forward
    cache_bytes: int  # the activation cut cache, at most its bound
    weight_cache_bytes: int  # processed (fake-quantized) weights, at most one copy of the model's
    available_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return (self.model_bytes + self.data_bytes + self.activation_bytes + self.cache_bytes
                + self.weight_cache_bytes)

    def warning(self, fraction: float = 0.5) -> str:
        """A sentence when the estimate exceeds ``fraction`` of the available RAM, else ``""``."""
        if self.available_bytes is None or self.total_bytes <= fraction * self.available_bytes:
            return ""
        return (f"this evaluation may need about {_gib(self.total_bytes)} of memory (estimate: model "
                f"{_gib(self.model_bytes)}, data {_gib(self.data_bytes)}, activations {_gib(self.activation_bytes)}, "
                f"caches {_gib(self.cache_bytes + self.weight_cache_bytes)}), more than {round(100 * fraction)}% "
                f"of the {_gib(self.available_bytes)} available; a smaller --eval-size or fewer processes help")

    def to_dict(self) -> dict:
        return {"estimated": True, "total_bytes": self.total_bytes, "model_bytes": self.model_bytes,
                "data_bytes": self.data_bytes, "activation_bytes": self.activation_bytes,
                "cache_bytes": self.cache_bytes, "weight_cache_bytes": self.weight_cache_bytes,
                "available_bytes": self.available_bytes}


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def format_seconds(seconds: float) -> str:
    """A duration as the CLI's estimate line and the GUI's subset hint state it."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"
