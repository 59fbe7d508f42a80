"""Automatic search over configurations: grid, sensitivity-guided greedy, evolutionary, and budget solvers.

Every strategy is a generator of ``(config, Result)`` pairs that takes ``should_stop`` and stops quietly when it
becomes true, so whatever it yielded stays valid (the GUI keeps it, a sweep file keeps it). Candidates are
evaluated by ``evaluate(config) -> Result`` — by default the session's incremental path with estimated latency —
(the independent candidates of grid and of an evolutionary generation also by ``evaluate_many(configs)`` as
one batch, which a sweep runs in parallel),
and every strategy is deterministic for a given seed, so a resumed sweep replays the same sequence. Each Result
carries ``provenance["search"]`` (strategy, step, role) so the final answer of a solver can be told apart.
Accuracy drops are in percentage points against the fp32 configuration (agreement when the data has no labels).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from qtradeoff.core.config import CompressionConfig, bits_of
from qtradeoff.core.errors import UsageError
from qtradeoff.core.measurement.pareto import Frontier

STRATEGIES = ("grid", "greedy", "random", "evolutionary", "smallest", "budget")
DEFAULT_LADDER: tuple[int, ...] = (8, 6, 4, 3, 2)
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32", "int8", "int6", "int4", "int3", "int2")
DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
# Candidates of the evolutionary and random searches drawn at once from the frontier (and evaluated in parallel
# by a sweep's backend): enough to keep a few workers busy, few enough that the frontier guiding the mutations
# is updated several times within a typical 50-point budget.
GENERATION = 8
_EPSILON_POINTS = 0.05  # predicted cost floor, so layers that cost nothing are ordered by what they save

Evaluate = Callable[[CompressionConfig], "object"]
# Independent candidates at once: yields, in their order, each one's Result (None for one that could not be
# evaluated, e.g. its worker died twice; whoever evaluated it recorded why). A sweep runs it on its backend.
EvaluateMany = Callable[[Sequence[CompressionConfig]], Iterable]
Point = tuple[CompressionConfig, "object"]


class SearchError(UsageError, ValueError):
    """A search was asked for something it cannot do (unknown strategy or layer, no budget objective)."""


def metric_of(result) -> float:
    """What constraints are checked on: top-1 accuracy when labelled, else top-1 agreement with fp32."""
    return result.accuracy if result.accuracy is not None else result.agreement


def drop_points(reference, result) -> float:
    """Percentage points ``result`` loses against ``reference`` (negative when it gains)."""
    return 100.0 * (metric_of(reference) - metric_of(result))


def latency_of(result, batch: int = 1) -> float | None:
    """Latency at ``batch`` in ms: measured when available, else the estimate."""
    value = result.latency_ms(batch, measured=True)
    return value if value is not None else result.latency_ms(batch, measured=False)


def tagged(result, strategy: str, step: int, role: str, **extra):
    """``result`` with ``provenance["search"]`` describing where it came from in a search."""
    provenance = dict(result.provenance)
    provenance["search"] = {"strategy": strategy, "step": step, "role": role, **extra}
    return dataclasses.replace(result, provenance=provenance)


def role_of(result) -> str:
    """The role a search gave ``result`` ("reference", "candidate", "accepted", "final", ...), or ""."""
    return (result.provenance.get("search") or {}).get("role", "")


# -- configuration edits ---------------------------------------------------------------------------------------

def set_layer(config: CompressionConfig, layer: str, *, bits: int | None = None, precision: str | None = None,
              sparsity: float | None = None) -> CompressionConfig:
    """``config`` with ``layer``'s weight precision (``intN`` from ``bits``) and/or magnitude sparsity set."""
    if bits is not None:
        precision = "fp32" if bits >= 32 else f"int{bits}"
    if precision is not None:
        config = config.with_layer(layer, weight={"precision": precision})
    if sparsity is not None:
        prune = {"method": "magnitude", "sparsity": float(sparsity)} if sparsity > 0 else \
            {"method": "none", "sparsity": None}
        config = config.with_layer(layer, prune=prune)
    return config


