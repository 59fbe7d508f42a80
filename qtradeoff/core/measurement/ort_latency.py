"""Latency of ONNX models on ONNX Runtime (the second runtime of issue 14): the ONNX Runtime face of
:mod:`.runtime_latency`, which times files interleaved on any of the supported runtimes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from qtradeoff.core.measurement import runtime_latency
from qtradeoff.core.measurement.latency import LatencyStats

LEVELS = runtime_latency.ORT_LEVELS
session = runtime_latency.ort_session


def available() -> bool:
    """Whether ONNX Runtime is installed here."""
    return runtime_latency.available("onnxruntime")


def time_interleaved(paths: Mapping[str, str | Path], samples, *, batches: Sequence[int] = (1, 32),
                     threads: int | None = None, rounds: int = 15, optimization: str = "all",
                     min_block_seconds: float = 0.02, warmup: int = 3) -> dict[str, dict[int, LatencyStats]]:
    """``{name: {batch: LatencyStats}}`` for every ONNX file of ``paths`` on ``samples`` (batch first)."""
    return runtime_latency.time_interleaved(paths, samples, runtime="onnxruntime", batches=batches, threads=threads,
                                            rounds=rounds, optimization=optimization,
                                            min_block_seconds=min_block_seconds, warmup=warmup)
