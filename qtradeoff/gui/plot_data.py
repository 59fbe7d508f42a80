"""What the Pareto plot draws, without Qt: the point store (NumPy columns grown by doubling, so filling it is
amortised O(1) a point), the evaluation set of each point, the latency sources the latency axis can show, the
frontiers of one evaluation set, and the decimation of dense point clouds.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qtradeoff.core.measurement.pareto import pareto_front_arrays


def point_key(config: Any) -> str:
    """What identifies a point: the configuration's key without its locked layers. Locks steer searches, not
    what a configuration measures, so locking a layer neither adds a point nor re-evaluates one."""
    return config.with_locked(()).key() if config.locked else config.key()


def _point_key(result: Any) -> str:
    config = getattr(result, "config", None)
    key = point_key(config) if config is not None and config.locked else result.config_key
    # a recovered point is the same configuration with other weights: a point of its own beside the original
    recovered = (getattr(result, "provenance", None) or {}).get("recovered")
    return f"{key}+recovered:{recovered.get('file', '')}" if isinstance(recovered, dict) else key


# -- evaluation sets -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSet:
    """The samples a point was measured on: the first ``samples`` of the ``split`` split (``of`` in all) of the
    data ``data``; ``seed`` as the evaluation recorded it. Points of two sets are not comparable."""

    samples: int
    of: int | None = None
    seed: int = 0
    split: str = "eval"
    data: str = ""

    def label(self) -> str:
        size = f"first {self.samples} of {self.of}" if self.of and self.of != self.samples else f"all {self.samples}"
        return f"{size} {self.split} samples" + (f" (seed {self.seed})" if self.seed else "")


def eval_set_of(result: Any) -> EvalSet:
    """The evaluation set a result records (``provenance["eval_subset"]``, ``seed``, ``data``); a result read from
    an older file without them is known by its sample count alone."""
    provenance = getattr(result, "provenance", None)
    provenance = provenance if isinstance(provenance, dict) else {}
    subset = provenance.get("eval_subset") if isinstance(provenance.get("eval_subset"), dict) else {}
    data = provenance.get("data") if isinstance(provenance.get("data"), dict) else {}
    of = subset.get("of")
    try:
        seed = int(provenance.get("seed") or 0)
    except (TypeError, ValueError):
        seed = 0
    return EvalSet(samples=int(result.eval_samples), of=int(of) if isinstance(of, int | float) else None,
                   seed=seed, data=str(data.get("name", "") or ""))


# -- latency sources -----------------------------------------------------------------------------------------------
def _runtime_latency(runtime: str) -> Callable[[Any], float | None]:
    def read(result: Any) -> float | None:
        stats = (getattr(result, "latency_by_runtime", None) or {}).get(runtime) or ()
        for item in stats:
            if getattr(item, "batch", None) == 1:
                return float(item.median_ms)
        return None

    return read


@dataclass(frozen=True)
class LatencySource:
    """One choice of the latency axis: ``read(result)`` gives the batch-1 ms (None when the point has none).
    ``measured`` sources plot the other points at their estimate, drawn apart and left off the frontier."""

    key: str
    label: str
    read: Callable[[Any], float | None]
    measured: bool = True


LATENCY_SOURCES: tuple[LatencySource, ...] = (
    LatencySource("estimated", "Estimated latency for every point",
                  lambda result: result.latency_ms(1, measured=False), measured=False),
    LatencySource("torch", "Measured on torch where available", lambda result: result.latency_ms(1, measured=True)),
    LatencySource("onnxruntime", "Measured on ONNX Runtime where available", _runtime_latency("onnxruntime")),
    LatencySource("openvino", "Measured on OpenVINO where available", _runtime_latency("openvino")),
)
SOURCE_KEYS = tuple(source.key for source in LATENCY_SOURCES)


def latency_source(key: str) -> LatencySource:
    for source in LATENCY_SOURCES:
        if source.key == key:
            return source
    raise ValueError(f"unknown latency source {key!r}; choose one of {', '.join(SOURCE_KEYS)}")


# -- the store -----------------------------------------------------------------------------------------------------
_FLOAT_COLUMNS = ("accuracy", "ci_low", "ci_high", "memory") + tuple(f"latency_{key}" for key in SOURCE_KEYS)


class PointStore:
    """All evaluated configurations and their metrics, one row per (configuration, subset size).

    Columns are NumPy arrays (read them as attributes: ``accuracy`` in percent, ``ci_low``/``ci_high``, ``memory``
    in weight bytes, ``latency_<source>`` in ms or NaN, ``baseline``, ``eval_set`` as an index into ``eval_sets``).
    They grow by doubling, so adding n points costs O(n), not the O(n²) of appending to arrays.
    """

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.meta: list[dict] = []
        self.eval_sets: list[EvalSet] = []
        self._set_index: dict[EvalSet, int] = {}
        self._n = 0
        self._cap = 0
        self._columns: dict[str, np.ndarray] = {}
        self._grow(64)
        self._keys: list[str] = []  # point_key of each row
        self._index: dict[tuple[str, int], int] = {}
        self._rows_of_key: dict[str, list[int]] = {}
        self.version = 0  # counts changes: what is derived from the columns (frontiers) is cached on it
        self.replaced = 0  # counts rows replaced in place (the other changes only add rows)

    def _grow(self, capacity: int) -> None:
        old = self._columns
        columns = {name: np.full(capacity, np.nan) for name in _FLOAT_COLUMNS}
        columns["baseline"] = np.zeros(capacity, dtype=bool)
        columns["eval_set"] = np.zeros(capacity, dtype=np.int32)
        for name, array in old.items():
            columns[name][:self._n] = array[:self._n]
        self._columns, self._cap = columns, capacity

    def __getattr__(self, name: str) -> np.ndarray:
        columns = self.__dict__.get("_columns")
        if columns is not None and name in columns:
            return columns[name][:self.__dict__["_n"]]
        raise AttributeError(name)

    # the names the plot used before there were several latency sources
    @property
    def latency_measured(self) -> np.ndarray:
        return self.latency_torch

    def __len__(self) -> int:
        return self._n

    def find(self, key: str, eval_set: int | None = None) -> int | None:
        """Index of the latest point evaluated for a :func:`point_key` (a config's key when it locks nothing), in
        evaluation set ``eval_set`` when given."""
        for index in reversed(self._rows_of_key.get(key, ())):
            if eval_set is None or self._columns["eval_set"][index] == eval_set:
                return index
        return None

    def lookup(self, key: str, eval_samples: int) -> int | None:
        return self._index.get((key, eval_samples))

    def set_of(self, eval_set: EvalSet) -> int:
        """The index of an evaluation set, registered on first sight."""
        index = self._set_index.get(eval_set)
        if index is None:
            index = self._set_index[eval_set] = len(self.eval_sets)
            self.eval_sets.append(eval_set)
        return index

    def _row(self, result: Any, meta: dict) -> dict[str, Any]:
        accuracy = result.accuracy if result.accuracy is not None else result.agreement
        ci = result.accuracy_ci95 if result.accuracy is not None else result.agreement_ci95
        ci = ci or (accuracy, accuracy)
        row: dict[str, Any] = {"accuracy": 100.0 * accuracy, "ci_low": 100.0 * ci[0], "ci_high": 100.0 * ci[1],
                               "memory": float(result.weight_bytes), "baseline": meta.get("tag") == "baseline",
                               "eval_set": self.set_of(eval_set_of(result))}
        for source in LATENCY_SOURCES:
            value = source.read(result)
            row[f"latency_{source.key}"] = math.nan if value is None else float(value)
        if math.isnan(row["latency_estimated"]):
            row["latency_estimated"] = row["latency_torch"]  # a point with no estimate keeps its measurement
        return row

    def add(self, result: Any, meta: dict) -> int:
        """Add a result; one evaluated again on the same subset (e.g. now measured) replaces its old point."""
        row = self._row(result, meta)
        key = (_point_key(result), int(result.eval_samples))
        index = self._index.get(key)
        if index is not None:
            if math.isnan(row["latency_torch"]) and not math.isnan(self._columns["latency_torch"][index]):
                return index  # keep the measured point: an estimate never replaces a measurement
            self.results[index] = result
            self.meta[index] = meta
            self.replaced += 1
        else:
            if self._n == self._cap:
                self._grow(2 * self._cap)
            index = self._n
            self._n += 1
            self.results.append(result)
            self.meta.append(meta)
            self._keys.append(key[0])
            self._index[key] = index
            self._rows_of_key.setdefault(key[0], []).append(index)
        for name, value in row.items():
            self._columns[name][index] = value
        self.version += 1
        return index

    def latency(self, source: str | bool = "estimated") -> tuple[np.ndarray, np.ndarray]:
        """x values in ms for a latency source and whether each one is that source's measurement (the others are
        their estimates). ``True``/``False`` stand for "torch"/"estimated"."""
        key = {True: "torch", False: "estimated"}.get(source, source) if isinstance(source, bool) else source
        chosen = latency_source(str(key))
        estimated = self._columns["latency_estimated"][:self._n]
        if not chosen.measured:
            return estimated.copy(), np.zeros(self._n, dtype=bool)
        values = self._columns[f"latency_{chosen.key}"][:self._n]
        measured = ~np.isnan(values)
        return np.where(measured, values, estimated), measured

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["config_key", "tag", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "agreement",
                         "sqnr_db", "eval_samples", "weight_bytes", "fp32_weight_bytes", "peak_activation_bytes",
                         "latency_ms_measured", "latency_ms_estimated", "weight_precision", "activation_precision",
                         "layer_overrides", "config_json"])
        for result, meta in zip(self.results, self.meta, strict=True):
            ci = result.accuracy_ci95 or (None, None)
            config = result.config
            writer.writerow([
                result.config_key, meta.get("tag", ""), result.accuracy, ci[0], ci[1], result.agreement,
                result.sqnr_db, result.eval_samples, result.weight_bytes, result.fp32_weight_bytes,
                result.peak_activation_bytes, result.latency_ms(1, measured=True),
                result.latency_ms(1, measured=False), config.weight.precision, config.activation.precision,
                len(config.overrides()), json.dumps(config.to_dict(), sort_keys=True),
            ])
        return out.getvalue()


# -- frontiers and decimation --------------------------------------------------------------------------------------
PREFILTER_ABOVE = 4096  # rows above which the frontier of a sample first removes the rows it dominates


def frontier_2d(rows: np.ndarray, cost: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Store rows (among ``rows``) on the accuracy ↑ / ``cost`` ↓ frontier, ascending.

    Above :data:`PREFILTER_ABOVE` rows, the frontier of an evenly spaced sample (real rows) first removes every row
    one of them strictly dominates (one binary search a row); what is left is sorted as before. Exact: a dominated
    row is never on the frontier, and the sample's members are kept or removed like any other row."""
    if not len(rows):
        return rows
    if len(rows) > PREFILTER_ABOVE:
        sample = rows[::len(rows) // 1024]
        pivots = sample[pareto_front_arrays(np.column_stack((cost[sample], accuracy[sample])), (False, True))]
        pivots = pivots[np.argsort(cost[pivots], kind="stable")]
        pc, pa = cost[pivots], accuracy[pivots]
        best = np.maximum.accumulate(pa) if len(pa) else pa  # most accurate pivot at or below each cost
        c, a = cost[rows], accuracy[rows]
        at = np.searchsorted(pc, c, side="right") - 1
        valid = (at >= 0) & np.isfinite(c) & np.isfinite(a)
        where = np.clip(at, 0, None)
        if len(pa):
            # a pivot at or below this cost that is more accurate, or as accurate and cheaper, dominates the row
            at_best = np.searchsorted(pa, best[where], side="left")  # pa ascends along a front: its cheapest
            cheapest = pc[np.clip(at_best, 0, len(pc) - 1)]
            dominated = valid & ((best[where] > a) | ((best[where] == a) & (cheapest < c)))
            rows = rows[~dominated]
    found = pareto_front_arrays(np.column_stack((cost[rows], accuracy[rows])), (False, True))
    return rows[found]


def frontier_3d(rows: np.ndarray, latency: np.ndarray, memory: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Store rows (among ``rows``) on the joint accuracy ↑ / latency ↓ / memory ↓ frontier, ascending."""
    if not len(rows):
        return rows
    found = pareto_front_arrays(np.column_stack((accuracy[rows], latency[rows], memory[rows])), (True, False, False))
    return rows[found]


def view_fronts(rows: np.ndarray, latency: np.ndarray, measured: np.ndarray, memory: np.ndarray,
                accuracy: np.ndarray, *, measured_only: bool, three_objective: bool) -> dict[str, np.ndarray]:
    """The store rows (among ``rows``) on the latency view's and the memory view's frontier; both are the joint
    accuracy/latency/memory set when ``three_objective``. With ``measured_only`` only measured latencies take part
    in a latency frontier (an estimate never competes with a measurement)."""
    timed = rows[measured[rows]] if measured_only else rows
    timed = timed[np.isfinite(latency[timed])]
    if three_objective:
        joint = frontier_3d(timed, latency, memory, accuracy)
        return {"latency": joint, "memory": joint}
    return {"latency": frontier_2d(timed, latency, accuracy), "memory": frontier_2d(rows, memory, accuracy)}


def frontier_candidates(fronts: dict[str, np.ndarray], rows: np.ndarray, known: int) -> np.ndarray:
    """The rows a frontier can still come from after rows ``known``.. were added (none changed): the old fronts'
    members and the new rows. A row dominated before stays dominated (by a member of the old front, or by the new
    row that beat that member), so the fronts of these candidates are the fronts of all ``rows``, at a cost of
    the fronts' size plus the new rows instead of every row."""
    return np.unique(np.concatenate([*fronts.values(), rows[rows >= known]]).astype(rows.dtype, copy=False))


DECIMATE_ABOVE = 2000  # points in a view; above this one point per cell is drawn
CELL_PX = 3.0


def decimate(rows: np.ndarray, x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float],
             pixels: tuple[float, float], *, above: int = DECIMATE_ABOVE, cell_px: float = CELL_PX) -> np.ndarray:
    """One of ``rows`` per occupied ``cell_px``-pixel cell once there are more than ``above``; every row otherwise.
    ``bounds`` is the view's (x0, y0, x1, y1) in data units and ``pixels`` its size on screen; rows outside it share
    the cells along its edges (they are not visible). O(n) plus the number of cells: one scatter into a grid, no
    sort."""
    if len(rows) <= above:
        return rows
    x0, y0, x1, y1 = (float(b) for b in bounds)
    nx = max(1, int(math.ceil(float(pixels[0]) / cell_px))) + 2  # one cell of margin on each side
    ny = max(1, int(math.ceil(float(pixels[1]) / cell_px))) + 2
    if not (x1 > x0 and y1 > y0) or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return rows
    xs, ys = x[rows], y[rows]
    finite = np.isfinite(xs) & np.isfinite(ys)
    rows, xs, ys = rows[finite], xs[finite], ys[finite]
    cx = np.clip(((xs - x0) * ((nx - 2) / (x1 - x0))).astype(np.int64) + 1, 0, nx - 1)
    cy = np.clip(((ys - y0) * ((ny - 2) / (y1 - y0))).astype(np.int64) + 1, 0, ny - 1)
    cells = cx * ny + cy
    chosen = np.full(nx * ny, -1, dtype=np.int64)
    chosen[cells] = np.arange(len(rows))  # where rows share a cell, one of them is written: it stands for them
    kept = chosen[chosen >= 0]
    kept.sort()
    return rows[kept]


class Decimation:
    """:func:`decimate` of one point group kept between redraws: when rows were only added since the last call
    (same ``key``, bounds and size), the new rows are scattered into the kept grid of cells, so a redraw after a
    new point costs the new rows and the drawn ones, not every row. The result equals :func:`decimate`'s: in both
    the last row written into a cell stands for it."""

    def __init__(self) -> None:
        self._geometry: tuple | None = None
        self._grid = np.empty(0, dtype=np.int64)  # per cell: the store row standing for it, or -1
        self._kept = np.empty(0, dtype=np.int64)  # the rows standing for a cell, ascending
        self._count = 0  # store rows the grid has seen (rows below it are in)
        self._cells = (0, 0)

    def reset(self) -> None:
        self._geometry = None

    def __call__(self, rows: np.ndarray, x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float],
                 pixels: tuple[float, float], *, count: int, key: Any = None, above: int = DECIMATE_ABOVE,
                 cell_px: float = CELL_PX) -> np.ndarray:
        """The rows to draw among ``rows`` (ascending store rows, all below ``count``, the store's length);
        ``key`` names everything else the rows' positions depend on (their values change only with it)."""
        x0, y0, x1, y1 = (float(b) for b in bounds)
        if len(rows) <= above or not (x1 > x0 and y1 > y0) or not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            self._geometry = None
            return rows
        geometry = (key, (x0, y0, x1, y1), tuple(float(p) for p in pixels), float(cell_px))
        if geometry != self._geometry or count < self._count:
            nx = max(1, int(math.ceil(float(pixels[0]) / cell_px))) + 2  # one cell of margin on each side
            ny = max(1, int(math.ceil(float(pixels[1]) / cell_px))) + 2
            self._geometry, self._cells, self._count = geometry, (nx, ny), 0
            self._grid = np.full(nx * ny, -1, dtype=np.int64)
            self._kept = np.empty(0, dtype=np.int64)
        new = rows[np.searchsorted(rows, self._count):]
        self._count = count
        if len(new):
            self._add(new.astype(np.int64, copy=False), x, y)
        return self._kept

    def _add(self, new: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        x0, y0, x1, y1 = self._geometry[1]
        nx, ny = self._cells
        xs, ys = x[new], y[new]
        finite = np.isfinite(xs) & np.isfinite(ys)
        new, xs, ys = new[finite], xs[finite], ys[finite]
        cx = np.clip(((xs - x0) * ((nx - 2) / (x1 - x0))).astype(np.int64) + 1, 0, nx - 1)
        cy = np.clip(((ys - y0) * ((ny - 2) / (y1 - y0))).astype(np.int64) + 1, 0, ny - 1)
        cells = cx * ny + cy
        displaced = self._grid[cells]
        displaced = displaced[displaced >= 0]
        self._grid[cells] = new  # where rows share a cell, the last one written stands for them
        winners = new[self._grid[cells] == new]
        kept = self._kept[~np.isin(self._kept, displaced)] if len(displaced) else self._kept
        self._kept = np.concatenate((kept, winners))  # every new row is above every kept one: still ascending
