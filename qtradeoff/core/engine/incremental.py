"""Incremental evaluation: reuse the activations a configuration shares with ones already evaluated.

The simulated model is traced with torch.fx, keeping the compressible layers as leaves. The values live just
before each compressible layer — a *cut* — are cached, keyed by the resolved settings of every layer before the
cut and by the data, so that a configuration whose first changed layer is the k-th one re-runs only the graph from
cut k on. Memory is bounded by an LRU over bytes. Models that cannot be traced are evaluated in full, and
:attr:`IncrementalEvaluator.note` says so. An evaluator may be used from several threads at once: the cache and
the traced graphs are guarded by locks that are never held while the model runs.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import threading
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from qtradeoff.core import runtime
from qtradeoff.core.config import CompressionConfig, LayerSettings
from qtradeoff.core.errors import InputError
from qtradeoff.core.loading import data as data_mod

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024
# Inputs run in chunks of this many samples (as measure.evaluate does): small batches keep activations in cache.
CHUNK_SAMPLES = 64
# Stacked variants' values per batched run at most this size: beyond a few MiB, activations leave the CPU caches and
# a larger batch runs slower per sample (digits_cnn's first convolution: 5x slower per sample at 512 than at 64; the
# graph after its second layer 1.5x slower per sample at 512 than at 64 on a 512 KiB-L2 EPYC). At 16 MiB the batched
# sensitivity analysis of digits_cnn took 1.15x as long as one trial at a time; at 2 MiB the
# early layers' trials (2-4 MiB per variant) run one per batch and the late ones stacked (1.0-1.1x faster).
_STACK_BYTES = 2 * 1024 * 1024
_FREE_BATCH_BYTES = 256 * 1024 * 1024  # dead activations kept at most this long before being freed together

# In-place operators: a value cached at a cut must never be modified by the part of the graph that runs after it.
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.setitem}


_CODE_TYPES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.BuiltinMethodType,
               functools.partial)


class IncrementalError(InputError, RuntimeError):
    """The incremental engine was used inconsistently (e.g. a layer name the model does not have)."""


@dataclass
class IncrementalStats:
    """Counters that show how much work the cache saved; ``nodes_run / nodes_total`` is the fraction recomputed."""

    calls: int = 0
    full_runs: int = 0  # runs that started at the graph's beginning (cache miss, or untraceable model)
    cut_hits: int = 0
    nodes_run: int = 0
    nodes_total: int = 0  # nodes a full evaluation of every call would have run
    traces: int = 0
    evictions: int = 0


class ActivationCache:
    """An LRU of cut values bounded by the bytes of the tensors it holds."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if max_bytes < 0:
            raise ValueError(f"cache size {max_bytes} is negative; give a size in bytes (0 disables the cache)")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._entries: OrderedDict[Any, tuple[dict, int]] = OrderedDict()
        self.evictions = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def get(self, key):
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key, values: dict) -> None:
        size = sum(_nbytes(value) for value in values.values())
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (values, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, list | tuple):
        return sum(_nbytes(item) for item in value)
    if isinstance(value, dict):
        return sum(_nbytes(item) for item in value.values())
    return 64


class _LayerTracer(fx.Tracer):
    """Keeps the named layers as leaves whatever their class (wrappers included)."""

    def __init__(self, leaf_names: Iterable[str]):
        super().__init__()
        self._leaf_names = frozenset(leaf_names)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self._leaf_names or super().is_leaf_module(module, qualified_name)


@dataclass
class _Plan:
    """A traced graph in execution order with, for each cut, the values live across it."""

    nodes: list[fx.Node]
    cut_positions: list[int]  # node index of each compressible-layer call, then of the output node
    cut_layers: list[str]  # layer called at each cut (the last cut, the output, has none)
    live: list[tuple[fx.Node, ...]]  # values produced before the cut and used at or after it
    last_use: dict[fx.Node, int]
    signature: str  # identifies the graph; part of every cache key


