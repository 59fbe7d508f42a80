"""What an exported configuration says about a measurement: DESIGN.md's ``metrics`` object and the
``environment`` it was measured in, built from a :class:`~qtradeoff.core.engine.measure.Result` so that the GUI's
export and the CLI write the same file.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Sequence
from typing import Any

import torch

import qtradeoff
from qtradeoff.core.config import CompressionConfig, to_json
from qtradeoff.core.engine.measure import Result
from qtradeoff.core.measurement import realquant, roofline
from qtradeoff.core.measurement.latency import LatencyStats

# The facts about the machine and software a number depends on, as measure.evaluate records them in provenance.
ENVIRONMENT_KEYS = ("qtradeoff", "torch", "python", "cpu", "threads", "quantized_engine")


def environment(result: Result | None = None) -> dict[str, Any]:
    """Where ``result`` was measured (read from its provenance), or this process when there is no result.

    A result read from a file measured elsewhere keeps only what its provenance recorded: filling a gap with this
    machine's values would attribute the numbers to hardware that never produced them.
    """
    if result is not None:
        provenance = result.provenance if isinstance(result.provenance, dict) else {}
        return {key: provenance[key] for key in ENVIRONMENT_KEYS if provenance.get(key) is not None}
    return {
        "qtradeoff": qtradeoff.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": roofline.cpu_model(),
        "threads": torch.get_num_threads(),
        "quantized_engine": realquant.ENGINE,
    }


def _interval(pair: Sequence[float] | None) -> list[float] | None:
    return None if pair is None else [float(pair[0]), float(pair[1])]


def _latency(measured: Sequence[LatencyStats], estimated: Sequence[LatencyStats]) -> dict[str, Any] | None:
    # One source for every batch size: mixing a measured batch-1 time with an estimated batch-32 one would make
    # the "measured" flag lie about half of the numbers.
    stats = measured or estimated
    if not stats:
        return None
    latency: dict[str, Any] = {f"batch{s.batch}": s.median_ms for s in stats}
    latency["measured"] = bool(measured)
    if measured:
        latency["iqr"] = {f"batch{s.batch}": s.iqr_ms for s in measured}
        # batch sizes whose timed repeats disagreed beyond NOISY_SPREAD: their medians are not to be trusted
        latency["noisy"] = [f"batch{s.batch}" for s in measured if s.noisy]
    return latency


def metrics(result: Result) -> dict[str, Any]:
    """DESIGN.md's ``metrics`` object for one result.

    Labelled data gives top-1 (``accuracy``, ``accuracy_ci95``) and top-5 where there are 5 classes or more;
    fidelity to the fp32 model (``agreement``, ``agreement_ci95``, ``sqnr_db``) is always there and is the quality
    measure when ``labelled`` is False. ``latency_ms`` holds the median per batch size (``batch1``, ``batch32``…)
    on real kernels with their IQR, or, with ``measured: false``, the roofline estimate. An SQNR of identical
    outputs (+inf) or of a non-finite output (-inf) is left out: JSON has no infinities.
    """
    out: dict[str, Any] = {"labelled": bool(result.labelled)}
    if result.labelled and result.accuracy is not None:
        out["accuracy"] = float(result.accuracy)
        out["accuracy_ci95"] = _interval(result.accuracy_ci95)
        if result.top5 is not None:
            out["top5"] = float(result.top5)
            out["top5_ci95"] = _interval(result.top5_ci95)
    out["agreement"] = float(result.agreement)
    out["agreement_ci95"] = _interval(result.agreement_ci95)
    if math.isfinite(result.sqnr_db):
        out["sqnr_db"] = float(result.sqnr_db)
    latency = _latency(result.latency_measured, result.latency_estimated)
    if latency is not None:
        out["latency_ms"] = latency
    if result.measured_note:
        out["measured_note"] = result.measured_note
    out.update(weight_bytes=int(result.weight_bytes), fp32_weight_bytes=int(result.fp32_weight_bytes),
               peak_activation_bytes=int(result.peak_activation_bytes), eval_samples=int(result.eval_samples))
    return {key: value for key, value in out.items() if value is not None}


def config_document(config: CompressionConfig, result: Result | None = None) -> str:
    """The configuration file (JSON text) for ``config``, with the metrics and environment of ``result``.

    Without a result there are no metrics, and the environment is this process's (where the file was written).
    """
    return to_json(config, metrics=metrics(result) if result is not None else None,
                   environment=environment(result))