def pin_layers(config: CompressionConfig, base: CompressionConfig,
               locked: Iterable[str] | Mapping[str, str]) -> CompressionConfig:
    """``config`` with every locked layer set exactly as ``base`` resolves it (whatever the defaults say).

    ``locked``: layer names, or layer name -> module class (needed when ``base`` has ``type:`` selectors).
    """
    kinds = locked if isinstance(locked, Mapping) else {}
    for layer in sorted(locked):
        settings = base.resolve(layer, kinds.get(layer, ""))
        config = config.with_layer(layer, weight=dataclasses.asdict(settings.weight),
                                   activation=dataclasses.asdict(settings.activation),
                                   prune=dataclasses.asdict(settings.prune), skip=settings.skip)
    return config


def layer_bits(config: CompressionConfig, layer: str, kind: str = "") -> int:
    settings = config.resolve(layer, kind)
    return 32 if settings.skip else bits_of(settings.weight.precision)


def uniform(base: CompressionConfig, bits: int, locked: Iterable[str] | Mapping[str, str] = ()) -> CompressionConfig:
    """Every unlocked layer's weights at ``intN`` (activations as in ``base``)."""
    precision = "fp32" if bits >= 32 else f"int{bits}"
    return pin_layers(base.with_defaults(weight={"precision": precision}), base, locked)


def _reference_config(base: CompressionConfig) -> CompressionConfig:
    """The fp32 configuration drops are measured against (keeps the base's model reference)."""
    return CompressionConfig(model=base.model)


# -- shared plumbing -------------------------------------------------------------------------------------------

@dataclass
class _Layers:
    """What strategies weigh layers by: weight elements (memory share) and MACs (latency share)."""

    names: tuple[str, ...]
    weights: dict[str, int]
    macs: dict[str, int]

    @classmethod
    def of(cls, session, names: Sequence[str] | None = None) -> _Layers:
        infos = {info.name: info for info in getattr(session, "layers", []) or []}
        names = tuple(names) if names is not None else tuple(session.layer_names)
        weights, macs = {}, {}
        for name in names:
            info = infos.get(name)
            shape = getattr(info, "weight_shape", ()) if info is not None else ()
            weights[name] = math.prod(shape) if shape else int(getattr(info, "params", 1) or 1)
            macs[name] = int(getattr(info, "macs", 0) or 0)
        return cls(names, weights, macs)

    def share(self, layer: str, bits_from: int, bits_to: int, weight_by: str) -> float:
        """Fraction of the model's fp32 memory (or compute-bound time) that lowering one layer saves."""
        if weight_by == "latency":
            total = sum(self.macs.values()) or 1
            return self.macs[layer] / total * (bits_from - bits_to) / max(bits_from, 1) + 1e-9
        total = sum(self.weights.values()) * 32 or 1
        return self.weights[layer] * (bits_from - bits_to) / total + 1e-9


def _check_layers(session, names: Iterable[str], what: str) -> None:
    known = set(session.layer_names)
    for name in names:
        if name not in known:
            raise SearchError(f"{what} layer {name!r} is not a compressible layer of this model")


def _kinds(session) -> dict[str, str]:
    """Layer name -> module class, for resolving ``type:`` selectors."""
    found = {info.name: info.kind for info in getattr(session, "layers", []) or []}
    return {name: found.get(name, "") for name in session.layer_names}


def locked_layers(session, base: CompressionConfig, locked: Iterable[str] = ()) -> dict[str, str]:
    """The layers a search must leave as ``base`` sets them: those named in ``locked`` and those the
    configuration itself locks (``base.locked`` selectors), as layer name -> module class."""
    locked = set(locked)
    _check_layers(session, locked, "locked")
    kinds = _kinds(session)
    return {name: kind for name, kind in kinds.items() if name in locked or base.is_locked(name, kind)}


def _default_evaluate(session) -> Evaluate:
    return lambda config: session.evaluate(config, latency="estimated")


def _sensitivity(session, report, should_stop):
    # sensitivity imports torch: deferred so that `qtradeoff sweep --help` (which reads STRATEGIES) stays instant
    from qtradeoff.core.search.sensitivity import SensitivityReport, sensitivity_iter

    if report is not None:
        return report.by_layer() if hasattr(report, "by_layer") else dict(report)
    for item in sensitivity_iter(session, should_stop=should_stop):
        if isinstance(item, SensitivityReport):
            return item.by_layer()
    return None