def _structure_signature(module: nn.Module) -> str:
    """Names and classes of every submodule: configs that give the same signature share one traced graph."""
    digest = hashlib.sha256()
    for name, sub in module.named_modules():
        digest.update(f"{name}:{type(sub).__module__}.{type(sub).__qualname__};".encode())
    return digest.hexdigest()


def _build_plan(graph: fx.Graph, layer_names: frozenset[str], signature: str) -> _Plan:
    nodes = list(graph.nodes)  # fx keeps nodes in a valid topological order
    index = {node: i for i, node in enumerate(nodes)}
    last_use = {node: max((index[user] for user in node.users), default=index[node]) for node in nodes}
    cut_positions, cut_layers = [], []
    for i, node in enumerate(nodes):
        if node.op == "call_module" and node.target in layer_names:
            cut_positions.append(i)
            cut_layers.append(node.target)
    output = next(i for i, node in enumerate(nodes) if node.op == "output")
    cut_positions.append(output)
    live = []
    for position in cut_positions:
        # get_attr nodes are re-read from the current module rather than cached: they may differ per config
        live.append(tuple(node for node in nodes[:position]
                          if node.op != "get_attr" and last_use[node] >= position))
    return _Plan(nodes, cut_positions, cut_layers, live, last_use, signature)


