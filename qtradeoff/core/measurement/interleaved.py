"""The timing protocol for comparisons: fp32 and a configuration timed in short alternating blocks, ratio per pair.

Timing each model in its own run and dividing medians turns any drift between the runs (another process starting,
the CPU clocking down) into the ratio: three repeats of one batch-1 ratio read 9.5, 22 and 382 on a quiet machine
where alternating calls read 1.70. Here, after ``warmup`` calls of each model, one call sizes the blocks (each
model runs enough calls that a block lasts about ``min_run_time / min_repeats / len(models)``), then rounds of one
block per model run in rotating order (AB, BA, AB, ...; ABC, BCA, CAB with three) until ``min_run_time`` seconds
and ``min_repeats`` rounds are reached (at most ``max_repeats``). Each round gives one per-call time per model and
one ratio per compared model (its block over the reference's block of the same round), so load that hits a round
hits both sides of its ratio. Reported: per model, the median and IQR of its per-call times
(:class:`LatencyStats`), and per compared model the median ratio and its spread (the farther quartile from the
median, relative to it); a ratio whose spread exceeds ``RATIO_NOISY_SPREAD`` is marked noisy. Blocks run through
``torch.utils.benchmark.Timer``; its clock can be replaced, which is how the tests check the protocol without
timing anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from qtradeoff.core.measurement.latency import RATIO_NOISY_SPREAD, LatencySettings, LatencyStats, batch_of


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        value = values[0] if values else 0.0
        return value, value, value
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


@dataclass(frozen=True)
class RatioStats:
    """A compared model's per-call time over the reference's, round by round, at one batch size."""

    batch: int
    median: float
    q1: float
    q3: float
    rounds: int

    @property
    def spread(self) -> float:
        """How far the ratios stray from their median: the farther quartile, relative to the median."""
        if self.median <= 0 or self.rounds < 2:
            return 0.0
        return max(self.median - self.q1, self.q3 - self.median) / self.median

    @property
    def noisy(self) -> bool:
        """Pairs measured moments apart on a quiet machine agree within a few percent; a spread beyond
        ``RATIO_NOISY_SPREAD`` means the cores were shared during the timing."""
        return self.spread > RATIO_NOISY_SPREAD

    @classmethod
    def of(cls, batch: int, ratios: list[float]) -> RatioStats:
        q1, median, q3 = _quartiles(ratios)
        return cls(batch, median, q1, q3, len(ratios))


@dataclass(frozen=True)
class InterleavedTiming:
    """One batch size of an interleaved timing: every model's stats, and each compared model's ratio."""

    batch: int
    stats: dict[str, LatencyStats]
    ratios: dict[str, RatioStats] = field(default_factory=dict)
    block_calls: dict[str, int] = field(default_factory=dict)

    def stats_with_ratio(self, name: str) -> LatencyStats:
        """``name``'s LatencyStats carrying its ratio to the reference (and the ratio's spread)."""
        stats, ratio = self.stats[name], self.ratios.get(name)
        if ratio is None:
            return stats
        return LatencyStats(stats.batch, stats.median_ms, stats.iqr_ms, stats.repeats, fp32_ratio=ratio.median,
                            ratio_spread=ratio.spread)


def time_interleaved(modules: Mapping[str, Callable], samples: torch.Tensor,
                     settings: LatencySettings | None = None, *, reference: str | None = None,
                     should_stop: Callable[[], bool] = lambda: False,
                     clock: Callable[[], float] = time.perf_counter) -> Iterator[InterleavedTiming]:
    """Yield one :class:`InterleavedTiming` per batch size of ``settings``; ratios are over ``reference`` (default:
    the first of ``modules``). Pins torch to ``settings.resolved_threads()`` and restores it after; stops early
    (without yielding the batch in progress) when ``should_stop()``."""
    from torch.utils.benchmark import Timer  # here: importing it pulls setuptools, ~1 s of every start-up

    settings = settings or LatencySettings()
    names = list(modules)
    if not names:
        return
    reference = reference or names[0]
    threads = settings.resolved_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in settings.batch_sizes:
            if should_stop():
                return
            x = batch_of(samples, batch)
            timers = {name: Timer("module(x)", globals={"module": modules[name], "x": x}, num_threads=threads,
                                  timer=clock) for name in names}
            with torch.inference_mode():
                for name in names:
                    for _ in range(settings.warmup):
                        modules[name](x)
                block_seconds = settings.min_run_time / max(1, settings.min_repeats) / len(names)
                calls = {}
                for name in names:
                    single = max(timers[name].timeit(1).times[0], 1e-7)
                    calls[name] = max(1, min(100_000, int(block_seconds / single)))
                times: dict[str, list[float]] = {name: [] for name in names}
                started = clock()
                rounds = 0
                while rounds < settings.max_repeats and (
                        rounds < settings.min_repeats or clock() - started < settings.min_run_time):
                    if should_stop():  # between rounds: a round is short, and its pair must stay whole
                        return
                    # rotated every round (AB BA ..., ABC BCA CAB ...): each model follows each other one
                    # equally often, so none keeps the cache warm from a block of its own more than the others
                    shift = rounds % len(names)
                    for name in names[shift:] + names[:shift]:
                        times[name].append(timers[name].timeit(calls[name]).times[0])
                    rounds += 1
            stats = {}
            for name, values in times.items():
                q1, median, q3 = _quartiles(values)
                stats[name] = LatencyStats(batch, median * 1e3, (q3 - q1) * 1e3, len(values))
            ratios = {name: RatioStats.of(batch, [a / b for a, b in zip(times[name], times[reference], strict=True)
                                                  if b > 0])
                      for name in names if name != reference}
            yield InterleavedTiming(batch, stats, ratios, calls)
    finally:
        torch.set_num_threads(previous)
