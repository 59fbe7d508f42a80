"""The interleaved timing protocol (issue 19) on a fake clock: no real timing, every figure known in advance."""

import random

import pytest
import torch

from qtradeoff.core.measurement.interleaved import RatioStats, kept_rounds, median_interval, time_interleaved
from qtradeoff.core.measurement.latency import RATIO_CI_TARGET, LatencySettings, LatencyStats
from qtradeoff.core.measurement.timing_threads import timing_threads


class FakeClock:
    """A clock that only moves when a fake model runs: a call costs what the model says, times the load."""

    def __init__(self):
        self.now = 0.0
        self.load = 1.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def model(self, name: str, cost):
        def forward(x):
            self.calls.append(name)
            self.now += (cost() if callable(cost) else cost) * self.load
            return x

        return forward


SETTINGS = LatencySettings(batch_sizes=(1, 4), threads=1, warmup=2, min_run_time=0.5, min_repeats=7, max_repeats=40)


def test_the_ratio_is_taken_round_by_round_so_load_that_hits_both_sides_cancels():
    clock = FakeClock()
    fp32 = clock.model("fp32", 2e-3)
    config = clock.model("config", 1e-3)
    loads = iter([1.0, 3.0, 1.5, 5.0, 2.0] * 100)

    def stop():  # checked before every round: the machine is slower or faster from round to round
        clock.load = next(loads)
        return False

    timings = list(time_interleaved({"fp32": fp32, "config": config}, torch.zeros(3, 2), SETTINGS,
                                    should_stop=stop, clock=clock))
    assert [t.batch for t in timings] == [1, 4]
    for timing in timings:
        ratio = timing.ratios["config"]
        assert ratio.median == pytest.approx(0.5) and ratio.spread == pytest.approx(0.0, abs=1e-9)
        assert not ratio.noisy and timing.rounds >= SETTINGS.min_repeats and timing.converged
        # the rounds at 3x and 5x load are dropped as disturbed; at most half of them go
        assert 0 < timing.dropped <= timing.rounds // 2 and ratio.rounds == timing.rounds - timing.dropped
        stats = timing.stats_with_ratio("config")
        assert stats.fp32_ratio == pytest.approx(0.5) and stats.ratio_spread == pytest.approx(0.0, abs=1e-9)
        # blocks last about min_run_time / min_repeats / 2 / 2 models: the faster model runs twice the calls
        assert abs(timing.block_calls["config"] - 2 * timing.block_calls["fp32"]) <= 1


def test_blocks_alternate_in_order_abab_then_baba():
    clock = FakeClock()
    models = {"fp32": clock.model("fp32", 0.05), "config": clock.model("config", 0.05)}
    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=0, min_run_time=0.0, min_repeats=4)
    next(time_interleaved(models, torch.zeros(1, 2), settings, clock=clock))
    # one warm-up call per model sizes the blocks; a block is one timed call after Timer's two warm-up calls: 3
    # calls; runs of 6 are a block ending a round followed by the same model opening the next one
    runs: list[list] = []
    for name in clock.calls:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    sizing, rounds = runs[:2], runs[2:]
    assert sizing == [["fp32", 1], ["config", 1]]
    assert rounds == [["fp32", 3], ["config", 6], ["fp32", 6], ["config", 6], ["fp32", 3]]  # AB BA AB BA


def test_three_models_rotate_so_that_none_runs_two_blocks_in_a_row():
    clock = FakeClock()
    models = {name: clock.model(name, 0.05) for name in ("fp32", "tool", "fx")}
    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=0, min_run_time=0.0, min_repeats=6)
    timing = next(time_interleaved(models, torch.zeros(1, 2), settings, clock=clock))
    blocks = clock.calls[3::3]  # after the sizing calls, one name per block of 3 calls
    assert blocks == ["fp32", "tool", "fx", "tool", "fx", "fp32", "fx", "fp32", "tool"] * 2
    assert set(timing.ratios) == {"tool", "fx"}


def test_a_named_reference_gives_every_other_model_its_ratio_over_it_round_by_round():
    # bench_latency times fp32, the tool's and FX's int8 models over FX's: tool/FX straight from each round
    clock = FakeClock()
    models = {"fp32": clock.model("fp32", 4e-3), "tool": clock.model("tool", 1.1e-3), "fx": clock.model("fx", 1e-3)}
    loads = iter([1.0, 2.0, 1.2, 4.0] * 100)

    def stop():
        clock.load = next(loads)
        return False

    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=1, min_run_time=0.2, min_repeats=7)
    timing = next(time_interleaved(models, torch.zeros(1, 2), settings, reference="fx", should_stop=stop,
                                   clock=clock))
    assert set(timing.ratios) == {"fp32", "tool"}
    assert timing.ratios["tool"].median == pytest.approx(1.1) and timing.ratios["fp32"].median == pytest.approx(4.0)
    assert timing.converged and not timing.ratios["tool"].noisy


