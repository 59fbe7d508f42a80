"""Measurement of one configuration: accuracy and fidelity, exact memory, measured and estimated latency.

:func:`evaluate_iter` is the engine: a generator that yields :class:`Progress` (only when the rounded percentage
changes) and finally one :class:`Result`, checking ``should_stop`` between batches. :func:`evaluate` drains it.
Accuracy comes from the fake-quant simulation (``Compressor.apply``); latency ``measured`` comes from the real
kernels of :mod:`qtradeoff.core.measurement.realquant` (never from the simulation); ``estimated`` from
:mod:`qtradeoff.core.measurement.roofline`.
"""

from __future__ import annotations

import math
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

import qtradeoff
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.errors import CancelledError
from qtradeoff.core.measurement import memory as memory_mod
from qtradeoff.core.measurement import roofline as roofline_mod
from qtradeoff.core.measurement.latency import LatencySettings, LatencyStats, time_forward
from qtradeoff.core.measurement.realquant import ENGINE, REAL_MODELS, RealModel, build_real_model, planned_precision

Z95 = 1.959963984540054
LATENCY_MODES = ("both", "measured", "estimated", "none")
# Accuracy forwards run in chunks of this many samples: activations of a chunk stay cache-sized (a single
# 359-sample batch of digits_cnn runs 3x slower per sample), and should_stop is checked between chunks.
EVAL_BATCH = 64


