"""The per-layer latency profile of a configuration: each layer's measured time in the model PyTorch really runs
for it (the engine's real-kernel model: int8 through torch.ao, bf16/fp16 casts, else fp32) against the same layer
in the fp32 model, timed in alternating rounds on a fixed thread count.

:func:`profile_layers` is a generator (Progress, then one :class:`LayerProfile`), stopped between rounds by
``should_stop``; the GUI's worker and tests consume it alike. Every figure is a measurement (medians over the
rounds, with their spread), never an estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from qtradeoff.core import runtime
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.measurement.latency import NOISY_SPREAD, batch_of
from qtradeoff.core.measurement.layer_times import time_layers
from qtradeoff.core.measurement.realquant import quantized_engine
from qtradeoff.core.measurement.result import Cancelled, Progress
from qtradeoff.core.measurement.timing_threads import timing_threads

DEFAULT_ROUNDS = 15


@dataclass(frozen=True)
class LayerTiming:
    """One layer: median ms per forward at the profile's batch in fp32 and in the configuration, the IQR of each
    relative to its median, and the precision the layer really executed in."""

    name: str
    fp32_ms: float | None
    config_ms: float | None
    fp32_spread: float = 0.0
    config_spread: float = 0.0
    executed: str = "fp32"

    @property
    def ratio(self) -> float | None:
        """Configuration time over fp32 time (below 1: faster here); None when either is missing."""
        if self.fp32_ms is None or self.config_ms is None or self.fp32_ms <= 0:
            return None
        return self.config_ms / self.fp32_ms

    @property
    def noisy(self) -> bool:
        return max(self.fp32_spread, self.config_spread) > NOISY_SPREAD


@dataclass(frozen=True)
class LayerProfile:
    config_key: str
    layers: tuple[LayerTiming, ...]
    batch: int
    threads: int
    threads_reason: str
    rounds: int
    fp32_total_ms: float
    config_total_ms: float
    fp32_glue_ms: float  # time outside the layers: quantize/dequantize steps, pooling, adds, flatten
    config_glue_ms: float
    note: str = ""

    def by_layer(self) -> dict[str, LayerTiming]:
        return {timing.name: timing for timing in self.layers}

    def describe(self) -> str:
        """One sentence saying what was measured, and how."""
        return (f"Measured per layer with forward hooks: median of {self.rounds} alternating rounds at batch "
                f"{self.batch} on {self.threads} thread{'s' if self.threads != 1 else ''} ({self.threads_reason}); "
                f"whole forward {self.config_total_ms:.3g} ms vs fp32 {self.fp32_total_ms:.3g} ms, of which "
                f"{self.config_glue_ms:.3g} / {self.fp32_glue_ms:.3g} ms outside the layers (with the hooks' own "
                "cost).")


def profile_layers(engine, config: CompressionConfig, *, batch: int = 1, rounds: int = DEFAULT_ROUNDS,
                   warmup: int = 2, threads: int | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> Iterator[Progress | LayerProfile]:
    """Per-layer measured time of ``config``'s real-kernel model against fp32 (see the module docstring).

    Raises :class:`~qtradeoff.core.measurement.result.Cancelled` when stopped before the end."""
    plan = engine.plan(config)
    yield Progress(0, rounds + 1, "building the real-kernel model")
    real = engine.real_model(plan)
    if should_stop():
        raise Cancelled("layer profile cancelled")
    names = list(engine.layer_names)
    inputs = batch_of(engine.data.eval_inputs, batch)
    pinned = timing_threads(threads)
    same = real.module is engine.module  # fp32 itself (nothing has a faster kernel): timed once, not against itself
    models = {"fp32": engine.module} if same else {"fp32": engine.module, "config": real.module}
    previous = torch.get_num_threads()
    torch.set_num_threads(pinned.threads)
    stats = None
    try:
        timings = time_layers(models, names, inputs, rounds=rounds, warmup=warmup, should_stop=should_stop)
        while True:
            with quantized_engine(), runtime.running():  # int8 kernels run on the engine they were packed for
                item = next(timings, None)
            if item is None:
                break
            if isinstance(item, tuple):
                yield Progress(item[0] + 1, rounds + 1, "profiling layers")
            else:
                stats = item
    finally:
        torch.set_num_threads(previous)
    if stats is None or should_stop():
        raise Cancelled("layer profile cancelled")
    fp32 = stats["fp32"]
    conf = fp32 if same else stats["config"]
    executed = dict(real.executed_precisions)
    layers = tuple(LayerTiming(name, fp32.layer_ms.get(name), conf.layer_ms.get(name), fp32.layer_spread.get(name, 0.0),
                               conf.layer_spread.get(name, 0.0), executed.get(name, "fp32")) for name in names)
    notes = [real.note] if real.note else []
    if same:
        notes.append("the configuration runs the fp32 model itself (nothing has a faster kernel here)")
    missing = [timing.name for timing in layers if timing.config_ms is None and timing.fp32_ms is not None]
    if missing:
        notes.append(f"{len(missing)} layer(s) are not a module of the real-kernel model (e.g. {missing[0]}): "
                     "their time is in the glue")
    yield LayerProfile(config.key(), layers, int(inputs.shape[0]), pinned.threads, pinned.reason, rounds,
                       fp32.total_ms, conf.total_ms, fp32.glue_ms, conf.glue_ms, "; ".join(notes))

__all__ = ["DEFAULT_ROUNDS", "LayerProfile", "LayerTiming", "profile_layers"]