def _predicted(sensitivity, layer: str, bits: int) -> float:
    item = sensitivity.get(layer) if sensitivity else None
    if item is None or bits >= 32:
        return 0.0
    return max(item.drop_at_bits(bits), 0.0)


class _Budget:
    def __init__(self, budget: int | None):
        self.left = math.inf if budget is None else int(budget)

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


# -- strategies ------------------------------------------------------------------------------------------------

def grid(session, *, precisions: Sequence[str] = DEFAULT_PRECISIONS,
         sparsities: Sequence[float] = DEFAULT_SPARSITIES, base_config: CompressionConfig | None = None,
         locked: Iterable[str] = (), budget: int | None = None, evaluate: Evaluate | None = None,
         evaluate_many: EvaluateMany | None = None,
         should_stop: Callable[[], bool] = lambda: False) -> Iterator[Point]:
    """Uniform weight precisions × uniform magnitude sparsities (activations and locked layers as in the base).

    The candidates are independent: with ``evaluate_many`` they are evaluated as one batch (in parallel by a
    sweep's backend), in the same order and with the same results as one by one."""
    base = base_config if base_config is not None else CompressionConfig()
    locked = locked_layers(session, base, locked)
    evaluate = evaluate or _default_evaluate(session)
    spend = _Budget(budget)
    candidates = []
    for precision in precisions:
        for sparsity in sparsities:
            if not spend.take():
                break
            config = base.with_defaults(weight={"precision": precision})
            prune = {"method": "magnitude", "sparsity": float(sparsity)} if sparsity > 0 else {"method": "none"}
            candidates.append((pin_layers(config.with_defaults(prune=prune), base, locked), precision, sparsity))
    results = _results(candidates, evaluate, evaluate_many, should_stop)
    for step, ((config, precision, sparsity), result) in enumerate(zip(candidates, results, strict=False)):
        if result is None:
            continue  # could not be evaluated (a sweep recorded why): the grid goes on without it
        yield config, tagged(result, "grid", step, "candidate", precision=precision, sparsity=sparsity)


def _results(candidates: Sequence[tuple], evaluate: Evaluate, evaluate_many: EvaluateMany | None,
             should_stop: Callable[[], bool]) -> Iterator:
    """The Results of independent candidates (``(config, ...)`` tuples) in their order: one by one through
    ``evaluate``, or as one batch through ``evaluate_many``; stops quietly when ``should_stop()``."""
    if evaluate_many is not None:
        # the batch checks should_stop itself (nothing new starts); what was already measured is still yielded
        yield from evaluate_many([candidate[0] for candidate in candidates])
        return
    for candidate in candidates:
        if should_stop():
            return
        yield evaluate(candidate[0])