class Cancelled(CancelledError):
    """The evaluation was stopped by ``should_stop`` before it produced a result."""


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str  # "reference" | "compress" | "accuracy" | "memory" | "latency (measured)" | "latency (estimated)"

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def sqnr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    """Output SQNR ``10 log10(sum ref^2 / sum (ref - out)^2)`` in dB; ``inf`` when the outputs are identical,
    ``-inf`` when there is no signal or the output is not finite (NaN/inf logits)."""
    reference = reference.to(torch.float64)
    noise = float((reference - output.to(torch.float64)).square().sum())
    signal = float(reference.square().sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0 or not math.isfinite(noise):
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# JSON has no infinities: identical outputs (+inf dB) are stored as null, a failed output (-inf) as -SQNR_FLOOR_DB.
SQNR_FLOOR_DB = 999.0


def _sqnr_to_json(value: float) -> float | None:
    if value == math.inf:
        return None
    return max(value, -SQNR_FLOOR_DB)


def _sqnr_from_json(value) -> float:
    if value is None:
        return math.inf
    value = float(value)
    return -math.inf if value <= -SQNR_FLOOR_DB else value


def _pair(value) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class Result:
    """Everything measured about one configuration. JSON-safe through :meth:`to_dict` / :meth:`from_dict`.

    ``accuracy``/``top5`` are None when the data has no labels (``labelled`` False): fidelity
    (``agreement``, ``sqnr_db``) then takes accuracy's place. ``sqnr_db`` is ``math.inf`` when the outputs equal
    the fp32 model's bit for bit (JSON: ``null``) and ``-math.inf`` when the output is not finite (JSON: -999).
    ``top5`` is None with fewer than 5 classes. Memory: see :mod:`qtradeoff.core.measurement.memory` for what is
    counted.
    ``latency_estimated`` entries have ``iqr_ms == 0`` and ``repeats == 0``: they are roofline estimates.
    """

    config: CompressionConfig
    config_key: str
    labelled: bool
    accuracy: float | None
    accuracy_ci95: tuple[float, float] | None
    top5: float | None
    top5_ci95: tuple[float, float] | None
    agreement: float
    agreement_ci95: tuple[float, float]
    sqnr_db: float
    eval_samples: int
    weight_bytes: int
    fp32_weight_bytes: int
    peak_activation_bytes: int
    latency_measured: tuple[LatencyStats, ...] = ()
    executed_precisions: dict[str, str] = field(default_factory=dict)
    measured_note: str = ""
    latency_estimated: tuple[LatencyStats, ...] = ()
    provenance: dict = field(default_factory=dict)

    def latency_ms(self, batch: int = 1, measured: bool = True) -> float | None:
        """Median latency (ms) at ``batch``, measured or estimated; None when not available."""
        for stats in self.latency_measured if measured else self.latency_estimated:
            if stats.batch == batch:
                return stats.median_ms
        return None

    @property
    def compression_ratio(self) -> float:
        return self.fp32_weight_bytes / self.weight_bytes if self.weight_bytes else math.inf

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "config_key": self.config_key,
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "accuracy_ci95": None if self.accuracy_ci95 is None else list(self.accuracy_ci95),
            "top5": self.top5,
            "top5_ci95": None if self.top5_ci95 is None else list(self.top5_ci95),
            "agreement": self.agreement,
            "agreement_ci95": list(self.agreement_ci95),
            "sqnr_db": _sqnr_to_json(self.sqnr_db),
            "eval_samples": self.eval_samples,
            "weight_bytes": self.weight_bytes,
            "fp32_weight_bytes": self.fp32_weight_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "latency_measured": [s.to_dict() for s in self.latency_measured],
            "executed_precisions": dict(self.executed_precisions),
            "measured_note": self.measured_note,
            "latency_estimated": [dict(s.to_dict(), estimated=True) for s in self.latency_estimated],
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        sqnr = d.get("sqnr_db")
        return cls(
            config=CompressionConfig.from_dict(d["config"]),
            config_key=d["config_key"],
            labelled=bool(d["labelled"]),
            accuracy=d.get("accuracy"),
            accuracy_ci95=_pair(d.get("accuracy_ci95")),
            top5=d.get("top5"),
            top5_ci95=_pair(d.get("top5_ci95")),
            agreement=float(d["agreement"]),
            agreement_ci95=_pair(d["agreement_ci95"]),
            sqnr_db=_sqnr_from_json(sqnr),
            eval_samples=int(d["eval_samples"]),
            weight_bytes=int(d["weight_bytes"]),
            fp32_weight_bytes=int(d["fp32_weight_bytes"]),
            peak_activation_bytes=int(d["peak_activation_bytes"]),
            latency_measured=tuple(LatencyStats.from_dict(s) for s in d.get("latency_measured", ())),
            executed_precisions=dict(d.get("executed_precisions", {})),
            measured_note=d.get("measured_note", ""),
            latency_estimated=tuple(LatencyStats.from_dict(s) for s in d.get("latency_estimated", ())),
            provenance=dict(d.get("provenance", {})),
        )


# -- per-model state reused across evaluations ----------------------------------------------------------------

class _ModelContext:
    """What evaluating many configs of one model on one dataset can share: the Compressor (cached weights),
    fp32 reference outputs, activation sizes, pruning masks. Evaluations of one context are serialized."""

    def __init__(self, module: torch.nn.Module, calib_inputs: torch.Tensor, compressor=None):
        from qtradeoff.core.compression.compress import Compressor

        self.module = module
        self.compressor = compressor if compressor is not None else Compressor(module, calib_inputs)
        self.layers = list(self.compressor.layers)
        self.kinds = {info.name: info.kind for info in self.layers}
        self.references: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.activation_sizes: memory_mod.ActivationProfile | None = None
        self.masks: dict[tuple, torch.Tensor | None] = {}
        self.state = memory_mod.unique_state(module)  # tensors by name, shared ones once: memory accounting input
        self.lock = threading.RLock()

    def reference(self, fingerprint: str, inputs: torch.Tensor, batch: int) -> torch.Tensor:
        found = self.references.get(fingerprint)
        if found is None:
            found = _forward(self.module, inputs, batch)
            self.references[fingerprint] = found
            while len(self.references) > 2:
                self.references.popitem(last=False)
        return found

    def layer_masks(self, config: CompressionConfig) -> dict[str, torch.Tensor | None]:
        """Pruning masks on the weights compression prunes (BatchNorm folded), cached per (layer, PruneSpec)."""
        from qtradeoff.core.compression.prune import prune_mask

        out = {}
        for info in self.layers:
            settings = config.resolve(info.name)
            for name in info.weight_names:
                key = (info.name, name, None if settings.skip else settings.prune)
                if key not in self.masks:
                    self.masks[key] = None if settings.skip else prune_mask(
                        self.compressor.weight(info.name, name), settings.prune, out_axis=info.out_axis,
                        in_axis=info.in_axis)
                out[f"{info.name}.{name}"] = self.masks[key]
        return out


_CONTEXTS: OrderedDict[tuple, _ModelContext] = OrderedDict()
_CONTEXTS_LOCK = threading.Lock()


def _context(loaded, data, compressor) -> _ModelContext:
    module = loaded.module
    key = (getattr(loaded, "sha256", ""), id(module), data.fingerprint if compressor is None else id(compressor))
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(key)
        if context is not None and context.module is module:
            _CONTEXTS.move_to_end(key)
            return context
    context = _ModelContext(module, data.calib_inputs, compressor)
    with _CONTEXTS_LOCK:
        _CONTEXTS[key] = context
        while len(_CONTEXTS) > 3:
            _CONTEXTS.popitem(last=False)
    return context


def layer_names(loaded, data) -> list[str]:
    """Compressible layer names of ``loaded`` in execution order (what a config's overrides may name)."""
    return [info.name for info in _context(loaded, data, None).layers]


def clear_caches() -> None:
    """Forget cached compressors, reference outputs and real models (e.g. to free memory)."""
    with _CONTEXTS_LOCK:
        _CONTEXTS.clear()
    REAL_MODELS.clear()


def _forward(module, inputs: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.inference_mode():
        if len(inputs) <= batch:
            return module(inputs).float()
        return torch.cat([module(inputs[i:i + batch]).float() for i in range(0, len(inputs), batch)])


# -- the engine ------------------------------------------------------------------------------------------------

def _real_model(context: _ModelContext, loaded, data, config: CompressionConfig) -> RealModel:
    plans = {n: planned_precision(config.resolve(n), kind)[0] for n, kind in context.kinds.items()}
    pruned = any(not config.resolve(n).skip and config.resolve(n).prune.method != "none" for n in context.kinds)
    if all(p == "fp32" for p in plans.values()) and not pruned:
        notes = sorted({planned_precision(config.resolve(n), k)[1] for n, k in context.kinds.items()} - {""})
        return RealModel(context.module, plans, "; ".join(notes), True)
    key = (getattr(loaded, "sha256", ""), id(context.module), data.fingerprint, config.key())
    masks = context.layer_masks(config)

    def build() -> RealModel:
        try:
            return build_real_model(context.module, config, context.kinds, data.calib_inputs, masks=masks)
        except Exception as error:  # any model we cannot rebuild still has one real execution: itself, in fp32
            reason = " ".join(str(error).split())[:160] or type(error).__name__
            return RealModel(context.module, {n: "fp32" for n in context.kinds},
                             f"could not build the real-kernel model ({type(error).__name__}: {reason}); "
                             "measured the model as loaded, fp32 eager", False)

    return REAL_MODELS.get(key, build)


def evaluate_iter(loaded, data, config: CompressionConfig, *, should_stop: Callable[[], bool] = lambda: False,
                  latency: str = "both", batch_sizes: tuple[int, ...] = (1, 32), compressor=None,
                  latency_settings: LatencySettings | None = None, eval_batch: int = EVAL_BATCH, seed: int = 0
                  ) -> Iterator[Progress | Result]:
    """Evaluate ``config`` on ``loaded`` (a LoadedModel) and ``data`` (an EvalData); yields Progress, then Result.

    ``latency``: ``both``, ``measured``, ``estimated`` or ``none``. ``latency_settings`` overrides timing knobs
    (its ``batch_sizes`` wins over ``batch_sizes``). ``compressor`` reuses a caller's Compressor of this model.
    Returns without a Result when ``should_stop()`` becomes true (checked between batches).
    """
    if latency not in LATENCY_MODES:
        raise ValueError(f"latency must be one of {', '.join(LATENCY_MODES)}, got {latency!r}")
    settings = latency_settings or LatencySettings(batch_sizes=tuple(batch_sizes))
    started = datetime.now(UTC)
    # CPU generator only: torch.manual_seed also seeds lazy device generators, ~1 ms per call
    torch.random.default_generator.manual_seed(seed)
    context = _context(loaded, data, compressor)
    n_eval = len(data.eval_inputs)
    if n_eval == 0:
        raise ValueError(f"{data.name} has no evaluation samples; choose a larger evaluation split")
    chunks = [(i, min(i + eval_batch, n_eval)) for i in range(0, n_eval, eval_batch)]
    measured_units = len(settings.batch_sizes) + 1 if latency in ("both", "measured") else 0
    estimated_units = 1 if latency in ("both", "estimated") else 0
    total = 2 + len(chunks) + 1 + measured_units + estimated_units
    done = 0
    last_percent = -1

    def step(stage: str, units: int = 1):
        nonlocal done, last_percent
        done += units
        percent = round(100 * done / total)
        if percent != last_percent:
            last_percent = percent
            return Progress(done, total, stage)
        return None

    def stopped() -> bool:
        return bool(should_stop())

    with context.lock:
        if stopped():
            return
        reference = context.reference(data.fingerprint, data.eval_inputs, eval_batch)
        if (p := step("reference")) is not None:
            yield p
        simulated = context.compressor.apply(config)
        if (p := step("compress")) is not None:
            yield p
        outputs = []
        with torch.inference_mode():
            for start, end in chunks:
                if stopped():
                    return
                outputs.append(simulated(data.eval_inputs[start:end]).float())
                if (p := step("accuracy")) is not None:
                    yield p
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        fidelity = _fidelity(reference, output, data)
        weights = memory_mod.weight_memory(context.module, config, context.layers, context.layer_masks(config),
                                           state=context.state)
        if context.activation_sizes is None:
            context.activation_sizes = memory_mod.activation_profile(context.module, data.eval_inputs[:1],
                                                                     CompressionConfig(), context.layers)
        peak = memory_mod.peak_activation_bytes(context.activation_sizes.sizes, config)
        if (p := step("memory")) is not None:
            yield p

    measured: list[LatencyStats] = []
    executed: dict[str, str] = {}
    note = ""
    if measured_units:
        if stopped():
            return
        real = _real_model(context, loaded, data, config)
        executed, note = dict(real.executed_precisions), real.note
        note = "; ".join(filter(None, [note, _half_precision_note(executed, settings.resolved_threads())]))
        if (p := step("latency (measured)")) is not None:
            yield p
        for stats in time_forward(real.module, data.eval_inputs, settings, should_stop=stopped):
            measured.append(stats)
            if (p := step("latency (measured)")) is not None:
                yield p
        if stopped():
            return
    estimated: list[LatencyStats] = []
    roofline_info = None
    if estimated_units:
        if stopped():
            return
        roofline = roofline_mod.calibrate(settings.resolved_threads())
        costs = _layer_costs(context, weights)
        resolved = {info.name: config.resolve(info.name) for info in context.layers}
        used: set[str] = set()
        for batch in settings.batch_sizes:
            ms, assumptions = roofline_mod.estimate_ms(costs, resolved, roofline, batch)
            used.update(assumptions)
            estimated.append(LatencyStats(batch, ms, 0.0, 0))
        roofline_info = {"estimated": True, "peak_macs_per_s": roofline.peak_macs, "bandwidth_bytes_per_s":
                         roofline.bandwidth, "overhead_s": roofline.overhead_s,
                         "assumptions": {k: roofline_mod.ASSUMPTIONS[k] for k in sorted(used)}}
        if (p := step("latency (estimated)")) is not None:
            yield p

    provenance = _provenance(loaded, data, settings, seed, started, latency, context, roofline_info)
    yield Result(
        config=config, config_key=config.key(), labelled=data.labelled, eval_samples=n_eval,
        weight_bytes=weights.weight_bytes, fp32_weight_bytes=weights.fp32_weight_bytes, peak_activation_bytes=peak,
        latency_measured=tuple(measured), executed_precisions=executed, measured_note=note,
        latency_estimated=tuple(estimated), provenance=provenance, **fidelity,
    )


def _half_precision_note(executed: dict[str, str], threads: int) -> str:
    """Say whether bf16/fp16 layers ran on native kernels here, from the roofline matmul calibration."""
    halves = sorted({p for p in executed.values() if p in ("bf16", "fp16")})
    if not halves:
        return ""
    peaks = roofline_mod.calibrate(threads).peak_macs
    parts = []
    for precision in halves:
        speed = peaks[precision] / peaks["fp32"]
        kind = "native" if speed >= 1.0 else "emulated or unoptimised"
        parts.append(f"{precision} layers ran on this CPU's {precision} kernels ({kind}: matmul {speed:.2f}x fp32)")
    return "; ".join(parts)


def _fidelity(reference: torch.Tensor, output: torch.Tensor, data) -> dict:
    n = len(output)
    predicted = output.argmax(1)
    agree = int((predicted == reference.argmax(1)).sum())
    out = {"agreement": agree / n if n else 0.0, "agreement_ci95": wilson_interval(agree, n),
           "sqnr_db": sqnr_db(reference, output), "accuracy": None, "accuracy_ci95": None, "top5": None,
           "top5_ci95": None}
    if data.eval_labels is not None:
        labels = data.eval_labels.to(predicted.device)
        correct = int((predicted == labels).sum())
        out["accuracy"], out["accuracy_ci95"] = correct / n, wilson_interval(correct, n)
        classes = output.shape[1] if output.dim() == 2 else 0
        if classes >= 5:
            top5 = int((output.topk(5, dim=1).indices == labels[:, None]).any(dim=1).sum())
            out["top5"], out["top5_ci95"] = top5 / n, wilson_interval(top5, n)
    return out


def _layer_costs(context: _ModelContext, weights: memory_mod.WeightMemory) -> list[roofline_mod.LayerCost]:
    per_layer: dict[str, int] = {}
    for tensor in weights.tensors:
        layer = tensor.name.rsplit(".", 1)[0]
        per_layer[layer] = per_layer.get(layer, 0) + tensor.total_bytes
    sizes = context.activation_sizes.sizes if context.activation_sizes else {}
    costs = []
    for info in context.layers:
        numel_in, numel_out = sizes.get(info.name, (0, math.prod(info.output_shape)))
        costs.append(roofline_mod.LayerCost(info.name, int(info.macs), per_layer.get(info.name, 0), numel_in,
                                            numel_out))
    return costs


def _provenance(loaded, data, settings: LatencySettings, seed: int, started: datetime, latency: str,
                context: _ModelContext, roofline_info: dict | None) -> dict:
    return {
        "qtradeoff": qtradeoff.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": roofline_mod.cpu_model(),
        "threads": settings.resolved_threads(),
        "quantized_engine": ENGINE,
        "batch_sizes": list(settings.batch_sizes),
        "latency": latency,
        "latency_min_run_time_s": settings.min_run_time,
        "latency_warmup": settings.warmup,
        "eval_samples": len(data.eval_inputs),
        "calib_samples": len(data.calib_inputs),
        "seed": seed,
        "model": {"name": getattr(loaded, "name", ""), "sha256": getattr(loaded, "sha256", ""),
                  "format": getattr(loaded, "format", "")},
        "data": {"name": data.name, "fingerprint": data.fingerprint},
        "simulation_notes": list(getattr(context.compressor, "notes", [])),
        "roofline": roofline_info,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - started.timestamp(), 3),
    }


def evaluate(loaded, data, config: CompressionConfig, *, should_stop: Callable[[], bool] = lambda: False,
             **kwargs) -> Result:
    """Run :func:`evaluate_iter` to the end and return its Result; raises :class:`Cancelled` when stopped."""
    for item in evaluate_iter(loaded, data, config, should_stop=should_stop, **kwargs):
        if isinstance(item, Result):
            return item
    raise Cancelled("evaluation cancelled before it finished")
