"""The interleaved timing protocol (issue 19) on a fake clock: no real timing, every figure known in advance."""

import pytest
import torch

from qtradeoff.core.measurement.interleaved import RatioStats, time_interleaved
from qtradeoff.core.measurement.latency import RATIO_NOISY_SPREAD, LatencySettings, LatencyStats
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
        assert not ratio.noisy and ratio.rounds >= SETTINGS.min_repeats
        assert timing.stats["fp32"].spread > 0.25  # timed alone, these block means would have been noisy
        stats = timing.stats_with_ratio("config")
        assert stats.fp32_ratio == pytest.approx(0.5) and stats.ratio_spread == pytest.approx(0.0, abs=1e-9)
        # blocks last about min_run_time / min_repeats / 2 models: the faster model runs twice the calls
        assert abs(timing.block_calls["config"] - 2 * timing.block_calls["fp32"]) <= 1


def test_blocks_alternate_in_order_abab_then_baba():
    clock = FakeClock()
    models = {"fp32": clock.model("fp32", 0.05), "config": clock.model("config", 0.05)}
    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=0, min_run_time=0.0, min_repeats=4)
    next(time_interleaved(models, torch.zeros(1, 2), settings, clock=clock))
    # a block is one timed call after Timer's two warm-up calls: 3 calls; runs of 6 are a block ending a round
    # followed by the same model opening the next one
    runs: list[list] = []
    for name in clock.calls:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    sizing, rounds = runs[:2], runs[2:]
    assert sizing == [["fp32", 3], ["config", 3]]
    assert rounds == [["fp32", 3], ["config", 6], ["fp32", 6], ["config", 6], ["fp32", 3]]  # AB BA AB BA


def test_three_models_rotate_so_that_none_runs_two_blocks_in_a_row():
    clock = FakeClock()
    models = {name: clock.model(name, 0.05) for name in ("fp32", "tool", "fx")}
    settings = LatencySettings(batch_sizes=(1,), threads=1, warmup=0, min_run_time=0.0, min_repeats=6)
    timing = next(time_interleaved(models, torch.zeros(1, 2), settings, clock=clock))
    blocks = clock.calls[9::3]  # after the sizing calls, one name per block of 3 calls
    assert blocks == ["fp32", "tool", "fx", "tool", "fx", "fp32", "fx", "fp32", "tool"] * 2
    assert set(timing.ratios) == {"tool", "fx"}


def test_ratios_that_disagree_are_marked_noisy_and_the_mark_reaches_the_stats_and_json():
    clock = FakeClock()
    slow = iter([False, False, True] * 100)
    cost = {"config": 1e-3}

    def stop():  # something else competes with the configuration's blocks every third round, not with fp32's
        cost["config"] = 3e-3 if next(slow) else 1e-3
        return False

    models = {"fp32": clock.model("fp32", 1e-3), "config": clock.model("config", lambda: cost["config"])}
    timing = next(time_interleaved(models, torch.zeros(1, 2), SETTINGS, should_stop=stop, clock=clock))
    ratio = timing.ratios["config"]
    assert ratio.spread > RATIO_NOISY_SPREAD and ratio.noisy
    stats = timing.stats_with_ratio("config")
    assert stats.noisy
    again = LatencyStats.from_dict(stats.to_dict())
    assert again == stats and again.noisy and stats.to_dict()["fp32_ratio"] == pytest.approx(ratio.median)
    old = {"batch": 1, "median_ms": 1.0, "iqr_ms": 0.0, "repeats": 3}  # records written before the ratio existed
    assert LatencyStats.from_dict(old).fp32_ratio is None and not LatencyStats.from_dict(old).noisy


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