def greedy(session, *, max_drop: float = 1.0, sensitivity=None, ladder: Sequence[int] = DEFAULT_LADDER,
           weight_by: str = "memory", base_config: CompressionConfig | None = None, locked: Iterable[str] = (),
           budget: int | None = None, evaluate: Evaluate | None = None, verify: Evaluate | None = None,
           should_stop: Callable[[], bool] = lambda: False, strategy: str = "greedy") -> Iterator[Point]:
    """Mixed precision guided by sensitivity, within ``max_drop`` points of fp32.

    Starts with every unlocked layer at ``ladder[0]`` bits, then repeatedly lowers the layer whose predicted
    drop (from the sensitivity report) per share of memory (``weight_by="memory"``) or compute
    (``"latency"``) saved is lowest; a step that breaks the constraint is undone and that layer stays where it
    was. Every evaluated point is yielded (roles ``reference``, ``start``, ``accepted``, ``rejected``); the last
    yield is the smallest configuration that held, re-measured by ``verify`` (a full, non-incremental
    evaluation by default) with role ``final`` — or nothing final when even the start breaks the constraint.
    """
    if weight_by not in ("memory", "latency"):
        raise SearchError(f"weight_by must be 'memory' or 'latency', got {weight_by!r}")
    base, locked, evaluate, verify, spend, layers, free = _descent_setup(session, base_config, locked, evaluate,
                                                                          verify, budget)

    started = yield from _descent_start(session, base, locked, free, ladder, evaluate, spend, sensitivity,
                                        should_stop, strategy, lambda reference: {})
    if started is None:
        return
    reference, sensitivity, current, result = started
    step = 1
    ok = drop_points(reference, result) <= max_drop
    yield current, tagged(result, strategy, step, "start", drop=drop_points(reference, result), feasible=ok)
    if not ok:
        return
    best, best_result = current, result
    current_result = result
    level = {name: 0 for name in free}
    stuck: set[str] = set()
    while not should_stop():
        candidates = [name for name in free if name not in stuck and level[name] + 1 < len(ladder)]
        if not candidates:
            break

        layer = min(candidates, key=lambda name: _lowering_cost(name, level, ladder, sensitivity, layers, weight_by))
        if not spend.take():
            break
        step += 1
        candidate = set_layer(current, layer, bits=ladder[level[layer] + 1])
        result = evaluate(candidate)
        drop = drop_points(reference, result)
        if drop <= max_drop:
            current, current_result, level[layer] = candidate, result, level[layer] + 1
            if result.weight_bytes <= best_result.weight_bytes:
                best, best_result = candidate, result
            yield candidate, tagged(result, strategy, step, "accepted", layer=layer, drop=drop)
        else:
            stuck.add(layer)
            yield candidate, tagged(result, strategy, step, "rejected", layer=layer, drop=drop)
    if weight_by == "memory":  # pruning only pays in bytes: dense kernels run sparse weights no faster
        for config, result, role, info in _prune_descent(current, current_result, free, level, ladder, layers,
                                                         sensitivity, reference, max_drop, evaluate, spend,
                                                         should_stop):
            step += 1
            if role == "accepted":
                current = config
                if result.weight_bytes <= best_result.weight_bytes:
                    best, best_result = config, result
            yield config, tagged(result, strategy, step, role, **info)
    if should_stop():
        return
    final = verify(best)
    drop = drop_points(reference, final)
    yield best, tagged(final, strategy, step + 1, "final", drop=drop, feasible=drop <= max_drop,
                       max_drop=max_drop)


def _descent_setup(session, base_config, locked, evaluate, verify, budget) -> tuple:
    """What greedy descents share: base config, locked set (checked), evaluators, budget, layers, free layers."""
    base = base_config if base_config is not None else CompressionConfig()
    locked = locked_layers(session, base, locked)
    evaluate = evaluate or _default_evaluate(session)
    verify = verify or (lambda config: session.evaluate_full(config, latency="estimated"))
    layers = _Layers.of(session)
    free = [name for name in layers.names if name not in locked]
    return base, locked, evaluate, verify, _Budget(budget), layers, free


def _lowering_cost(name: str, level, ladder, sensitivity, layers, weight_by: str) -> tuple[float, str]:
    """Predicted extra drop of lowering ``name`` one ladder step, per share of memory (or compute) it saves."""
    here, there = ladder[level[name]], ladder[level[name] + 1]
    extra = _predicted(sensitivity, name, there) - _predicted(sensitivity, name, here)
    return (max(extra, 0.0) + _EPSILON_POINTS) / layers.share(name, here, there, weight_by), name


def _descent_start(session, base, locked, free, ladder, evaluate, spend, sensitivity, should_stop, strategy,
                   reference_tags) -> Iterator[Point]:
    """The opening descents share: yield the fp32 reference, get the sensitivity report, evaluate every free layer
    at ``ladder[0]`` bits. Returns ``(reference, sensitivity, start config, its result)``, or None when stopped."""
    if should_stop() or not spend.take():
        return None
    reference = evaluate(_reference_config(base))
    yield reference.config, tagged(reference, strategy, 0, "reference", **reference_tags(reference))
    sensitivity = _sensitivity(session, sensitivity, should_stop)
    if sensitivity is None or should_stop() or not spend.take():
        return None
    current = pin_layers(base, base, locked)
    for name in free:
        current = set_layer(current, name, bits=ladder[0])
    return reference, sensitivity, current, evaluate(current)


