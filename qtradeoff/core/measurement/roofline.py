"""Roofline latency estimate for configured precisions, calibrated by micro-benchmarks on this machine.

Per layer: ``time = overhead[precision, kind] + max(MACs / rate[precision, kind], bytes moved / bandwidth)``, plus a
quantize/dequantize pair where the network enters and leaves an int8 run. ``rate`` and ``overhead`` come from a
kernel table: the block a layer usually heads (Conv2d+BatchNorm+ReLU, a depthwise one, Linear+ReLU) timed at two
sizes per precision as the real-kernel model runs it (fp32 eager, bf16/fp16 cast in and out, int8 through torch.ao's
fused quantized modules), a line fitted through the two. Small layers are dominated by their fixed cost and large
ones by their rate, and both differ by precision: a single per-call overhead would give fp32 and int8 the same
time on a small network. The matmul peaks, the copy bandwidth and the table are measured once per machine, thread
count and torch version (two rounds, a few seconds) and cached in ``roofline-<cpu>-<threads>-<torch>.json`` under
the cache folder (see :mod:`qtradeoff.core.paths`). Precisions without a kernel here get an explicit, recorded
assumption (see :data:`ASSUMPTIONS`); every figure from this module is an estimate.
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
from qtradeoff.core.measurement.realquant import _CastLayer, quantized_engine
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
    "layers": "only layers with weights are modelled: each is timed as the block it usually heads "
              "(Conv2d+BatchNorm+ReLU, Linear+ReLU; int8 with BatchNorm folded and ReLU fused); other element-wise "
              "ops, pooling and additions are not counted",
}
CALIBRATION_VERSION = 5
# Kernel-table shapes, two per kind (a line through them): (in channels, out channels, input side, kernel, groups)
# for convolutions at batch 1, (in, out) features for Linear at batch 1. Small enough for emulated fp16.
_SHAPES = {"conv": ((8, 16, 16, 3, 1), (32, 64, 16, 3, 1)), "dwconv": ((16, 16, 16, 3, 16), (64, 64, 16, 3, 64)),
           "linear": ((64, 64), (512, 512))}
# bf16/fp16 are often emulated (a hundred times slower than fp32 on a CPU without them): smaller blocks
_REDUCED_SHAPES = {"conv": ((8, 16, 8, 3, 1), (16, 32, 8, 3, 1)), "linear": ((64, 64), (256, 256))}
KERNEL_KINDS = ("conv", "dwconv", "linear")
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
    # precision -> kind ("conv" | "dwconv" | "linear") -> (fixed seconds per call, MAC/s beyond it); empty: the
    # matmul peak and ``overhead_s`` stand for every layer
    kernels: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # quantize + dequantize where an int8 run starts and ends: (fixed seconds, seconds per element)
    boundary: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: where the constants come from and when they were measured."""
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.calibrated_at)) if self.calibrated_at else "?"
        table = "kernel table" if self.kernels else "matmul peaks"
        return (f"calibrated on this machine ({self.cpu}, {self.threads} thread(s), torch {self.torch}) at {when} "
                f"from a {table}")


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
        torch.set_num_threads(threads)  # the small blocks are timed by _block_seconds, not torch's Timer
        kernels = _kernel_table(peaks)
        boundary = _boundary_cost(generator)
    return Roofline(peaks, bandwidth, overhead, cpu_model(), threads, torch.__version__, time.time(),
                    time.perf_counter() - started, kernels=kernels, boundary=boundary)


