"""Roofline latency estimate for configured precisions, calibrated by micro-benchmarks on this machine.

Per layer: ``time = max(MACs / peak[precision], bytes moved / bandwidth) + overhead``. The peaks (fp32, bf16, fp16
matmul; int8 through torch.ao's quantized Linear), the copy bandwidth and the per-call overhead are measured once
(two rounds, about 2 s) and cached in ``roofline-<cpu>-<threads>-<torch>.json`` under the cache folder (see
:mod:`qtradeoff.core.paths`). Precisions without a kernel here get an explicit, recorded assumption (see
:data:`ASSUMPTIONS`); every figure from this module is an estimate.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from qtradeoff.core import runtime
from qtradeoff.core.config import LayerSettings
from qtradeoff.core.measurement.realquant import quantized_engine
from qtradeoff.core.paths import cache_dir
from qtradeoff.core.precision import FLOAT_FAMILIES, REGISTRY, bits_of, is_integer, is_lut, torch_dtype

ASSUMPTIONS = {
    "int<8": "integer weights and activations below 8 bits: throughput = int8 peak x 8/bits (a packed kernel is "
             "assumed; none runs on this CPU), bytes at the configured bits",
    "int9-16": "integer precisions above 8 bits: compute at the fp32 peak, bytes at the configured bits",
    "weight-only": "integer or fp8 weights with float activations: compute at the activation precision's peak, "
                   "weight bytes at the configured bits",
    "fp8": "fp8 has no CPU compute kernel: compute at the fp32 peak, 1 byte per value",
    "lut": "lookup-table weights have no CPU kernel: compute at the activation precision's peak (fp32 for integer "
           "activations, decoded on the fly), weight bytes = indices at the configured bits + codebooks",
    "layers": "only layers with weights are modelled; element-wise ops are folded into the per-layer overhead "
              "(measured as a tiny Conv2d+BatchNorm+ReLU call)",
}
CALIBRATION_VERSION = 4
# Floats narrower than fp32 that run on a kernel of their own, and floats computed in another family (fp8).
_REDUCED_FLOATS = tuple(family for family in FLOAT_FAMILIES if family != "fp32")
_EMULATED_FLOATS = tuple(name for name, p in REGISTRY.items() if p.kind == "float" and p.family != name)


@dataclass(frozen=True)
class Roofline:
    """Machine constants: peak multiply-accumulates per second by precision, copy bandwidth, per-layer overhead."""

    peak_macs: dict[str, float]  # "fp32" | "bf16" | "fp16" | "int8" -> MAC/s
    bandwidth: float  # bytes/s (read + write of a large copy)
    overhead_s: float  # seconds per layer call (dispatch, small-op fixed cost)
    cpu: str
    threads: int
    torch: str
    calibrated_at: float
    calibration_seconds: float
    assumptions: dict[str, str] = field(default_factory=lambda: dict(ASSUMPTIONS))
    version: int = CALIBRATION_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (falls back to the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"



def cache_path(threads: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", cpu_model()).strip("_")[:60]
    return cache_dir() / f"roofline-{slug}-{threads}-{torch.__version__}.json"


def _seconds(stmt: str, env: dict, threads: int, min_run_time: float) -> float:
    # The fastest block, not the median: a peak is the best the machine does, and on a shared machine the
    # median of a short calibration (which is then cached) would record other people's load.
    from torch.utils.benchmark import Timer  # here: importing it pulls setuptools, ~1 s of every start-up

    return min(Timer(stmt, globals=env, num_threads=threads).blocked_autorange(min_run_time=min_run_time).times)


def _measure(threads: int, min_run_time: float) -> Roofline:
    # The probe modules' initialisation draws from the global RNG: keep the caller's stream where it was.
    with torch.random.fork_rng(devices=[]):
        return _measure_constants(threads, min_run_time)


def _measure_constants(threads: int, min_run_time: float) -> Roofline:
    started = time.perf_counter()
    rows, inner, cols = 128, 512, 512  # big enough for peak, small enough for emulated fp16
    macs = rows * inner * cols
    peaks: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)  # local: calibration never moves the global RNG
    a = torch.randn(rows, inner, generator=generator)
    b = torch.randn(inner, cols, generator=generator)
    with torch.inference_mode(), runtime.running():
        for name in FLOAT_FAMILIES:
            x, w = a.to(torch_dtype(name)), b.to(torch_dtype(name))
            peaks[name] = macs / _seconds("torch.mm(x, w)", {"torch": torch, "x": x, "w": w}, threads, min_run_time)
        peaks["int8"] = macs / _int8_linear_seconds(a, cols, threads, min_run_time)
        source = torch.empty(1 << 24)  # 64 MiB: far larger than any cache level
        target = torch.empty_like(source)
        copy_s = _seconds("target.copy_(source)", {"target": target, "source": source}, threads, min_run_time)
        bandwidth = 2 * source.numel() * source.element_size() / copy_s
        # A layer's fixed cost is its own call plus the element-wise ops riding on it (BatchNorm, activation):
        # time the smallest such block.
        tiny = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
        small = torch.randn(1, 4, 2, 2, generator=generator)
        overhead = _seconds("tiny(small)", {"tiny": tiny, "small": small}, threads, min_run_time)
    return Roofline(peaks, bandwidth, overhead, cpu_model(), threads, torch.__version__, time.time(),
                    time.perf_counter() - started)


def _int8_linear_seconds(a: torch.Tensor, cols: int, threads: int, min_run_time: float) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized import Linear as QuantLinear

        with quantized_engine():
            layer = QuantLinear(a.shape[1], cols)
            values = torch.randn(cols, a.shape[1], generator=torch.Generator().manual_seed(1))
            weight = torch.quantize_per_channel(values, torch.full((cols,), 0.02),
                                                torch.zeros(cols, dtype=torch.long), 0, torch.qint8)
            layer.set_weight_bias(weight, torch.zeros(cols))
            layer.scale, layer.zero_point = 0.5, 64
            qa = torch.quantize_per_tensor(a, 0.05, 128, torch.quint8)
            return _seconds("layer(qa)", {"layer": layer, "qa": qa}, threads, min_run_time)


def calibrate(threads: int | None = None, *, force: bool = False, min_run_time: float = 0.08) -> Roofline:
    """Machine constants for ``threads`` (default: torch's current count), from the cache unless ``force``."""
    threads = int(threads or torch.get_num_threads())
    path = cache_path(threads)
    if not force and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("version") == CALIBRATION_VERSION:
                return Roofline(**data)
        except (OSError, ValueError, TypeError):
            pass  # a corrupt or foreign cache file is simply recalibrated
    previous = torch.get_num_threads()
    try:
        # Two rounds, keeping the best of each constant: with several threads, one descheduled thread stalls
        # every parallel region, and a single unlucky round would be cached for good. With several threads the
        # second round runs single-threaded: n threads can never be slower than one (a floor, not an estimate).
        first, second = _measure(threads, min_run_time), _measure(1 if threads > 1 else threads, min_run_time)
    finally:
        torch.set_num_threads(previous)
    roofline = Roofline({k: max(first.peak_macs[k], second.peak_macs[k]) for k in first.peak_macs},
                        max(first.bandwidth, second.bandwidth), min(first.overhead_s, second.overhead_s),
                        first.cpu, threads, first.torch, second.calibrated_at,
                        first.calibration_seconds + second.calibration_seconds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(roofline.to_dict(), indent=1))
        tmp.replace(path)
    except OSError:
        pass  # read-only home: the calibration still serves this process
    return roofline


def compute_family(settings: LayerSettings) -> tuple[str, float, str]:
    """(peak key, throughput multiplier, assumption key or "") for a layer's configured precisions."""
    if settings.skip:
        return "fp32", 1.0, ""
    weight, act = settings.weight.precision, settings.activation.precision
    if is_lut(weight):
        return ("fp32" if act == "fp32" or is_integer(act) or act in _EMULATED_FLOATS else act), 1.0, "lut"
    if is_integer(weight) and is_integer(act):
        bits = max(bits_of(weight), bits_of(act))
        if bits == 8:
            return "int8", 1.0, ""
        if bits < 8:
            return "int8", 8.0 / bits, "int<8"
        return "fp32", 1.0, "int9-16"
    if act in _REDUCED_FLOATS and weight in (act, "fp32"):
        return act, 1.0, ""
    if weight in _REDUCED_FLOATS and act == "fp32":
        return weight, 1.0, ""
    if weight in _EMULATED_FLOATS or act in _EMULATED_FLOATS:
        return "fp32", 1.0, "fp8"
    if is_integer(weight) or is_integer(act):
        return ("fp32" if act == "fp32" or is_integer(act) else act), 1.0, "weight-only"
    return "fp32", 1.0, ""


@dataclass(frozen=True)
class LayerCost:
    """What the roofline needs about one layer: MACs and element counts per sample, and its weight bytes."""

    name: str
    macs: int
    weight_bytes: int  # as stored under the configuration (see memory.py)
    input_numel: int
    output_numel: int


def estimate_ms(costs: Sequence[LayerCost], settings: Mapping[str, LayerSettings], roofline: Roofline,
                batch: int) -> tuple[float, list[str]]:
    """Estimated forward time (ms) at ``batch`` and the assumption keys it relied on."""
    total, used = 0.0, set()
    for cost in costs:
        layer = settings[cost.name]
        family, multiplier, assumption = compute_family(layer)
        if assumption:
            used.add(assumption)
        act_bits = 32 if layer.skip else bits_of(layer.activation.precision)
        compute = cost.macs * batch / (roofline.peak_macs[family] * multiplier)
        moved = cost.weight_bytes + math.ceil((cost.input_numel + cost.output_numel) * batch * act_bits / 8)
        total += max(compute, moved / roofline.bandwidth) + roofline.overhead_s
    if costs:
        used.add("layers")
    return total * 1e3, sorted(used)