def _prune_descent(current, current_result, free, level, ladder, layers, sensitivity, reference, max_drop,
                   evaluate, spend, should_stop) -> Iterator[tuple]:
    """After the bit descent: raise layers' magnitude sparsity through the levels the sensitivity report tried,
    cheapest predicted drop per byte saved first. A step is kept only if the constraint holds *and* the counted
    weight bytes really shrink (sparse indices cost bits too); otherwise that layer stops there."""
    sparsities = sorted({s for name in free if sensitivity.get(name) for s in sensitivity[name].prune_drop})
    if not sparsities:
        return
    at = {name: 0.0 for name in free}
    stuck: set[str] = set()

    def saved_bits(name: str, target: float) -> float:
        # kept weights shrink by bits × Δsparsity; the first step also pays a one-bit-per-weight mask
        return layers.weights[name] * (ladder[level[name]] * (target - at[name]) - (1 if at[name] == 0 else 0))

    def next_level(name: str) -> float | None:
        """The lowest tried sparsity above the layer's current one that is predicted to save bytes at all."""
        return next((s for s in sparsities if s > at[name] and saved_bits(name, s) > 0), None)

    def cost(name: str) -> tuple[float, str]:
        target, item = next_level(name), sensitivity.get(name)
        extra = max(item.prune_drop.get(target, 0.0) - item.prune_drop.get(at[name], 0.0), 0.0) if item else 0.0
        return (extra + _EPSILON_POINTS) / saved_bits(name, target), name

    while not should_stop():
        candidates = [name for name in free if name not in stuck and next_level(name) is not None]
        if not candidates or not spend.take():
            return
        layer = min(candidates, key=cost)
        target = next_level(layer)
        candidate = set_layer(current, layer, sparsity=target)
        result = evaluate(candidate)
        drop = drop_points(reference, result)
        info = {"layer": layer, "sparsity": target, "drop": drop}
        if drop <= max_drop and result.weight_bytes < current_result.weight_bytes:
            current, current_result, at[layer] = candidate, result, target
            yield candidate, result, "accepted", info
        else:
            stuck.add(layer)
            yield candidate, result, "rejected", info


def smallest_within(session, max_drop: float, **kwargs) -> Iterator[Point]:
    """The smallest configuration (weight bytes) whose accuracy drop is at most ``max_drop`` points.

    Greedy weighted by memory; the last yield (role ``final``) is the answer. Accepts :func:`greedy`'s options.
    """
    kwargs.setdefault("weight_by", "memory")
    return greedy(session, max_drop=max_drop, strategy="smallest", **kwargs)