def _conv_macs(c_in: int, c_out: int, side: int, kernel: int, groups: int) -> int:
    return c_out * (c_in // groups) * kernel * kernel * side * side  # stride 1, "same" padding


def _line(points: list[tuple[float, float]], peak: float) -> tuple[float, float]:
    """(fixed seconds, MAC/s) of the line through two (MACs, seconds) points; a rate that the noise made
    non-positive falls back to ``peak``. The fixed cost is never negative."""
    (m1, t1), (m2, t2) = sorted(points)
    rate = (m2 - m1) / (t2 - t1) if t2 > t1 and m2 > m1 else peak
    if not (math.isfinite(rate) and rate > 0):
        rate = peak
    return max(0.0, t1 - m1 / rate), rate


def _float_block(kind: str, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
    """The block a weight layer heads, as the real-kernel model runs it at ``dtype`` (cast in and out when not
    fp32; BatchNorm and ReLU stay fp32)."""
    generator = torch.Generator().manual_seed(2)
    if kind == "linear":
        layer: torch.nn.Module = torch.nn.Linear(*shape)
        glue: list[torch.nn.Module] = [torch.nn.ReLU()]
        x = torch.randn(1, shape[0], generator=generator)
    else:
        c_in, c_out, side, kernel, groups = shape
        layer = torch.nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False)
        glue = [torch.nn.BatchNorm2d(c_out), torch.nn.ReLU()]
        x = torch.randn(1, c_in, side, side, generator=generator)
    if dtype != torch.float32:
        layer = _CastLayer(layer, dtype)
    return torch.nn.Sequential(layer, *glue).eval(), x


def _int8_block(kind: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, torch.Tensor]:
    """The same block in the fused int8 graph: BatchNorm folded, ReLU fused, int8 in and out."""
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d, LinearReLU

    generator = torch.Generator().manual_seed(3)
    if kind == "linear":
        block = LinearReLU(*shape)
        values = torch.randn(shape[1], shape[0], generator=generator)
        x = torch.randn(1, shape[0], generator=generator)
    else:
        c_in, c_out, side, kernel, groups = shape
        block = ConvReLU2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups)
        values = torch.randn(c_out, c_in // groups, kernel, kernel, generator=generator)
        x = torch.randn(1, c_in, side, side, generator=generator)
    channels = values.shape[0]
    weight = torch.quantize_per_channel(values, torch.full((channels,), 0.02), torch.zeros(channels, dtype=torch.long),
                                        0, torch.qint8)
    block.set_weight_bias(weight, torch.zeros(channels))
    block.scale, block.zero_point = 0.05, 0
    return block, torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)