def _fetch_attr(root: nn.Module, target: str):
    value = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _mutates_inputs(node: fx.Node, root: nn.Module, module: nn.Module | None = None) -> bool:
    if node.op == "call_module":
        return bool(getattr(module if module is not None else root.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
                or (name.endswith("_") and not name.startswith("_")))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    return False


class IncrementalEvaluator:
    """Runs simulated models built by ``build(config)``, recomputing only what differs from cached runs.

    ``layer_names`` are the compressible layers (the module names ``build`` compresses). Results are bit-identical
    to ``build(config)(inputs)``: the same operations run on the same values, only fewer of them. Cut keys hold
    each layer's resolved settings: pass ``settings`` (a plan's) when the caller has them, else each layer is
    resolved from the config by name.
    """

    def __init__(self, build: Callable[[CompressionConfig], nn.Module], layer_names: Sequence[str], *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self._build = build
        self.layer_names = tuple(layer_names)
        self._leaf_names = frozenset(self.layer_names)
        self.cache = ActivationCache(cache_bytes)
        self.stats = IncrementalStats()
        self._plans: dict[str, _Plan | None] = {}
        self._plans_lock = threading.Lock()
        # the module seen last and its graph: an evaluation runs one simulated module over many chunks, and the
        # structure signature (a walk over every submodule) need not be recomputed for each
        self._last: tuple[weakref.ref, _Plan | None] | None = None
        self.traceable: bool | None = None  # unknown until the first model is seen
        self.note = ""

    # -- public ----------------------------------------------------------------------------------------------
    def forward(self, config: CompressionConfig, inputs: torch.Tensor, *, fingerprint: str | None = None,
                module: nn.Module | None = None, store: bool = True,
                settings: Mapping[str, LayerSettings] | None = None) -> torch.Tensor:
        """The simulated model's output for ``inputs`` under ``config`` (identical to a full evaluation).

        ``inputs`` run in chunks of :data:`CHUNK_SAMPLES`, each cached under ``"<fingerprint>[start:end]"``
        (``fingerprint`` identifies ``inputs``; computed from the tensor when omitted). ``module`` is the
        simulated model when the caller already built it. ``store=False`` reads the cache but adds nothing: for
        one-off configurations (a sensitivity trial) whose downstream values no later run will share.
        """
        if module is None:
            module = self._build(config)
        if fingerprint is None:
            fingerprint = data_mod.fingerprint(inputs)
        outputs = [self.forward_chunk(config, inputs[start:start + CHUNK_SAMPLES],
                                      f"{fingerprint}[{start}:{start + CHUNK_SAMPLES}]", module=module, store=store,
                                      settings=settings)
                   for start in range(0, len(inputs), CHUNK_SAMPLES)]
        if len(outputs) == 1:
            return outputs[0]
        if not all(isinstance(output, torch.Tensor) for output in outputs):
            raise IncrementalError("the model returns more than one tensor; incremental evaluation needs logits")
        return torch.cat(outputs)

    def forward_chunk(self, config: CompressionConfig, inputs: torch.Tensor, key: str, *, module: nn.Module,
                      store: bool = True, settings: Mapping[str, LayerSettings] | None = None) -> Any:
        """One batch through ``module`` (the simulated model of ``config``), cached under data key ``key``."""
        self.stats.calls += 1
        plan = self._plan_for(module)  # before running(): tracing waits for every running forward
        with torch.no_grad(), runtime.running():
            if plan is None:
                self.stats.full_runs += 1
                return module(inputs)
            return self._run(plan, module, config, inputs, key, store, settings)

    def forward_variants(self, layer: str, configs: Sequence[CompressionConfig], modules: Sequence[nn.Module],
                         inputs: torch.Tensor, *, fingerprint: str,
                         settings: Sequence[Mapping[str, LayerSettings]]) -> list[torch.Tensor] | None:
        """Outputs of several configurations that differ only at ``layer``, the shared downstream run once.

        ``modules`` and ``settings`` are each configuration's simulated model and resolved settings. Per chunk,
        the values before ``layer`` come from the cache (or one run), each variant runs ``layer`` and the graph up
        to the next layer on its own model, and the values live there are stacked along the batch dimension so
        that the rest of the graph — the same modules for every variant — runs once for all of them: one module
        call per node instead of one per variant, which pays where per-call overhead dominates (small layers).
        On digits_cnn the convolutions' arithmetic dominates and the gain is small (benchmarks/bench_sensitivity.py
        prints it: "incremental vs incremental, per trial"). Top-1 decisions are those of
        :meth:`forward` (see :func:`_settle_near_ties`); the other logits may differ in the last bits. Variants
        stack up to :data:`_STACK_BYTES` per run, as many per run on every chunk as on the first (where batching
        is checked). Returns None when this cannot be shown safe here (untraceable model, a downstream module that
        differs between
        variants, a value without a batch dimension, or a batched run that is not bit-identical to one variant's
        own on the first chunk): the caller then evaluates each configuration on its own.
        """
        if not configs:
            return []
        plans = [self._plan_for(module) for module in modules]
        plan = plans[0]
        if plan is None or any(other is not plan for other in plans) or layer not in plan.cut_layers:
            return None
        cut = plan.cut_layers.index(layer)
        if not _same_downstream(plan, cut, modules, settings, layer):
            return None
        outputs: list[list[torch.Tensor]] = [[] for _ in configs]
        group = None  # variants per batched run, set on the first chunk (where batching is checked) for every chunk
        for start in range(0, len(inputs), CHUNK_SAMPLES):
            found = self._variant_chunk(plan, cut, configs, modules, settings, inputs[start:start + CHUNK_SAMPLES],
                                        f"{fingerprint}[{start}:{start + CHUNK_SAMPLES}]", group=group)
            if found is None:
                return None
            found, group = found
            for parts, output in zip(outputs, found, strict=True):
                parts.append(output)
        return [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in outputs]

    def clear(self) -> None:
        """Forget every cached activation (the traced graphs are kept)."""
        self.cache.clear()

    # -- internals -------------------------------------------------------------------------------------------
    def _plan_for(self, module: nn.Module) -> _Plan | None:
        if isinstance(module, torch.jit.ScriptModule):
            self.traceable = False
            self.note = ("TorchScript models cannot be traced by torch.fx; every configuration is evaluated in "
                         "full (no incremental re-use)")
            return None
        last = self._last
        if last is not None and last[0]() is module:
            return last[1]
        signature = _structure_signature(module)
        with self._plans_lock:
            known = signature in self._plans
            plan = self._plans.get(signature)
        if not known:  # traced without holding the lock (tracing waits for other threads' forwards)
            plan = self._trace(module, signature)
            with self._plans_lock:
                plan = self._plans.setdefault(signature, plan)
        self._last = (weakref.ref(module), plan)
        return plan

    def _trace(self, module: nn.Module, signature: str) -> _Plan | None:
        missing = [name for name in self.layer_names if not _has_submodule(module, name)]
        if missing:
            raise IncrementalError(f"the simulated model has no layer {missing[0]!r}; pass the layer names of "
                                   "the model being compressed")
        try:
            with runtime.tracing():
                graph = _LayerTracer(self._leaf_names).trace(module)
        except Exception as error:  # noqa: BLE001 - any tracing failure means "evaluate in full"
            self.traceable = False
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.note = (f"the model is not FX-traceable ({reason[:160]}); every configuration is evaluated in "
                         "full (no incremental re-use)")
            return None
        self.stats.traces += 1
        plan = _build_plan(graph, self._leaf_names, signature)
        if self.traceable is None:
            self.traceable = True
            self.note = f"incremental evaluation over {len(plan.cut_layers)} layer boundaries (torch.fx)"
        return plan

    def _keys(self, plan: _Plan, config: CompressionConfig, fingerprint: str,
              settings: Mapping[str, LayerSettings] | None) -> list[tuple]:
        """The cache key of every cut: (graph, cut, settings of every layer called before it, data)."""
        keys, prefix = [], []
        resolved: dict[str, Any] = dict(settings or {})
        # a model-wide float transform (cross-layer equalization) changes layers its settings do not name
        equalization = getattr(config, "equalization", "none")
        for cut, _ in enumerate(plan.cut_positions):
            keys.append((plan.signature, cut, tuple(prefix), fingerprint, equalization))
            if cut < len(plan.cut_layers):
                name = plan.cut_layers[cut]
                if name not in resolved:
                    resolved[name] = config.resolve(name)
                prefix.append((name, resolved[name]))
        return keys

    def _run(self, plan: _Plan, root: nn.Module, config: CompressionConfig, inputs: torch.Tensor,
             fingerprint: str, store: bool = True, settings: Mapping[str, LayerSettings] | None = None) -> Any:
        keys = self._keys(plan, config, fingerprint, settings)
        self.stats.nodes_total += len(plan.nodes)
        start_cut, env = self._cached_start(plan, keys, len(keys) - 1)
        return self._walk(plan, root, env, start_cut, len(plan.nodes), inputs=inputs, keys=keys, store=store)

    def _variant_chunk(self, plan: _Plan, cut: int, configs: Sequence[CompressionConfig],
                       modules: Sequence[nn.Module], settings: Sequence[Mapping[str, LayerSettings]],
                       chunk: torch.Tensor, key: str, *, group: int | None
                       ) -> tuple[list[torch.Tensor], int] | None:
        self.stats.calls += len(configs)
        self.stats.nodes_total += len(plan.nodes) * len(configs)
        after, end = plan.cut_positions[cut + 1], len(plan.nodes)
        with torch.no_grad(), runtime.running():
            keys = self._keys(plan, configs[0], key, settings[0])  # the keys before the layer are every variant's
            found_cut, env = self._cached_start(plan, keys, cut)
            if found_cut < cut:  # the values before the layer: computed once, cached for the next trials
                self._walk(plan, modules[0], env, found_cut, plan.cut_positions[cut], inputs=chunk, keys=keys,
                           store=True)
                if self.cache.max_bytes:
                    self.cache.put(keys[cut], {node: env[node] for node in plan.live[cut]})
            outputs: list[torch.Tensor] = []
            verify = group is None  # the first chunk: group set from the first variant's values (memory bound)
            index = 0
            while index < len(modules):
                envs = []
                while index + len(envs) < len(modules) and (group is None or len(envs) < group):
                    # the layer itself (and e.g. its folded BatchNorm) on each variant's own model
                    own = dict(env)
                    if self._walk(plan, modules[index + len(envs)], own, cut, after, inputs=chunk) is not None:
                        return None
                    envs.append(own)
                    if group is None:
                        group = self._group_size(len(modules), sum(_nbytes(own[n]) for n in plan.live[cut + 1]))
                members = range(index, index + len(envs))
                stacked = _stack(plan.live[cut + 1], envs, len(chunk))
                if stacked is None:
                    return None
                output = self._walk(plan, modules[index], stacked, cut + 1, end, start=after)
                if not isinstance(output, torch.Tensor) or output.dim() < 1 or len(output) != len(chunk) * len(envs):
                    return None
                parts = list(output.split(len(chunk)))
                if verify and index == 0:
                    # Batch-coupled downstream ops (a statistic over the batch, a reshape that folds it) show
                    # here: the batched run must reproduce one variant's own run bit for bit, else no batching.
                    alone = self._walk(plan, modules[members[-1]], dict(envs[-1]), cut + 1, end, start=after)
                    if not (isinstance(alone, torch.Tensor) and torch.equal(alone, parts[-1])):
                        return None
                    # That check passes when the variant it runs alone happens to dominate a batch statistic
                    # (a dynamic range: the batch's max is that variant's max): so also run the first variant
                    # beside a doubled copy of itself, which moves any such statistic.
                    if len(envs) > 1 and not self._per_sample(plan, modules[index], envs[0], cut, parts[0],
                                                              len(chunk)):
                        return None
                for i, part in zip(members, parts, strict=True):
                    own = envs[i - index]
                    outputs.append(_settle_near_ties(
                        part, lambda i=i, own=own: self._walk(plan, modules[i], dict(own), cut + 1, end, start=after)))
                index += len(envs)
            return outputs, group

    def _per_sample(self, plan: _Plan, module: nn.Module, env: dict, cut: int, batched: torch.Tensor,
                    batch: int) -> bool:
        """Whether the graph after cut ``cut + 1`` gives ``env``'s samples the same outputs (``batched``, from the
        stacked run) when the rest of the batch is other data: run beside a copy of them with every floating value
        doubled, a per-sample graph reproduces ``batched`` bit for bit, one with a statistic over the batch (a
        dynamic range, a batch mean) does not."""
        doubled = {node: value * 2 if isinstance(value, torch.Tensor) and value.is_floating_point()
                   and value.dim() >= 1 and value.shape[0] == batch else value
                   for node, value in env.items() if node in plan.live[cut + 1]}
        stacked = _stack(plan.live[cut + 1], [env, doubled], batch)
        if stacked is None:
            return False
        output = self._walk(plan, module, stacked, cut + 1, len(plan.nodes), start=plan.cut_positions[cut + 1])
        return (isinstance(output, torch.Tensor) and output.dim() >= 1 and len(output) == 2 * batch
                and torch.equal(output[:batch], batched))

    def _group_size(self, count: int, variant_bytes: int) -> int:
        """How many variants share one batched run: as many as keep their stacked values within
        :data:`_STACK_BYTES` (and the cache budget); at least one."""
        budget = min(_STACK_BYTES, self.cache.max_bytes or _STACK_BYTES)
        return max(1, min(count, budget // max(variant_bytes, 1)))

    def _cached_start(self, plan: _Plan, keys: list[tuple], latest: int) -> tuple[int, dict]:
        """The latest cut at or before ``latest`` found in the cache and its values (-1 and {} when none)."""
        for cut in range(latest, -1, -1):
            found = self.cache.get(keys[cut])
            if found is not None:
                self.stats.cut_hits += 1
                return cut, dict(found)
        self.stats.full_runs += 1
        return -1, {}

    def _walk(self, plan: _Plan, root: nn.Module, env: dict, start_cut: int, stop: int, *,
              inputs: torch.Tensor | None = None, keys: list[tuple] | None = None, store: bool = False,
              start: int | None = None) -> Any:
        """Run the nodes from ``start`` (default: cut ``start_cut``'s position, 0 for -1) up to ``stop`` on ``env``.

        Returns the model's output when the output node is reached, else None with ``env`` holding the values
        live at ``stop``. Cuts passed on the way are cached under ``keys`` when ``store``.
        """
        if start is None:
            start = plan.cut_positions[start_cut] if start_cut >= 0 else 0
        shared = {id(value) for value in env.values()}  # values the cache also holds: never mutate them
        for node in plan.nodes[:start]:
            if node.op == "get_attr" and plan.last_use[node] >= start:
                env[node] = _fetch_attr(root, node.target)
        cut_at = {position: cut for cut, position in enumerate(plan.cut_positions) if position > start}
        placeholders = iter((inputs,))
        result = None
        dead: list = []
        dead_bytes = 0
        free_batch = _FREE_BATCH_BYTES if self.cache.max_bytes else 0  # no cache: least memory, free at once
        for position in range(start, stop):
            cut = cut_at.get(position)
            if cut is not None and store and keys is not None and self.cache.max_bytes:
                values = {node: env[node] for node in plan.live[cut]}
                self.cache.put(keys[cut], values)
                shared.update(id(value) for value in values.values())
            node = plan.nodes[position]
            self.stats.nodes_run += 1
            if node.op == "output":
                result = fx.node.map_arg(node.args[0], lambda n: env[n])
                break
            if node.op == "placeholder":
                try:
                    env[node] = next(placeholders)
                except StopIteration:
                    raise IncrementalError("the model takes more than one input; incremental evaluation feeds "
                                           "one tensor") from None
                continue
            module = root.get_submodule(node.target) if node.op == "call_module" else None  # looked up once
            if shared and _mutates_inputs(node, root, module):
                _unshare(node, env, shared)
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = module(*args, **kwargs) if module is not None else _execute(node, root, args, kwargs)
            # Drop what nothing downstream needs (the cache keeps its own references), in batches: freeing each
            # dead activation at once makes the allocator hand large blocks back and fault fresh pages in for the
            # next one, which costs about a quarter of the run time on small CNNs.
            for used in node.all_input_nodes:
                if plan.last_use[used] <= position and used in env:
                    value = env.pop(used)
                    dead.append(value)
                    dead_bytes += _nbytes(value)
            if dead_bytes > free_batch:
                dead.clear()
                dead_bytes = 0
        self.stats.evictions = self.cache.evictions
        return result


# A batched top-1 decision is kept only when its margin over the runner-up is larger than this (relative to the
# logits' scale); a closer one is re-decided by the variant's own run. A batched run differs from a lone one by at
# most a few ulp (oneDNN gave bit-identical outputs at every batch size on the samples), so 1e-4 is a wide margin.
_TIE_TOLERANCE = 1e-4


def _settle_near_ties(logits: torch.Tensor, alone: Callable[[], Any]) -> torch.Tensor:
    """``logits`` from a batched run, or the variant's own run (``alone()``) when a top-1 decision is a near tie."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        return logits
    top = logits.topk(2, dim=1).values
    scale = logits.abs().amax(dim=1).clamp_min(1.0)
    if bool(((top[:, 0] - top[:, 1]) <= _TIE_TOLERANCE * scale).any()) or not bool(torch.isfinite(top).all()):
        return alone()
    return logits


def _same_downstream(plan: _Plan, cut: int, modules: Sequence[nn.Module],
                     settings: Sequence[Mapping[str, LayerSettings]], layer: str) -> bool:
    """Whether everything after the graph's next layer past ``cut`` is the same for every variant: the same
    module objects (or, for compressible layers, the same resolved settings) and the same attributes."""
    first = settings[0]
    for other in settings[1:]:
        if any(other.get(name) != value for name, value in first.items() if name != layer):
            return False
    compressible = set(plan.cut_layers)
    after = plan.cut_positions[cut + 1]
    for position, node in enumerate(plan.nodes):
        if node.op == "call_module" and node.target not in compressible and position >= after:
            held = [module.get_submodule(node.target) for module in modules]
        elif node.op == "get_attr" and plan.last_use[node] >= after:
            held = [_fetch_attr(module, node.target) for module in modules]
        else:
            continue
        if any(item is not held[0] and not _equivalent(item, held[0]) for item in held[1:]):
            return False
    return True


def _equivalent(one: Any, other: Any, depth: int = 2) -> bool:
    """Whether two objects compute the same thing: identical, equal tensors, or objects of one class whose
    attributes are (a module's parameter and buffer tables included). The compressor gives each simulated model
    its own copy of a BatchNorm folded into a downstream layer, with a stand-in forward holding the folded bias:
    copies made for one layer's trials differ as objects only, the downstream layer's settings being the same."""
    if one is other:
        return True
    if isinstance(one, torch.Tensor) or isinstance(other, torch.Tensor):
        return (isinstance(one, torch.Tensor) and isinstance(other, torch.Tensor) and one.dtype == other.dtype
                and one.shape == other.shape and one.stride() == other.stride() and torch.equal(one, other))
    if depth <= 0 or type(one) is not type(other) or isinstance(one, _CODE_TYPES):
        return False  # a function (a hook, a closure over its ranges) is the same only when it is the same object
    if isinstance(one, dict):
        return one.keys() == other.keys() and all(_equivalent(one[k], other[k], depth - 1) for k in one)
    if isinstance(one, list | tuple | set | frozenset):
        return one == other  # hook lists and the like: only equal (identical) members
    state, other_state = getattr(one, "__dict__", None), getattr(other, "__dict__", None)
    if state is None or other_state is None:
        return one == other
    return state.keys() == other_state.keys() and all(
        _equivalent(state[k], other_state[k], depth - 1 if not isinstance(state[k], dict) else depth)
        for k in state)


def _stack(live: Sequence[fx.Node], envs: list[dict], batch: int) -> dict | None:
    """The variants' live values stacked along the batch dimension; values without one must be equal objects."""
    stacked = {}
    for node in live:
        values = [env[node] for env in envs]
        first = values[0]
        if isinstance(first, torch.Tensor) and first.dim() >= 1 and first.shape[0] == batch:
            if not all(isinstance(v, torch.Tensor) and v.shape == first.shape for v in values):
                return None
            stacked[node] = torch.cat(values)
        elif all(v is first for v in values) and not isinstance(first, torch.Tensor | int):
            stacked[node] = first  # e.g. None or a module-level constant, never a size read off the batch
        else:
            return None
    return stacked


def _unshare(node: fx.Node, env: dict, shared: set[int]) -> None:
    """Before an in-place op, give every input the cache also holds a private copy (and every alias of it, so
    later uses see the mutation as they would in eager mode) — the cached original stays as it was."""
    for used in node.all_input_nodes:
        value = env.get(used)
        if isinstance(value, torch.Tensor) and id(value) in shared:
            copy = value.clone()
            for other, held in list(env.items()):
                if held is value:
                    env[other] = copy


def _has_submodule(module: nn.Module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _execute(node: fx.Node, root: nn.Module, args, kwargs):
    if node.op == "call_module":
        return root.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        obj, *rest = args
        return getattr(obj, node.target)(*rest, **kwargs)
    if node.op == "get_attr":
        return _fetch_attr(root, node.target)
    raise IncrementalError(f"unsupported graph node {node.op!r}")