def most_accurate_under(session, *, max_bytes: int | None = None, max_ms: float | None = None, batch: int = 1,
                        sensitivity=None, ladder: Sequence[int] = DEFAULT_LADDER,
                        base_config: CompressionConfig | None = None, locked: Iterable[str] = (),
                        budget: int | None = None, evaluate: Evaluate | None = None,
                        verify: Evaluate | None = None, should_stop: Callable[[], bool] = lambda: False
                        ) -> Iterator[Point]:
    """The most accurate configuration with weight bytes ≤ ``max_bytes`` and/or latency ≤ ``max_ms``.

    Descends from every unlocked layer at ``ladder[0]`` bits, lowering the layer that costs the least predicted
    accuracy per share saved until the budget holds, then tries raising layers back (most sensitive first)
    while it still holds. The last yield (role ``final``, re-measured by ``verify``) is the best point within
    budget; ``feasible`` in its provenance is False when no configuration reached the budget (it is then the
    smallest one found).
    """
    if max_bytes is None and max_ms is None:
        raise SearchError("most_accurate_under needs max_bytes and/or max_ms")
    base, locked, evaluate, verify, spend, layers, free = _descent_setup(session, base_config, locked, evaluate,
                                                                          verify, budget)
    weight_by = "memory" if max_bytes is not None else "latency"
    strategy = "budget"

    def fits(result) -> bool:
        if max_bytes is not None and result.weight_bytes > max_bytes:
            return False
        if max_ms is not None:
            ms = latency_of(result, batch)
            if ms is None or ms > max_ms:
                return False
        return True

    def excess(result) -> float:
        over = 0.0
        if max_bytes is not None:
            over += max(result.weight_bytes / max_bytes - 1.0, 0.0)
        if max_ms is not None:
            ms = latency_of(result, batch)
            over += math.inf if ms is None else max(ms / max_ms - 1.0, 0.0)
        return over

    started = yield from _descent_start(session, base, locked, free, ladder, evaluate, spend, sensitivity,
                                        should_stop, strategy, lambda reference: {"fits": fits(reference)})
    if started is None:
        return
    reference, sensitivity, current, result = started
    step = 1
    yield current, tagged(result, strategy, step, "start", fits=fits(result))
    level = {name: 0 for name in free}
    feasible: list[tuple[CompressionConfig, object]] = [(current, result)] if fits(result) else []
    smallest = (current, result)

    # phase 1: descend until the budget holds
    current_result = result
    while not fits(current_result) and not should_stop():
        candidates = [name for name in free if level[name] + 1 < len(ladder)]
        if not candidates or not spend.take():
            break

        layer = min(candidates, key=lambda name: _lowering_cost(name, level, ladder, sensitivity, layers, weight_by))
        level[layer] += 1
        current = set_layer(current, layer, bits=ladder[level[layer]])
        current_result = evaluate(current)
        step += 1
        yield current, tagged(current_result, strategy, step, "descend", layer=layer, fits=fits(current_result))
        if excess(current_result) <= excess(smallest[1]):
            smallest = (current, current_result)
        if fits(current_result):
            feasible.append((current, current_result))

    # phase 2: raise layers back (most sensitive at their current width first) while the budget still holds
    if feasible:
        tried: set[str] = set()
        while not should_stop():
            raised = [name for name in free if level[name] > 0 and name not in tried]
            if not raised:
                break
            layer = max(raised, key=lambda name: (_predicted(sensitivity, name, ladder[level[name]])
                                                  - _predicted(sensitivity, name, ladder[level[name] - 1]), name))
            tried.add(layer)
            if not spend.take():
                break
            candidate = set_layer(current, layer, bits=ladder[level[layer] - 1])
            result = evaluate(candidate)
            step += 1
            ok = fits(result) and metric_of(result) >= metric_of(current_result)
            yield candidate, tagged(result, strategy, step, "raise" if ok else "rejected", layer=layer,
                                    fits=fits(result))
            if ok:
                current, current_result, level[layer] = candidate, result, level[layer] - 1
                feasible.append((candidate, result))
                tried.discard(layer)
    if should_stop():
        return
    if feasible:
        answer = max(feasible, key=lambda item: (metric_of(item[1]), -item[1].weight_bytes))[0]
    else:
        answer = smallest[0]
    final = verify(answer)
    yield answer, tagged(final, strategy, step + 1, "final", feasible=fits(final), drop=drop_points(reference, final),
                         max_bytes=max_bytes, max_ms=max_ms)