def _block_seconds(call, blocks: int = 7, block_s: float = 0.002) -> float:
    """Seconds per call of ``call()``: the fastest of ``blocks`` blocks of about ``block_s`` each. Small blocks
    many times (a kernel-table entry takes about 15 ms): torch's Timer costs about 0.1 s a measurement in setup
    alone, which a table of twenty entries, calibrated twice, would pay forty times."""
    call()
    call()  # warm-up: first calls allocate and pick kernels
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(block_s / once))
    best = math.inf
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _kernel_table(peaks: dict[str, float]) -> dict[str, dict[str, tuple]]:
    table: dict[str, dict[str, tuple[float, float]]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notes
        for precision in ("fp32", "int8", *_REDUCED_FLOATS):
            # reduced floats: no depthwise line (their conv line stands for it)
            shapes = _SHAPES if precision in ("fp32", "int8") else _REDUCED_SHAPES
            table[precision] = {}
            for kind in shapes:
                points = []
                for shape in shapes[kind]:
                    macs = shape[0] * shape[1] if kind == "linear" else _conv_macs(*shape)
                    if precision == "int8":
                        with quantized_engine():
                            block, x = _int8_block(kind, shape)
                            seconds = _block_seconds(lambda block=block, x=x: block(x))
                    else:
                        block, x = _float_block(kind, shape, torch_dtype(precision))
                        seconds = _block_seconds(lambda block=block, x=x: block(x))
                    points.append((float(macs), seconds))
                table[precision][kind] = _line(points, peaks[precision])
    for precision in _REDUCED_FLOATS:
        # a cast layer runs the fp32 block's BatchNorm and ReLU plus two casts: never a smaller fixed cost than
        # fp32's (on a loaded machine the two fits' noise could say otherwise and rank fp16 above fp32)
        table[precision] = {kind: (max(fixed, table["fp32"][kind][0]), rate)
                            for kind, (fixed, rate) in table[precision].items()}
    return table


def _boundary_cost(generator: torch.Generator) -> tuple[float, float]:
    """(fixed seconds, seconds per element) of quantizing a float tensor and dequantizing it back."""
    points = []
    for numel in (1 << 10, 1 << 16):
        x = torch.randn(numel, generator=generator)
        seconds = _block_seconds(lambda x=x: torch.quantize_per_tensor(x, 0.05, 128, torch.quint8).dequantize())
        points.append((float(numel), seconds))
    fixed, per_second = _line(points, 1e9)
    return fixed, 1.0 / per_second


def _from_dict(data: dict) -> Roofline:
    data = dict(data)
    data["kernels"] = {p: {k: tuple(v) for k, v in kinds.items()} for p, kinds in data.get("kernels", {}).items()}
    data["boundary"] = tuple(data.get("boundary", (0.0, 0.0)))
    return Roofline(**data)


def _best(first: Roofline, second: Roofline) -> tuple[dict, tuple[float, float]]:
    """Kernel table and boundary cost kept from two rounds: the lower fixed cost and the higher rate of each."""
    kernels = {p: {k: (min(v[0], second.kernels[p][k][0]), max(v[1], second.kernels[p][k][1]))
                   for k, v in kinds.items()} for p, kinds in first.kernels.items()}
    boundary = (min(first.boundary[0], second.boundary[0]), min(first.boundary[1], second.boundary[1]))
    return kernels, boundary


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
                return _from_dict(data)
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
    kernels, boundary = _best(first, second)
    roofline = Roofline({k: max(first.peak_macs[k], second.peak_macs[k]) for k in first.peak_macs},
                        max(first.bandwidth, second.bandwidth), min(first.overhead_s, second.overhead_s),
                        first.cpu, threads, first.torch, second.calibrated_at,
                        first.calibration_seconds + second.calibration_seconds, kernels=kernels, boundary=boundary)
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
    """What the roofline needs about one layer: MACs and element counts per sample, its weight bytes, and its kind
    (the inventory's module kind, e.g. ``Conv2d``, and groups) to pick a kernel-table line."""

    name: str
    macs: int
    weight_bytes: int  # as stored under the configuration (see memory.py)
    input_numel: int
    output_numel: int
    kind: str = ""
    groups: int = 1


def kernel_kind(cost: LayerCost) -> str:
    """The kernel-table line a layer is timed by: ``conv``, ``dwconv`` (depthwise-like: 8 groups or more) or
    ``linear`` (Linear and other matrix-product layers)."""
    if "Conv" in cost.kind:
        return "dwconv" if cost.groups >= 8 else "conv"
    return "linear" if cost.kind else "conv"


def _layer_seconds(cost: LayerCost, layer: LayerSettings, roofline: Roofline, batch: int, family: str,
                   multiplier: float) -> float:
    act_bits = 32 if layer.skip else bits_of(layer.activation.precision)
    moved = cost.weight_bytes + math.ceil((cost.input_numel + cost.output_numel) * batch * act_bits / 8)
    kinds = roofline.kernels.get(family)
    if not kinds:  # no kernel table (an older calibration, or constants given by hand): peak and one overhead
        compute = cost.macs * batch / (roofline.peak_macs[family] * multiplier)
        return max(compute, moved / roofline.bandwidth) + roofline.overhead_s
    kind = kernel_kind(cost)
    fixed, rate = kinds.get(kind) or kinds["conv"]
    return fixed + max(cost.macs * batch / (rate * multiplier), moved / roofline.bandwidth)


def estimate_ms(costs: Sequence[LayerCost], settings: Mapping[str, LayerSettings], roofline: Roofline,
                batch: int, factors: Mapping[str, float] | None = None) -> tuple[float, list[str]]:
    """Estimated forward time (ms) at ``batch`` and the assumption keys it relied on. With a kernel table, each
    run of consecutive int8 layers also pays a quantize where it starts and a dequantize where it ends.
    ``factors`` (compute family -> multiplier, see :mod:`.latency_fit`) scales each layer's time by its family's
    factor and the quantize/dequantize steps by int8's; absent: the machine calibration alone."""
    factors = factors or {}
    total, used = 0.0, set()
    families = []
    for cost in costs:
        layer = settings[cost.name]
        family, multiplier, assumption = compute_family(layer)
        families.append(family)
        if assumption:
            used.add(assumption)
        total += _layer_seconds(cost, layer, roofline, batch, family, multiplier) * factors.get(family, 1.0)
    if roofline.kernels:
        fixed, per_element = roofline.boundary
        fixed, per_element = fixed * factors.get("int8", 1.0), per_element * factors.get("int8", 1.0)
        for i, cost in enumerate(costs):
            if families[i] != "int8":
                continue
            if i == 0 or families[i - 1] != "int8":  # enters an int8 run: quantize the input
                total += fixed / 2 + per_element / 2 * cost.input_numel * batch
            if i == len(costs) - 1 or families[i + 1] != "int8":  # leaves it: dequantize the output
                total += fixed / 2 + per_element / 2 * cost.output_numel * batch
    if costs:
        used.add("layers")
    return total * 1e3, sorted(used)
