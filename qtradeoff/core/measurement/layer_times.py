"""Measured time of each layer inside a forward pass: a clock started and stopped by forward hooks around every
layer module (and every other leaf module outside the layers), several models timed in alternating rounds.

What the per-layer latency profile measures (:mod:`qtradeoff.core.engine.layer_profile` runs it on the fp32 model
and the configuration's real-kernel model). A layer's time includes the BatchNorm and activation modules called
right after it, because int8 conversion fuses them into the layer: the fp32 and int8 figures then cover the
same work. Time outside every hooked module (quantize/dequantize steps, functional adds, flatten) is the glue.
The clock's own reading for an empty call (measured on an ``nn.Identity`` under the same hooks) is subtracted
from every call; the hooks' cost outside the clocked intervals lands in the whole forward and the glue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qtradeoff.core.loading.graph import FOLDABLE_KINDS
from qtradeoff.core.loading.inventory import module_kind


@dataclass(frozen=True)
class LayerClockStats:
    """One model's per-layer figures over the rounds: median ms and IQR / median, the whole forward's median."""

    layer_ms: dict[str, float]
    layer_spread: dict[str, float]
    total_ms: float
    glue_ms: float  # the forward's time outside every layer (and outside the fused followers counted with them)
    rounds: int


class _Clock:
    """Forward hooks on ``layers`` (names in ``model``) and on the leaf modules outside them, recording call order
    and elapsed time of every call of one forward."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.calls: list[tuple[str, str, int]] = []  # (name, kind, ns)
        self._starts: dict[str, int] = {}
        self._handles: list = []
        self.floor_ns = 0  # subtracted from every call (see calibrate)
        present = {name for name, _ in model.named_modules()}
        self.layers = [name for name in layers if name in present]
        hooked: list[str] = list(self.layers)
        inside = tuple(f"{name}." for name in self.layers)
        for name, module in model.named_modules():
            if name and name not in self.layers and not name.startswith(inside) and not list(module.children()):
                hooked.append(name)
        for name in hooked:
            module = model.get_submodule(name)
            kind = module_kind(module)
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name, kind)))

    def _pre(self, name: str) -> Callable:
        def hook(module, args):
            self._starts[name] = time.perf_counter_ns()
        return hook

    def _post(self, name: str, kind: str) -> Callable:
        def hook(module, args, output):
            end = time.perf_counter_ns()
            self.calls.append((name, kind, end - self._starts.pop(name, end)))
        return hook

    def calibrate(self, calls: int = 200) -> int:
        """The clock's own reading for a call that does nothing (an ``nn.Identity`` under the same hooks): the
        median ns that :meth:`attribute` subtracts from every call, so a layer's figure is its work."""
        probe = nn.Identity()
        handles = [probe.register_forward_pre_hook(self._pre("\0probe")),
                   probe.register_forward_hook(self._post("\0probe", "Identity"))]
        x = torch.zeros(1)
        try:
            for _ in range(calls):
                probe(x)
        finally:
            for handle in handles:
                handle.remove()
        readings = sorted(ns for name, _, ns in self.calls if name == "\0probe")
        self.calls = [call for call in self.calls if call[0] != "\0probe"]
        self.floor_ns = readings[len(readings) // 2] if readings else 0
        return self.floor_ns

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def attribute(self) -> tuple[dict[str, int], int]:
        """This forward's ns per layer (with the fused followers after it) and the ns of every hooked call."""
        per_layer: dict[str, int] = {}
        current: str | None = None
        covered = 0
        layer_set = set(self.layers)
        for name, kind, ns in self.calls:
            ns = max(0, ns - self.floor_ns)
            if name in layer_set:
                per_layer[name] = per_layer.get(name, 0) + ns
                current = name
                covered += ns
            elif current is not None and kind in FOLDABLE_KINDS:
                per_layer[current] += ns
                covered += ns
            else:
                current = None  # a pool or another module: the glue, not the layer before it
        self.calls.clear()
        return per_layer, covered


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        position = q * (n - 1)
        low = int(position)
        high = min(low + 1, n - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return at(0.25), at(0.5), at(0.75)


def time_layers(models: Mapping[str, nn.Module], layers: Sequence[str], inputs: torch.Tensor, *, rounds: int = 15,
                warmup: int = 2, should_stop: Callable[[], bool] = lambda: False,
                ) -> Iterator[tuple[int, int] | dict[str, LayerClockStats]]:
    """Time every layer of each model in ``models`` on ``inputs`` (one batch): ``warmup`` calls each, then
    ``rounds`` rounds in which every model runs once, the order rotating from round to round (AB, BA, ...) so
    that a change in the machine's load falls on all of them alike. Yields (round, rounds) after each round, then
    the stats per model name. Stops (yielding nothing more) when ``should_stop()``."""
    names = list(models)
    clocks = {name: _Clock(model, layers) for name, model in models.items()}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    totals: dict[str, list[float]] = {name: [] for name in names}
    glue: dict[str, list[float]] = {name: [] for name in names}
    try:
        for clock in clocks.values():
            clock.calibrate()
        with torch.inference_mode():
            for name in names:
                for _ in range(warmup):
                    models[name](inputs)
                clocks[name].calls.clear()
            for round_ in range(rounds):
                if should_stop():
                    return
                order = names[round_ % len(names):] + names[:round_ % len(names)]
                for name in order:
                    start = time.perf_counter_ns()
                    models[name](inputs)
                    total = time.perf_counter_ns() - start
                    per_layer, covered = clocks[name].attribute()
                    for layer, ns in per_layer.items():
                        samples[name].setdefault(layer, []).append(ns / 1e6)
                    totals[name].append(total / 1e6)
                    glue[name].append(max(0, total - covered) / 1e6)
                yield round_ + 1, rounds
    finally:
        for clock in clocks.values():
            clock.close()
    stats = {}
    for name in names:
        layer_ms, layer_spread = {}, {}
        for layer, values in samples[name].items():
            q1, median, q3 = _quartiles(values)
            layer_ms[layer] = median
            layer_spread[layer] = (q3 - q1) / median if median > 0 else 0.0
        stats[name] = LayerClockStats(layer_ms, layer_spread, _quartiles(totals[name])[1],
                                      _quartiles(glue[name])[1], rounds)
    yield stats


__all__ = ["LayerClockStats", "time_layers"]
