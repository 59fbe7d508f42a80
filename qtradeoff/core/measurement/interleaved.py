"""The timing protocol for comparisons: fp32 and a configuration timed in short alternating blocks, ratio per pair.

Timing each model in its own run and dividing medians turns any drift between the runs (another process starting,
the CPU clocking down) into the ratio: three repeats of one batch-1 ratio read 9.5, 22 and 382 on a quiet machine
where alternating calls read 1.70. Here, after ``warmup`` calls of each model (the fastest of them sizes the
blocks: each model runs enough calls that a block lasts about ``min_run_time / min_repeats / 2 / len(models)``,
at least ``MIN_BLOCK_SECONDS``), rounds of one block per model run in rotating order (AB, BA, AB, ...; ABC, BCA,
CAB with three). Each round gives one per-call time per model and one ratio per compared model (its block over the
reference's block of the same round), so load that hits a round hits both sides of its ratio.

The number of rounds is not fixed: after ``min_run_time`` seconds and ``min_repeats`` rounds, rounds are added
until the 95 % confidence interval of every median ratio (order statistics of the kept rounds, no distribution
assumed) lies within ``RATIO_CI_TARGET`` of it, or the budget (``LatencySettings.budget_seconds``, or
``max_repeats`` rounds) is spent; a timing that stopped on its budget is marked not converged, hence noisy. Rounds
in which some model's block ran more than ``DISTURBED_ABOVE_MIN`` slower than that model's fastest block were hit
by outside load and are dropped (never more than half of them); the kept rounds give, per model, the median and
IQR of its per-call times (:class:`LatencyStats`), and per compared model the median ratio, its quartile spread
and its confidence interval. With one model alone (``time_forward``) the convergence is that of its own median
time. Blocks run through ``torch.utils.benchmark.Timer``; its clock can be replaced, which is how the tests check
the protocol without timing anything.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from qtradeoff.core.measurement.latency import (
    DISTURBED_ABOVE_MIN,
    MIN_BLOCK_SECONDS,
    RATIO_CI_TARGET,
    LatencySettings,
    LatencyStats,
    batch_of,
)

DROP_RULE = (f"a round is dropped when a model's block in it ran more than {DISTURBED_ABOVE_MIN:.0%} slower than "
             "that model's fastest block (outside load), never more than half of the rounds")


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        value = values[0] if values else 0.0
        return value, value, value
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median of ``values``: the order statistics
    ``(x_(k), x_(n+1-k))`` with the largest ``k`` whose binomial tail ``P(Bin(n, 1/2) < k)`` is at most
    ``(1 - confidence) / 2``. Below 6 values no such ``k`` exists at 95 %: the whole range is returned."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return 0.0, 0.0
    tail, below, k = (1.0 - confidence) / 2, 0.0, 0
    while k < n // 2:
        below += math.comb(n, k) / 2.0 ** n  # P(Bin(n, 1/2) <= k)
        if below > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def _relative_halfwidth(median: float, low: float, high: float) -> float:
    return max(median - low, high - median) / median if median > 0 else 0.0


def kept_rounds(times: Mapping[str, Sequence[float]]) -> list[int]:
    """The rounds not disturbed by outside load (see ``DROP_RULE``): indices into every model's block times."""
    rounds = len(next(iter(times.values()), ()))
    if rounds == 0:
        return []
    fastest = {name: min(values) for name, values in times.items()}
    # how much slower than its fastest block the slowest model of the round ran
    excess = [max(values[r] / fastest[name] if fastest[name] > 0 else 1.0 for name, values in times.items())
              for r in range(rounds)]
    kept = [r for r in range(rounds) if excess[r] <= 1.0 + DISTURBED_ABOVE_MIN]
    if len(kept) * 2 < rounds:  # mostly "disturbed": the spread is the machine's, keep its calmer half
        kept = sorted(sorted(range(rounds), key=excess.__getitem__)[:(rounds + 1) // 2])
    return kept


@dataclass(frozen=True)
class RatioStats:
    """A compared model's per-call time over the reference's, round by round, at one batch size.

    ``median``, ``q1`` and ``q3`` are over the ``rounds`` kept rounds; ``ci_low``/``ci_high`` are the 95 %
    confidence interval of the median (:func:`median_interval`); ``converged`` says whether it reached
    ``RATIO_CI_TARGET`` before the timing's budget ran out.
    """

    batch: int
    median: float
    q1: float
    q3: float
    rounds: int
    ci_low: float | None = None
    ci_high: float | None = None
    converged: bool = True

    @property
    def spread(self) -> float:
        """How far the ratios stray from their median: the farther quartile, relative to the median."""
        if self.median <= 0 or self.rounds < 2:
            return 0.0
        return max(self.median - self.q1, self.q3 - self.median) / self.median

    @property
    def ci(self) -> float:
        """How far the median may be off: the farther end of its confidence interval, relative to it."""
        if self.ci_low is None or self.ci_high is None:
            return self.spread
        return _relative_halfwidth(self.median, self.ci_low, self.ci_high)

    @property
    def noisy(self) -> bool:
        """The timing's budget ran out before the median ratio was known within ``RATIO_CI_TARGET``: the cores
        were shared during the timing."""
        return not self.converged or self.ci > RATIO_CI_TARGET

    @classmethod
    def of(cls, batch: int, ratios: Sequence[float], *, converged: bool | None = None) -> RatioStats:
        q1, median, q3 = _quartiles(ratios)
        low, high = median_interval(ratios)
        if converged is None:
            converged = _relative_halfwidth(median, low, high) <= RATIO_CI_TARGET
        return cls(batch, median, q1, q3, len(ratios), low, high, converged)


@dataclass(frozen=True)
class InterleavedTiming:
    """One batch size of an interleaved timing: every model's stats, and each compared model's ratio.

    ``rounds`` were timed, ``dropped`` of them were disturbed and left out (``DROP_RULE``); ``stopped`` says why
    rounds stopped being added: ``converged``, ``budget`` (seconds) or ``max_rounds``.
    """

    batch: int
    stats: dict[str, LatencyStats]
    ratios: dict[str, RatioStats] = field(default_factory=dict)
    block_calls: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    dropped: int = 0
    stopped: str = "converged"
    seconds: float = 0.0

    @property
    def converged(self) -> bool:
        return self.stopped == "converged"

    def stats_with_ratio(self, name: str) -> LatencyStats:
        """``name``'s LatencyStats carrying its ratio to the reference (and how far that ratio may be off)."""
        stats, ratio = self.stats[name], self.ratios.get(name)
        if ratio is None:
            return stats
        return LatencyStats(stats.batch, stats.median_ms, stats.iqr_ms, stats.repeats, fp32_ratio=ratio.median,
                            ratio_spread=ratio.ci, ratio_converged=ratio.converged)

    def protocol(self) -> dict:
        """What the provenance records of this batch size: rounds used and dropped, why it stopped, the spread."""
        return {"rounds": self.rounds, "kept": self.rounds - self.dropped, "dropped": self.dropped,
                "stopped": self.stopped, "seconds": round(self.seconds, 4), "block_calls": dict(self.block_calls),
                "ratios": {name: {"median": r.median, "ci95": [r.ci_low, r.ci_high], "ci": round(r.ci, 4),
                                  "spread": round(r.spread, 4), "converged": r.converged}
                           for name, r in self.ratios.items()}}


def _convergence(times: Mapping[str, Sequence[float]], reference: str) -> tuple[list[int], float]:
    """The kept rounds and the widest relative confidence half-width over the compared models' median ratios (or
    over the models' median times when nothing is compared)."""
    kept = kept_rounds(times)
    compared = [name for name in times if name != reference]
    widest = 0.0
    for name in compared or list(times):
        if compared:
            values = [times[name][r] / times[reference][r] for r in kept if times[reference][r] > 0]
        else:
            values = [times[name][r] for r in kept]
        if not values:
            return kept, math.inf
        median = statistics.median(values)
        widest = max(widest, _relative_halfwidth(median, *median_interval(values)))
    return kept, widest


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
    budget = settings.budget_seconds()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in settings.batch_sizes:
            if should_stop():
                return
            x = batch_of(samples, batch)
            timers = {name: Timer("module(x)", globals={"module": modules[name], "x": x}, num_threads=threads,
                                  timer=clock) for name in names}
            block_seconds = max(MIN_BLOCK_SECONDS, settings.min_run_time / max(1, settings.min_repeats) / 2
                                / len(names))
            calls = {}
            with torch.inference_mode():
                for name in names:
                    # the fastest warm-up call sizes the blocks: a single call is often slowed by a page fault or
                    # a preemption, and blocks sized from it would differ from one repeat to the next
                    fastest = math.inf
                    for _ in range(max(1, settings.warmup)):
                        before = clock()
                        modules[name](x)
                        fastest = min(fastest, clock() - before)
                    calls[name] = max(1, min(100_000, math.ceil(block_seconds / max(fastest, 1e-7))))
                times: dict[str, list[float]] = {name: [] for name in names}
                started = clock()
                rounds, stopped = 0, "max_rounds"
                while rounds < settings.max_repeats:
                    if should_stop():  # between rounds: a round is short, and its pair must stay whole
                        return
                    # rotated every round (AB BA ..., ABC BCA CAB ...): each model follows each other one
                    # equally often, so none keeps the cache warm from a block of its own more than the others
                    shift = rounds % len(names)
                    for name in names[shift:] + names[:shift]:
                        times[name].append(timers[name].timeit(calls[name]).times[0])
                    rounds += 1
                    elapsed = clock() - started
                    if rounds < settings.min_repeats or elapsed < settings.min_run_time:
                        continue
                    if _convergence(times, reference)[1] <= RATIO_CI_TARGET:
                        stopped = "converged"
                        break
                    if elapsed >= budget:
                        stopped = "budget"
                        break
                if stopped == "max_rounds" and _convergence(times, reference)[1] <= RATIO_CI_TARGET:
                    stopped = "converged"
                seconds = clock() - started
            kept = kept_rounds(times)
            stats = {}
            for name, values in times.items():
                q1, median, q3 = _quartiles([values[r] for r in kept])
                stats[name] = LatencyStats(batch, median * 1e3, (q3 - q1) * 1e3, len(kept))
            converged = stopped == "converged"
            ratios = {name: RatioStats.of(batch, [times[name][r] / times[reference][r] for r in kept
                                                  if times[reference][r] > 0], converged=converged)
                      for name in names if name != reference}
            yield InterleavedTiming(batch, stats, ratios, calls, rounds, rounds - len(kept), stopped, seconds)
    finally:
        torch.set_num_threads(previous)