def evolutionary(session, *, seed: int = 0, budget: int | None = 50, seeds: Iterable[Point] = (),
                 objectives: Sequence[str] = ("accuracy", "memory"), ladder: Sequence[int] = DEFAULT_LADDER,
                 sparsities: Sequence[float] = DEFAULT_SPARSITIES, explore: float = 0.2,
                 base_config: CompressionConfig | None = None, locked: Iterable[str] = (),
                 evaluate: Evaluate | None = None, evaluate_many: EvaluateMany | None = None,
                 should_stop: Callable[[], bool] = lambda: False, strategy: str = "evolutionary") -> Iterator[Point]:
    """Multi-objective search: mutate per-layer bits/sparsity of frontier members, keep the non-dominated ones.

    The frontier starts from ``seeds`` (``(config, Result)`` pairs already measured, e.g. the GUI's points; not
    re-yielded), else from the fp32 and uniform ``ladder[0]`` configurations. With probability ``explore`` a
    candidate is drawn uniformly at random instead of mutated (``explore=1`` is pure random search).
    Candidates come in generations of ``GENERATION``, each drawn from the frontier before it is evaluated (with
    ``evaluate_many``, as one batch). Deterministic for a given ``seed`` and ``seeds``.
    """
    base = base_config if base_config is not None else CompressionConfig()
    locked = locked_layers(session, base, locked)
    kinds = _kinds(session)
    evaluate = evaluate or _default_evaluate(session)
    spend = _Budget(budget)
    rng = random.Random(seed)
    free = [name for name in session.layer_names if name not in locked]
    if not free:
        return
    frontier = Frontier(objectives)
    archive: dict[str, tuple[CompressionConfig, object]] = {}
    widths = [32, *ladder]

    def values(result) -> dict[str, float]:
        out = {"accuracy": metric_of(result), "memory": float(result.weight_bytes)}
        if "latency" in objectives:
            out["latency"] = latency_of(result) or 0.0
        return out

    def admit(config, result) -> None:
        archive[config.key()] = (config, result)
        frontier.add(config.key(), values(result))

    for config, result in seeds:
        if config.key() not in archive:
            admit(config, result)
    step = 0
    if not archive:
        # the fp32 seed keeps the base's locks (and locked layers as the base sets them): its mutants must too
        fp32 = pin_layers(dataclasses.replace(_reference_config(base), locked=base.locked), base, locked)
        for config in (fp32, uniform(base, ladder[0], locked)):
            if should_stop() or not spend.take():
                return
            result = evaluate(config)
            admit(config, result)
            yield config, tagged(result, strategy, step, "seed")
            step += 1

    def random_config() -> CompressionConfig:
        config = pin_layers(base, base, locked)
        for name in free:
            config = set_layer(config, name, bits=rng.choice(widths), sparsity=rng.choice(sparsities))
        return config

    def mutant(parent: CompressionConfig) -> CompressionConfig:
        child = parent
        for name in rng.sample(free, k=min(len(free), 1 + (rng.random() < 0.35))):
            if rng.random() < 0.75:
                here = layer_bits(child, name, kinds[name])
                index = widths.index(here) if here in widths else 0
                index = min(max(index + rng.choice((-1, 1)), 0), len(widths) - 1)
                child = set_layer(child, name, bits=widths[index])
            else:
                child = set_layer(child, name, sparsity=rng.choice(sparsities))
        return child

    while not should_stop():
        # A generation is drawn from the frontier as it stands, then evaluated (as one batch when a sweep runs it
        # on a backend) and admitted; its size is fixed, not the worker count, so the sequence is the same on
        # every backend and a file resumes on any of them.
        parents = sorted(frontier.members(), key=str)
        generation: list[tuple[CompressionConfig]] = []
        drawn: set[str] = set()
        while len(generation) < GENERATION:
            candidate = None
            for _ in range(32):  # a few tries at something not yet measured
                if rng.random() < explore:
                    config = random_config()
                else:
                    config = mutant(archive[rng.choice(parents)][0])
                if config.key() not in archive and config.key() not in drawn:
                    candidate = config
                    break
            if candidate is None or not spend.take():
                break
            generation.append((candidate,))
            drawn.add(candidate.key())
        for (candidate,), result in zip(generation, _results(generation, evaluate, evaluate_many, should_stop),
                                        strict=False):
            if result is not None:  # None: it could not be evaluated (a sweep recorded why)
                admit(candidate, result)
                on_front = candidate.key() in frontier.members_set()
                yield candidate, tagged(result, strategy, step, "frontier" if on_front else "candidate")
            step += 1
        if len(generation) < GENERATION:
            return  # the budget is spent, or nothing new could be drawn


def random_search(session, **kwargs) -> Iterator[Point]:
    """:func:`evolutionary` as the CLI's ``random`` strategy: frontier mutation with more random exploration."""
    kwargs.setdefault("explore", 0.35)
    return evolutionary(session, strategy="random", **kwargs)


