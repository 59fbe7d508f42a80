"""Latency of ONNX models on ONNX Runtime, several files timed interleaved (the second runtime of issue 14).

Each round times one block of forwards of every file at every batch size, in turn, so machine load hits all files
alike (as :mod:`.latency` interleaves fp32 and the configuration on torch); the figure per file and batch is the
median over rounds of the per-forward time, with the IQR as its spread (:class:`LatencyStats`, ``noisy`` when the
rounds disagree). Blocks repeat the forward until ``min_block_seconds`` so that sub-millisecond models are timed
above the clock's resolution. Needs onnxruntime (the ``[onnx]`` extra); returns plain data.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from qtradeoff.core.measurement.latency import LatencyStats

LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def available() -> bool:
    """Whether ONNX Runtime imports here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def session(path: str | Path, *, threads: int | None = None, optimization: str = "all"):
    """A CPU InferenceSession of ``path`` with ``threads`` intra-op threads and the given optimization level."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[optimization])
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _batch(samples: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(samples))
    return np.ascontiguousarray(np.concatenate([samples] * reps)[:batch].astype(np.float32))


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def time_interleaved(paths: Mapping[str, str | Path], samples, *, batches: Sequence[int] = (1, 32),
                     threads: int | None = None, rounds: int = 15, optimization: str = "all",
                     min_block_seconds: float = 0.02, warmup: int = 3) -> dict[str, dict[int, LatencyStats]]:
    """``{name: {batch: LatencyStats}}`` for every ONNX file of ``paths`` on ``samples`` (batch first)."""
    samples = np.asarray(samples, dtype=np.float32)
    sessions = {name: session(path, threads=threads, optimization=optimization) for name, path in paths.items()}
    feeds = {(name, b): {s.get_inputs()[0].name: _batch(samples, b)} for name, s in sessions.items() for b in batches}
    blocks: dict[tuple[str, int], int] = {}
    for (name, b), feed in feeds.items():
        for _ in range(warmup):
            sessions[name].run(None, feed)
        started = time.perf_counter()
        sessions[name].run(None, feed)
        once = max(time.perf_counter() - started, 1e-6)
        blocks[(name, b)] = max(1, int(min_block_seconds / once))
    times: dict[tuple[str, int], list[float]] = {key: [] for key in feeds}
    for _ in range(rounds):
        for b in batches:
            for name in sessions:
                key = (name, b)
                run, feed, count = sessions[name].run, feeds[key], blocks[key]
                started = time.perf_counter()
                for _ in range(count):
                    run(None, feed)
                times[key].append((time.perf_counter() - started) * 1000.0 / count)
    result: dict[str, dict[int, LatencyStats]] = {name: {} for name in sessions}
    for (name, b), values in times.items():
        lo, hi = _quantiles(values)
        result[name][b] = LatencyStats(b, statistics.median(values), hi - lo, len(values))
    return result
