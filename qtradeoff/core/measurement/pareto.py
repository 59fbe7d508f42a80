"""The Pareto frontier of evaluated configurations: non-dominated points over accuracy ↑, latency ↓ and memory ↓.

:class:`Frontier` is updated one point at a time as results arrive. Over two objectives it keeps the frontier
sorted and inserts with ``bisect`` (O(log n) search per point, O(n log n) for a whole run); over three it
compares against the current members. :func:`pareto_front_2d` is the batch sort-and-sweep version.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Mapping, Sequence

# Direction of each known objective: +1 larger is better, -1 smaller is better.
DIRECTIONS: dict[str, int] = {"accuracy": +1, "latency": -1, "memory": -1}


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` dominates ``b``, both in minimisation form: no worse everywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front_2d(points: Sequence[Sequence[float]], maximize: tuple[bool, bool] = (False, False)) -> list[int]:
    """Indices of the non-dominated points among 2-D ``points``, in O(n log n) (sort, then one sweep).

    Exact duplicates of a frontier point are all kept (neither dominates the other). The indices come back in
    ascending order of the first objective (as minimised).
    """
    signs = tuple(-1.0 if m else 1.0 for m in maximize)
    keyed = sorted(
        ((signs[0] * float(p[0]), signs[1] * float(p[1]), i) for i, p in enumerate(points)),
        key=lambda t: (t[0], t[1]),
    )
    front: list[int] = []
    best_y = math.inf
    last: tuple[float, float] | None = None
    for x, y, i in keyed:
        if y < best_y:
            front.append(i)
            best_y = y
            last = (x, y)
        elif last is not None and (x, y) == last:
            front.append(i)  # duplicate of the point just admitted
    return front


class Frontier:
    """Incrementally maintained non-dominated set over two or three of ``accuracy``, ``latency``, ``memory``.

    ``add(point_id, values)`` takes a mapping holding at least the frontier's objectives (e.g.
    ``{"accuracy": 0.97, "latency": 0.41, "memory": 48211}``) and returns whether the point is on the frontier
    after the addition. Points are never forgotten, so :meth:`members` stays exact as new points dominate old ones.
    """

    def __init__(self, objectives: Sequence[str] = ("accuracy", "latency", "memory")):
        objectives = tuple(objectives)
        unknown = [o for o in objectives if o not in DIRECTIONS]
        if unknown or len(objectives) not in (2, 3) or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must be two or three distinct names out of {sorted(DIRECTIONS)}")
        self.objectives = objectives
        self._values: dict[Hashable, tuple[float, ...]] = {}  # every point ever added, in minimisation form
        # 2-D: frontier sorted by first objective; _xs mirrors the first coordinate for bisect.
        self._xs: list[float] = []
        self._front: list[tuple[float, float, Hashable]] = []
        # 3-D: frontier members, in insertion order.
        self._members: dict[Hashable, tuple[float, ...]] = {}

    def __len__(self) -> int:
        return len(self._front) if len(self.objectives) == 2 else len(self._members)

    def __contains__(self, point_id: object) -> bool:
        return point_id in self.members_set()

    def _key(self, values: Mapping[str, float]) -> tuple[float, ...]:
        key = []
        for name in self.objectives:
            value = values.get(name)
            if value is None or not math.isfinite(float(value)):
                raise ValueError(f"objective {name!r} must be a finite number, got {value!r}")
            key.append(-float(value) if DIRECTIONS[name] > 0 else float(value))
        return tuple(key)

    def add(self, point_id: Hashable, values: Mapping[str, float]) -> bool:
        """Add one point; returns True when it is non-dominated (it may evict current members)."""
        if point_id in self._values:
            raise ValueError(f"point {point_id!r} was already added; use a fresh id per result")
        key = self._key(values)
        self._values[point_id] = key
        return self._add_2d(point_id, key) if len(key) == 2 else self._add_nd(point_id, key)

    def _add_2d(self, point_id: Hashable, key: tuple[float, ...]) -> bool:
        x, y = key
        j = bisect_right(self._xs, x) - 1  # rightmost member with x' <= x: the smallest y among them
        if j >= 0:
            xj, yj, _ = self._front[j]
            if yj < y or (yj == y and xj < x):
                return False
        k = bisect_left(self._xs, x)
        while k < len(self._front) and self._front[k][0] == x and self._front[k][1] == y:
            k += 1  # exact duplicates stay
        end = k
        while end < len(self._front) and self._front[end][1] >= y:
            end += 1  # y strictly decreases along the frontier, so the dominated members form one run
        del self._front[k:end]
        del self._xs[k:end]
        self._front.insert(k, (x, y, point_id))
        self._xs.insert(k, x)
        return True

    def _add_nd(self, point_id: Hashable, key: tuple[float, ...]) -> bool:
        if any(_dominates(other, key) for other in self._members.values()):
            return False
        for other_id in [o for o, other in self._members.items() if _dominates(key, other)]:
            del self._members[other_id]
        self._members[point_id] = key
        return True

    def members(self) -> list[Hashable]:
        """Ids on the frontier: by ascending first objective (two objectives) or insertion order (three)."""
        if len(self.objectives) == 2:
            return [point_id for _, _, point_id in self._front]
        return list(self._members)

    def members_set(self) -> set[Hashable]:
        return set(self.members())

    def values(self, point_id: Hashable) -> dict[str, float]:
        """The objectives of a point as given (accuracy back to its natural sign)."""
        key = self._values[point_id]
        return {n: (-v if DIRECTIONS[n] > 0 else v) for n, v in zip(self.objectives, key, strict=True)}


def objectives_of(result, *, batch: int = 1) -> dict[str, float | None]:
    """The three frontier objectives of a :class:`~qtradeoff.core.engine.measure.Result`.

    accuracy is top-1 accuracy, or top-1 agreement with the fp32 model when the data has no labels; latency is the
    measured median at ``batch`` (ms), else the roofline estimate; memory is the weight storage in bytes.
    """
    latency = result.latency_ms(batch, measured=True)
    if latency is None:
        latency = result.latency_ms(batch, measured=False)
    accuracy = result.accuracy if result.accuracy is not None else result.agreement
    return {"accuracy": accuracy, "latency": latency, "memory": float(result.weight_bytes)}


def brute_force_front(points: Iterable[Sequence[float]]) -> list[int]:
    """O(n²) reference: indices of points (all objectives minimised) that no other point dominates."""
    points = [tuple(map(float, p)) for p in points]
    return [i for i, p in enumerate(points) if not any(_dominates(q, p) for q in points)]


def pareto_front_arrays(values, maximize=None):
    """Indices (ascending) of the non-dominated rows of an ``(n, k)`` array, vectorised with NumPy.

    ``maximize`` is one flag per column (default: every column minimised). Rows with a NaN or infinite value take
    no part. Exact duplicates of a non-dominated row are all kept, as :func:`pareto_front_2d` does. Two columns:
    one sort and a running minimum, O(n log n). More columns: each pass removes every row the best remaining
    candidate dominates, so the cost is O(n · k · passes), and passes stay near the frontier's size.
    """
    import numpy as np

    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"values must be an (n, k) array, got shape {v.shape}")
    n, k = v.shape
    if maximize is not None:
        flags = np.asarray(maximize, dtype=bool)
        if flags.shape != (k,):
            raise ValueError(f"maximize needs one flag per column ({k}), got {flags.shape}")
        v = np.where(flags, -v, v)
    rows = np.flatnonzero(np.isfinite(v).all(axis=1))
    if not len(rows) or k == 0:
        return rows
    v = v[rows]
    if k == 1:
        return rows[v[:, 0] == v[:, 0].min()]
    if k == 2:
        order = np.lexsort((v[:, 1], v[:, 0]))  # by x, then y
        x, y = v[order, 0], v[order, 1]
        previous = np.concatenate(([np.inf], np.minimum.accumulate(y)[:-1]))
        strict = y < previous
        starts = np.concatenate(([True], (x[1:] != x[:-1]) | (y[1:] != y[:-1])))
        first = np.flatnonzero(starts)[np.cumsum(starts) - 1]  # the first row of each run of equal points
        return np.sort(rows[order[strict[first]]])
    order = np.argsort(v.sum(axis=1), kind="stable")  # good dominators first: each pass removes many rows
    index, points = rows[order], v[order]
    i = 0
    while i < len(points):
        p = points[i]
        dominated = np.all(p <= points, axis=1) & np.any(p < points, axis=1)
        keep = ~dominated
        i = int(keep[:i].sum()) + 1
        index, points = index[keep], points[keep]
    return np.sort(index)