def run(strategy: str, session, **kwargs) -> Iterator[Point]:
    """Dispatch by name (``grid``, ``greedy``, ``random``, ``evolutionary``, ``smallest``, ``budget``).

    Options that do not apply to the chosen strategy are ignored, so the CLI and the GUI can pass one set.
    """
    functions = {"grid": grid, "greedy": greedy, "random": random_search, "evolutionary": evolutionary,
                 "smallest": smallest_within, "budget": most_accurate_under}
    if strategy not in functions:
        raise SearchError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    function = functions[strategy]
    accepted = set(inspect.signature(function).parameters)
    if strategy in ("random", "smallest"):
        accepted |= set(inspect.signature(evolutionary if strategy == "random" else greedy).parameters)
        accepted.discard("strategy")
    options = {key: value for key, value in kwargs.items() if key in accepted}
    if options.get("budget", 0) is None:
        del options["budget"]  # each strategy's own default (the evolutionary search needs a finite one)
    if strategy == "smallest":
        options.setdefault("max_drop", 1.0)
        return smallest_within(session, **options)
    return function(session, **options)


def planned_evaluations(strategy: str, session, *, budget: int | None = None, precisions=DEFAULT_PRECISIONS,
                        sparsities=DEFAULT_SPARSITIES, ladder=DEFAULT_LADDER, locked: Iterable[str] = (),
                        base_config: CompressionConfig | None = None) -> int:
    """An upper bound on how many configurations ``strategy`` evaluates (for done/total progress and ETA)."""
    locked = locked_layers(session, base_config or CompressionConfig(), locked)
    free = len([name for name in session.layer_names if name not in locked])
    if strategy == "grid":
        bound = len(precisions) * len(sparsities)
    elif strategy in ("greedy", "smallest"):
        bound = 3 + free * (len(ladder) - 1)
    elif strategy == "budget":
        bound = 3 + 2 * free * (len(ladder) - 1)
    else:
        bound = budget if budget is not None else 50
    return min(bound, budget) if budget is not None else bound


def final_point(points: Iterable[Point]) -> Point | None:
    """The point a solver marked ``final`` (its answer), if any."""
    found = None
    for config, result in points:
        if role_of(result) == "final":
            found = (config, result)
    return found


# -- one stream for front ends (the GUI's Explore panel) -------------------------------------------------------

@dataclass(frozen=True)
class SearchProgress:
    """``done`` of ``total`` in ``stage`` ("sensitivity" trials or "search" evaluations)."""

    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class Found:
    """One evaluated configuration of a running search (``done`` of at most ``total`` so far)."""

    config: CompressionConfig
    result: object
    done: int
    total: int


NEEDS_SENSITIVITY = ("greedy", "smallest", "budget")


def stream(session, strategy: str, *, budget: int | None = None, should_stop: Callable[[], bool] = lambda: False,
           sensitivity=None, sensitivity_cache_dir=None, **options) -> Iterator:
    """Sensitivity (when the strategy needs it, or ``strategy == "sensitivity"``) then the search, as events.

    Yields :class:`SearchProgress`, the :class:`~qtradeoff.core.search.sensitivity.SensitivityReport` once known, and a
    :class:`Found` per evaluated configuration. Stops quietly when ``should_stop()`` becomes true.
    """
    from qtradeoff.core.search.sensitivity import SensitivityProgress, SensitivityReport, sensitivity_iter

    if strategy != "sensitivity" and strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {strategy!r}; choose one of sensitivity, {', '.join(STRATEGIES)}")
    if sensitivity is None and (strategy == "sensitivity" or strategy in NEEDS_SENSITIVITY):
        kwargs = {} if sensitivity_cache_dir is None else {"cache_dir": sensitivity_cache_dir}
        for item in sensitivity_iter(session, should_stop=should_stop, **kwargs):
            if isinstance(item, SensitivityProgress):
                yield SearchProgress(item.done, item.total, "sensitivity")
            elif isinstance(item, SensitivityReport):
                sensitivity = item
                yield item
        if sensitivity is None:  # stopped
            return
    elif sensitivity is not None:
        yield sensitivity
    if strategy == "sensitivity":
        return
    total = planned_evaluations(strategy, session, budget=budget, locked=options.get("locked", ()),
                                base_config=options.get("base_config"))
    yield SearchProgress(0, total, "search")
    done = 0
    for config, result in run(strategy, session, budget=budget, should_stop=should_stop, sensitivity=sensitivity,
                              **options):
        done += 1
        total = max(total, done)
        yield Found(config, result, done, total)
