"""Frontier tests: incremental and batch versions against the O(n²) brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtradeoff.core.measurement.pareto import DIRECTIONS, Frontier, brute_force_front, pareto_front_2d

# Small integer grids make ties and duplicates frequent, which is where frontier code breaks.
coord = st.integers(min_value=0, max_value=6)
points3 = st.lists(st.tuples(coord, coord, coord), max_size=40)
NAMES = ("accuracy", "latency", "memory")


def _minimised(point, objectives):
    return tuple(-v if DIRECTIONS[n] > 0 else v for n, v in zip(objectives, point, strict=True))


@settings(max_examples=150, deadline=None)
@given(points3)
def test_frontier_matches_brute_force_for_all_objective_sets(points):
    for objectives in [NAMES, *itertools.combinations(NAMES, 2)]:
        frontier = Frontier(objectives)
        index = [NAMES.index(o) for o in objectives]
        chosen = [tuple(p[i] for i in index) for p in points]
        for i, p in enumerate(chosen):
            frontier.add(i, dict(zip(objectives, p, strict=True)))
        expected = set(brute_force_front([_minimised(p, objectives) for p in chosen]))
        assert frontier.members_set() == expected
        assert len(frontier) == len(expected)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(coord, coord), max_size=50), st.tuples(st.booleans(), st.booleans()))
def test_batch_front_2d_matches_brute_force(points, maximize):
    signed = [tuple(-v if m else v for v, m in zip(p, maximize, strict=True)) for p in points]
    assert set(pareto_front_2d(points, maximize)) == set(brute_force_front(signed))


def test_add_reports_membership_and_evicts():
    frontier = Frontier(("accuracy", "memory"))
    assert frontier.add("a", {"accuracy": 0.9, "memory": 100})
    assert not frontier.add("b", {"accuracy": 0.8, "memory": 200})
    assert frontier.add("c", {"accuracy": 0.95, "memory": 50})
    assert frontier.members() == ["c"]
    assert frontier.values("c") == {"accuracy": 0.95, "memory": 50.0}


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        Frontier(("accuracy", "speed"))
    frontier = Frontier()
    with pytest.raises(ValueError):
        frontier.add(1, {"accuracy": 0.9, "latency": None, "memory": 3})
    frontier.add(2, {"accuracy": 0.9, "latency": 1.0, "memory": 3})
    with pytest.raises(ValueError):
        frontier.add(2, {"accuracy": 0.9, "latency": 1.0, "memory": 3})


def test_objectives_of_a_result_prefers_measured_latency():
    from types import SimpleNamespace

    from qtradeoff.core.measurement.pareto import objectives_of

    latencies = {(1, True): None, (1, False): 0.4}
    result = SimpleNamespace(accuracy=None, agreement=0.97, weight_bytes=1000,
                             latency_ms=lambda batch, measured=True: latencies[(batch, measured)])
    assert objectives_of(result) == {"accuracy": 0.97, "latency": 0.4, "memory": 1000.0}
    latencies[(1, True)] = 0.5
    assert objectives_of(result)["latency"] == 0.5


def test_pareto_front_arrays_matches_a_brute_force_sweep():
    import numpy as np

    from qtradeoff.core.measurement.pareto import pareto_front_arrays

    rng = np.random.default_rng(7)
    for k in (2, 3, 4):
        for n in (0, 1, 5, 60, 300):
            values = rng.integers(0, 8, size=(n, k)).astype(float)  # coarse: many ties and exact duplicates
            if n > 3:
                values[2, 0] = np.nan  # a row with a missing value takes no part
            maximize = [True] + [False] * (k - 1)  # accuracy up, the costs down
            got = pareto_front_arrays(values, maximize).tolist()
            signed = np.where(maximize, -values, values)
            finite = [i for i in range(n) if np.isfinite(signed[i]).all()]
            expected = [finite[i] for i in brute_force_front([signed[i] for i in finite])]
            assert got == expected, (k, n)
            if k == 2:
                assert got == sorted(finite[i] for i in pareto_front_2d([values[i] for i in finite],
                                                                        maximize=(True, False)))