def test_outliers_on_one_side_are_dropped_and_the_ratio_converges_to_the_true_one():
    clock = FakeClock()
    jitter = random.Random(0)
    cost = {"fp32": 2e-3, "config": 1e-3}
    rounds = iter(range(10_000))
    hit: list[bool] = []

    def stop():  # every fifth call another process takes the core during one of the two blocks of the next round
        r = next(rounds)
        hit.append(r % 5 == 4)
        victim = ("fp32", "config")[r // 5 % 2] if r % 5 == 4 else None
        for name, base in (("fp32", 2e-3), ("config", 1e-3)):
            cost[name] = base * (1 + 0.01 * jitter.random()) * (3.0 if name == victim else 1.0)
        return False

    models = {name: clock.model(name, lambda name=name: cost[name]) for name in ("fp32", "config")}
    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=2, min_run_time=0.3, min_repeats=7)
    timing = next(time_interleaved(models, torch.zeros(1, 2), settings, should_stop=stop, clock=clock))
    ratio = timing.ratios["config"]
    assert timing.stopped == "converged" and ratio.converged and not ratio.noisy
    assert ratio.median == pytest.approx(0.5, rel=0.02) and ratio.ci <= RATIO_CI_TARGET
    # exactly the disturbed rounds (the first call of stop() is the check before the batch, not before a round)
    assert timing.dropped == sum(hit[1:1 + timing.rounds]) > 0
    assert timing.stats["fp32"].median_ms == pytest.approx(2.0, rel=0.02) and not timing.stats["config"].noisy
    record = timing.protocol()
    assert record["dropped"] == timing.dropped and record["kept"] == ratio.rounds and record["stopped"] == "converged"
    assert record["ratios"]["config"]["ci"] <= RATIO_CI_TARGET


def test_a_timing_that_never_converges_stops_at_its_budget_and_is_marked_noisy():
    clock = FakeClock()
    rounds = iter(range(10_000))
    cost = {"fp32": 1e-3}

    def stop():  # fp32 alternates between two speeds 20 % apart (within the drop rule): the median never settles
        cost["fp32"] = 1.2e-3 if next(rounds) % 2 else 1e-3
        return False

    models = {"fp32": clock.model("fp32", lambda: cost["fp32"]), "config": clock.model("config", 1e-3)}
    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=1, min_run_time=0.2, min_repeats=7,
                               max_run_time=0.6)
    timing = next(time_interleaved(models, torch.zeros(1, 2), settings, should_stop=stop, clock=clock))
    ratio = timing.ratios["config"]
    assert timing.stopped == "budget" and not timing.converged and timing.dropped == 0
    assert 0.6 <= timing.seconds < 0.7 and timing.rounds < settings.max_repeats
    assert ratio.noisy and not ratio.converged and ratio.ci > RATIO_CI_TARGET
    stats = timing.stats_with_ratio("config")
    assert stats.noisy and not stats.ratio_converged and stats.ratio_spread == pytest.approx(ratio.ci)
    again = LatencyStats.from_dict(stats.to_dict())
    assert again == stats and again.noisy and stats.to_dict()["fp32_ratio"] == pytest.approx(ratio.median)
    old = {"batch": 1, "median_ms": 1.0, "iqr_ms": 0.0, "repeats": 3}  # records written before the ratio existed
    assert LatencyStats.from_dict(old).fp32_ratio is None and not LatencyStats.from_dict(old).noisy
    old_ratio = {**old, "fp32_ratio": 0.5, "ratio_spread": 0.02}  # before convergence was recorded
    assert LatencyStats.from_dict(old_ratio).ratio_converged and not LatencyStats.from_dict(old_ratio).noisy


def test_the_budget_defaults_to_a_multiple_of_the_minimum_run_time():
    assert LatencySettings(min_run_time=0.3).budget_seconds() == pytest.approx(0.9)
    assert LatencySettings(min_run_time=0.3, max_run_time=0.1).budget_seconds() == pytest.approx(0.3)


def test_median_interval_is_the_order_statistic_interval():
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few values for 95 %: the range
    values = [float(v) for v in range(1, 15)]  # n = 14: P(Bin(14, 1/2) <= 2) = 0.0065, <= 3: 0.0287
    assert median_interval(values) == (3.0, 12.0)
    assert median_interval([float(v) for v in range(1, 7)]) == (1.0, 6.0)  # n = 6: 1/64 <= 0.025
    assert median_interval([]) == (0.0, 0.0)


def test_kept_rounds_drop_disturbed_rounds_but_never_more_than_half():
    times = {"fp32": [1.0, 1.1, 2.0, 1.0], "config": [0.5, 0.5, 0.5, 0.9]}
    assert kept_rounds(times) == [0, 1]  # round 2: fp32 at 2x its fastest; round 3: config at 1.8x
    mostly_disturbed = {"fp32": [1.0, 2.0, 3.0, 2.5, 1.6]}
    assert kept_rounds(mostly_disturbed) == [0, 1, 4]  # the calmer half (rounded up), in order


def test_ratio_stats_spread_is_the_farther_quartile():
    stats = RatioStats.of(1, [0.8, 1.0, 1.0, 1.0, 1.3])
    assert stats.median == 1.0 and stats.spread == pytest.approx(0.0)
    stats = RatioStats.of(1, [0.5, 0.9, 1.0, 1.2, 2.0])
    assert stats.spread == pytest.approx(0.2)
    assert RatioStats.of(1, [1.0]).spread == 0.0


def test_stopping_yields_nothing_more_and_restores_threads():
    clock = FakeClock()
    models = {"fp32": clock.model("fp32", 1e-3), "config": clock.model("config", 1e-3)}
    before = torch.get_num_threads()
    calls = 0

    def stop():
        nonlocal calls
        calls += 1
        return calls > 3

    settings = LatencySettings(batch_sizes=(1, 4), threads=1, min_repeats=7)
    assert list(time_interleaved(models, torch.zeros(1, 2), settings, should_stop=stop, clock=clock)) == []
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("cores", "load", "current", "expected"), [
    (2, 0.1, 2, 2),    # quiet: every core
    (2, 1.4, 2, 1),    # another process computes: one core left to it
    (1, 3.0, 1, 1),    # never below one
    (8, 2.0, 2, 2),    # a pool worker's share is not exceeded
])
def test_timing_threads_leave_a_core_to_other_work(cores, load, current, expected):
    pinned = timing_threads(cores=cores, load=load, current=current)
    assert pinned.threads == expected and pinned.reason
    assert timing_threads(3, cores=cores, load=load, current=current).threads == 3
