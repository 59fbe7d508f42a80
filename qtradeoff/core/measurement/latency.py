"""Latency measurement protocol: median and IQR of a module's forward time per batch size, fixed threads, warm-up.

After ``warmup`` calls, one more call sizes the blocks: each block runs ``number`` calls (enough that a block
lasts about ``min_run_time / min_repeats``, so timer overhead is negligible for fast models) through
``torch.utils.benchmark.Timer.timeit``. Blocks repeat until both ``min_run_time`` seconds and ``min_repeats``
blocks are reached (at most ``max_repeats``). The median and IQR are over the per-call times of the blocks; the
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
    """How to time: batch sizes, threads (None: torch's current setting), warm-up calls, seconds per batch size."""

    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int | None = None
    warmup: int = 3
    min_run_time: float = 0.3
    min_repeats: int = 7
    max_repeats: int = 200

    def resolved_threads(self) -> int:
        return int(self.threads or torch.get_num_threads())


# A chosen bound, not a measured one: blocks last min_run_time / min_repeats (tens of ms), long enough that timer
# and scheduler jitter average out, so a timing that had its cores to itself repeats within a few percent; a
# neighbour computing on the same cores for part of the run makes some blocks run at a fraction of the speed and
# spreads the quartiles far apart. A quarter of the median sits well between the two.
NOISY_SPREAD = 0.25
# Bound on the spread of a timing's interleaved ratios to fp32 (issue 19: ±15 %); see :mod:`.interleaved`.
RATIO_NOISY_SPREAD = 0.15


@dataclass(frozen=True)
class LatencyStats:
    """Forward latency at one batch size. ``repeats`` is the number of timed blocks (0 for estimates).

    ``fp32_ratio`` is the median, over interleaved rounds, of this model's time over the fp32 model's time in the
    same round (:mod:`.interleaved`), ``ratio_spread`` how far those ratios stray from it; None / 0 when the fp32
    model was not timed beside it.
    """

    batch: int
    median_ms: float
    iqr_ms: float
    repeats: int
    fp32_ratio: float | None = None
    ratio_spread: float = 0.0

    @property
    def spread(self) -> float:
        """The IQR relative to the median (0 for estimates, which have no repeats)."""
        return self.iqr_ms / self.median_ms if self.repeats and self.median_ms > 0 else 0.0

    @property
    def noisy(self) -> bool:
        """True when the timed blocks disagree by more than ``NOISY_SPREAD``, or the interleaved ratios to fp32 by
        more than ``RATIO_NOISY_SPREAD``: the figure is not to be trusted."""
        return self.spread > NOISY_SPREAD or self.ratio_spread > RATIO_NOISY_SPREAD

    def to_dict(self) -> dict:
        # spread and noisy are derived (older records without them load the same); written for readers of the JSON
        d = {"batch": self.batch, "median_ms": self.median_ms, "iqr_ms": self.iqr_ms, "repeats": self.repeats,
             "spread": round(self.spread, 4), "noisy": self.noisy}
        if self.fp32_ratio is not None:
            d.update(fp32_ratio=self.fp32_ratio, ratio_spread=self.ratio_spread)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LatencyStats:
        ratio = d.get("fp32_ratio")
        return cls(int(d["batch"]), float(d["median_ms"]), float(d["iqr_ms"]), int(d["repeats"]),
                   None if ratio is None else float(ratio), float(d.get("ratio_spread", 0.0)))


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
