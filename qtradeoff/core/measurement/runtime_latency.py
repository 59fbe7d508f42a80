"""Latency of ONNX files on other runtimes than torch (ONNX Runtime, OpenVINO), several files timed interleaved.

Each round times one block of forwards of every file at every batch size, in turn, so machine load hits all files
alike (as :mod:`.latency` interleaves fp32 and the configuration on torch); the figure per file and batch is the
median over rounds of the per-forward time, with the IQR as its spread (:class:`LatencyStats`, ``noisy`` when the
rounds disagree). Blocks repeat the forward until ``min_block_seconds`` so that sub-millisecond models are timed
above the clock's resolution.

A runtime is a name with an ``available()`` check and a ``runner(path, threads)`` that compiles one file and returns
a call ``inputs -> outputs`` on NumPy arrays. Both runtimes are optional extras (``qtradeoff[onnx]``,
``qtradeoff[openvino]``); this module imports them only when asked and returns plain data.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from qtradeoff.core.measurement.latency import LatencyStats

RUNTIMES = ("onnxruntime", "openvino")
EXTRAS = {"onnxruntime": "qtradeoff[onnx]", "openvino": "qtradeoff[openvino]"}
ORT_LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}

Runner = Callable[[np.ndarray], list]


def available(runtime: str) -> bool:
    """Whether ``runtime``'s Python package is installed here (found without importing it)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    return importlib.util.find_spec(runtime) is not None


def version(runtime: str) -> str:
    module = __import__(runtime)
    return str(getattr(module, "__version__", "?"))


def ort_session(path: str | Path, *, threads: int | None = None, optimization: str = "all"):
    """A CPU InferenceSession of ``path`` with ``threads`` intra-op threads and the given optimization level."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[optimization])
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _ort_runner(path, threads, optimization) -> Runner:
    session = ort_session(path, threads=threads, optimization=optimization)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _openvino_runner(path, threads, optimization) -> Runner:
    # OpenVINO reads the ONNX file itself (its own frontend; the file is one this tool wrote) and compiles it for the
    # CPU with a latency hint: one stream, ``threads`` inference threads, its own int8 kernels for the QDQ pairs.
    import openvino as ov

    core = ov.Core()
    options = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(core.read_model(str(path)), "CPU", options)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> list:
        request.infer({0: x})
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]

    return run


_RUNNERS = {"onnxruntime": _ort_runner, "openvino": _openvino_runner}


def runner(runtime: str, path: str | Path, *, threads: int | None = None, optimization: str = "all") -> Runner:
    """A call ``inputs -> list of outputs`` running ``path`` on ``runtime`` (``optimization`` is ONNX Runtime's
    graph optimization level; OpenVINO always compiles its own optimized graph)."""
    if not available(runtime):
        raise ImportError(f"{runtime} is not installed; install {EXTRAS[runtime]}")
    return _RUNNERS[runtime](path, threads, optimization)


def outputs(runtime: str, path: str | Path, samples, *, batch: int = 64, threads: int | None = None,
            optimization: str = "all") -> np.ndarray:
    """The first output of ``path`` on ``runtime`` for every sample (batch first), run ``batch`` at a time."""
    run = runner(runtime, path, threads=threads, optimization=optimization)
    samples = np.asarray(samples, dtype=np.float32)
    parts = [np.asarray(run(np.ascontiguousarray(samples[i:i + batch]))[0]) for i in range(0, len(samples), batch)]
    return np.concatenate(parts)


def _batch(samples: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(samples))
    return np.ascontiguousarray(np.concatenate([samples] * reps)[:batch].astype(np.float32))


def _quantiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def time_calls(calls: Mapping[str, Callable[[int], object]], batches: Sequence[int], *, rounds: int = 15,
               min_block_seconds: float = 0.02, warmup: int = 3,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[int, LatencyStats]]:
    """Time ``calls[name](batch)`` interleaved: warm-up, a block size per (name, batch) that lasts about
    ``min_block_seconds``, then ``rounds`` rounds of one block of every name at every batch, in turn.

    Returns ``{name: {batch: LatencyStats}}`` in milliseconds per call (median over rounds, IQR spread).
    ``clock`` is a parameter so that the schedule can be tested without timing anything.
    """
    blocks: dict[tuple[str, int], int] = {}
    for name, call in calls.items():
        for b in batches:
            for _ in range(warmup):
                call(b)
            started = clock()
            call(b)
            once = max(clock() - started, 1e-6)
            blocks[(name, b)] = max(1, int(min_block_seconds / once))
    times: dict[tuple[str, int], list[float]] = {key: [] for key in blocks}
    for _ in range(rounds):
        for b in batches:
            for name, call in calls.items():
                count = blocks[(name, b)]
                started = clock()
                for _ in range(count):
                    call(b)
                times[(name, b)].append((clock() - started) * 1000.0 / count)
    result: dict[str, dict[int, LatencyStats]] = {name: {} for name in calls}
    for (name, b), values in times.items():
        lo, hi = _quantiles(values)
        result[name][b] = LatencyStats(b, statistics.median(values), hi - lo, len(values))
    return result


def time_interleaved(paths: Mapping[str, str | Path], samples, *, runtime: str = "onnxruntime",
                     batches: Sequence[int] = (1, 32), threads: int | None = None, rounds: int = 15,
                     optimization: str = "all", min_block_seconds: float = 0.02,
                     warmup: int = 3) -> dict[str, dict[int, LatencyStats]]:
    """``{name: {batch: LatencyStats}}`` for every ONNX file of ``paths`` on ``runtime``, on ``samples``."""
    samples = np.asarray(samples, dtype=np.float32)
    runs = {name: runner(runtime, path, threads=threads, optimization=optimization) for name, path in paths.items()}
    feeds = {b: _batch(samples, b) for b in batches}
    calls = {name: (lambda b, run=run: run(feeds[b])) for name, run in runs.items()}
    return time_calls(calls, batches, rounds=rounds, min_block_seconds=min_block_seconds, warmup=warmup)
