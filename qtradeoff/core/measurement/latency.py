"""Latency measurement protocol: median and IQR of a module's forward time per batch size, fixed threads, warm-up.

After ``warmup`` calls (the fastest of them sizes the blocks), each block runs ``number`` calls (enough that a
block lasts about ``min_run_time / min_repeats / 2``, at least ``MIN_BLOCK_SECONDS``) through
``torch.utils.benchmark.Timer.timeit``. Blocks repeat until both ``min_run_time`` seconds and ``min_repeats``
blocks are reached, then until the median has converged or the budget is spent (at most ``max_repeats``); see
:mod:`.interleaved`. The median and IQR are over the per-call times of the blocks; the
thread count is pinned for the measurement and recorded. A timing whose blocks disagree (IQR above
``NOISY_SPREAD`` of the median) is marked ``noisy``: something else ran on the cores meanwhile.
To compare a configuration with fp32, the engine times both interleaved (:mod:`.interleaved`); :func:`time_forward`
times one module alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatencySettings:
    """How to time: batch sizes, threads (None: torch's current setting), warm-up calls, seconds per batch size.

    ``min_run_time`` and ``min_repeats`` are always spent; rounds are then added until the ratio has converged
    (:mod:`.interleaved`) or ``max_run_time`` seconds have passed (None: ``BUDGET_FACTOR`` x ``min_run_time``).
    """

    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int | None = None
    warmup: int = 3
    min_run_time: float = 0.3
    min_repeats: int = 7
    max_repeats: int = 200
    max_run_time: float | None = None

    def resolved_threads(self) -> int:
        return int(self.threads or torch.get_num_threads())

    def budget_seconds(self) -> float:
        """The seconds per batch size after which rounds stop being added, converged or not."""
        return max(self.min_run_time, BUDGET_FACTOR * self.min_run_time if self.max_run_time is None
                   else self.max_run_time)


# A chosen bound, not a measured one: blocks last min_run_time / min_repeats (tens of ms), long enough that timer
# and scheduler jitter average out, so a timing that had its cores to itself repeats within a few percent; a
# neighbour computing on the same cores for part of the run makes some blocks run at a fraction of the speed and
# spreads the quartiles far apart. A quarter of the median sits well between the two.
NOISY_SPREAD = 0.25
# Bound on the spread of a timing's interleaved ratios to fp32 (issue 19: ±15 %); see :mod:`.interleaved`.
RATIO_NOISY_SPREAD = 0.15
# Rounds are added until the 95 % confidence interval of the median ratio lies within ±5 % of it. Chosen, not
# measured: repeats whose medians each sit within 5 % of the true ratio agree with each other within ±10 %, inside
# the ±15 % that issue 19 asks of five repeats.
RATIO_CI_TARGET = 0.05
# A round in which some model's block ran this much slower than that model's fastest block was disturbed (another
# process took the core for part of it): it is dropped. On a quiet machine blocks repeat within a few percent.
DISTURBED_ABOVE_MIN = 0.25
# Blocks last at least this long (a few scheduler ticks' worth of calls) so that timer and scheduler jitter
# average out inside a block.
MIN_BLOCK_SECONDS = 0.005
# An unconverged timing goes on up to this multiple of min_run_time: on a quiet machine it converges within
# min_run_time and costs what it did before; on a busy one it buys more rounds, then stops and is marked noisy.
BUDGET_FACTOR = 3.0


@dataclass(frozen=True)
class LatencyStats:
    """Forward latency at one batch size. ``repeats`` is the number of timed blocks (0 for estimates).

    ``fp32_ratio`` is the median, over interleaved rounds, of this model's time over the fp32 model's time in the
    same round (:mod:`.interleaved`), ``ratio_spread`` how far that median may be off: the half-width of its 95 %
    confidence interval, relative to it; None / 0 when the fp32 model was not timed beside it.
    ``ratio_converged`` is False when the timing's budget ran out before that interval reached
    ``RATIO_CI_TARGET``.
    """

    batch: int
    median_ms: float
    iqr_ms: float
    repeats: int
    fp32_ratio: float | None = None
    ratio_spread: float = 0.0
    ratio_converged: bool = True

    @property
    def spread(self) -> float:
        """The IQR relative to the median (0 for estimates, which have no repeats)."""
        return self.iqr_ms / self.median_ms if self.repeats and self.median_ms > 0 else 0.0

    @property
    def noisy(self) -> bool:
        """True when the timed blocks disagree by more than ``NOISY_SPREAD``, when the ratio to fp32 is uncertain by
        more than ``RATIO_NOISY_SPREAD``, or did not converge within the budget: the figure is not to be trusted."""
        return (self.spread > NOISY_SPREAD or self.ratio_spread > RATIO_NOISY_SPREAD
                or (self.fp32_ratio is not None and not self.ratio_converged))

    def to_dict(self) -> dict:
        # spread and noisy are derived (older records without them load the same); written for readers of the JSON
        d = {"batch": self.batch, "median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "repeats": self.repeats,
             "spread": round(self.spread, 4), "noisy": self.noisy}
        if self.fp32_ratio is not None:
            d.update(fp32_ratio=self.fp32_ratio, ratio_spread=self.ratio_spread, ratio_converged=self.ratio_converged)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        ratio = d.get("fp32_ratio")
        return cls(int(d["batch"]), float(d["median_ms"]), float(d["iqr_ms"]), int(d["repeats"]),
                   None if ratio is None else float(ratio), float(d.get("ratio_spread", 0.0)),
                   bool(d.get("ratio_converged", True)))


def batch_of(samples: torch.Tensor, batch: int) -> torch.Tensor:
    """A contiguous batch of ``batch`` real samples (cycled when there are fewer)."""
    if len(samples) == 0:
        raise ValueError("latency needs at least one input sample")
    reps = math.ceil(batch / len(samples))
    return (samples.repeat(reps, *([1] * (samples.dim() - 1))) if reps > 1 else samples)[:batch].contiguous()


def time_forward(module: Callable, samples: torch.Tensor, settings: LatencySettings = LatencySettings(),
                 should_stop: Callable[[], bool] = lambda: False) -> Iterable[LatencyStats]:
    """Yield one :class:`LatencyStats` per batch size of ``settings``; stops early when ``should_stop()``.
    One model on its own: the interleaved protocol (:mod:`.interleaved`) with nothing to interleave."""
    from qtradeoff.core.measurement.interleaved import time_interleaved  # it imports this module

    for timing in time_interleaved({"model": module}, samples, settings, should_stop=should_stop):
        yield timing.stats["model"]
