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
import time
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
    """Yield one :class:`LatencyStats` per batch size of ``settings``; stops early when ``should_stop()``."""
    from torch.utils.benchmark import Timer  # here: importing it pulls setuptools, ~1 s of every start-up

    threads = settings.resolved_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in settings.batch_sizes:
            if should_stop():
                return
            x = batch_of(samples, batch)
            with torch.inference_mode():
                for _ in range(settings.warmup):
                    module(x)
                timer = Timer("module(x)", globals={"module": module, "x": x}, num_threads=threads)
                single = max(timer.timeit(1).times[0], 1e-7)
                number = max(1, min(100_000, int(settings.min_run_time / settings.min_repeats / single)))
                times: list[float] = []
                started = time.perf_counter()
                while len(times) < settings.max_repeats and (
                        len(times) < settings.min_repeats or time.perf_counter() - started < settings.min_run_time):
                    if should_stop():
                        return
                    times.append(timer.timeit(number).times[0])
            values = torch.tensor(times, dtype=torch.float64)
            q1, median, q3 = (float(v) for v in torch.quantile(values, torch.tensor([0.25, 0.5, 0.75],
                                                                                      dtype=torch.float64)))
            yield LatencyStats(batch, median * 1e3, (q3 - q1) * 1e3, len(times))
    finally:
        torch.set_num_threads(previous)
