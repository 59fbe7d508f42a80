"""Sensitivity analysis of digits_cnn: incremental evaluation vs naive full re-evaluation, measured in one run.

Every approach analyses the same 56 configurations (7 layers × bits 8/6/4/3/2 × sparsities 0.25/0.5/0.75, plus
fp32) on the whole test split, builds its own Compressor inside the timed region, and must produce exactly the
same accuracy drops (checked). Each measurement runs in a fresh child process, after one untimed warm-up run of
the same approach in that process: CPU allocator state left by one approach changes the next one's time by up to
2x on this machine, so sharing a process would measure the order, not the method. Approaches alternate over
``--repeats`` rounds; medians are reported.

- incremental: ``sensitivity.analyze`` on an :class:`~qtradeoff.core.engine.engine.Engine` through the cut cache
  (only the graph from the changed layer on re-runs), one layer's trials stacked along the batch through the
  graph after that layer (``Engine.score_variants``);
- naive forward: for every configuration, the simulated model's full forward + top-1 accuracy (``Compressor.apply``
  builds a new simulated module per configuration);
- naive evaluate: for every configuration, ``Engine.evaluate_full(config, latency="none")`` on one fresh Engine per
  analysis — the tool's full re-evaluation path (accuracy, fidelity, exact memory) with the cut cache *off*, what a
  sweep without incremental evaluation pays. (``Engine.evaluate`` now defaults to the cut cache; the pre-engine
  ``measure.evaluate`` after ``clear_caches()`` ran every configuration in full, so ``evaluate_full`` keeps the
  meaning of this line.)
- incremental, pool of 2: ``analyze(..., backend=pool)`` with a process pool of 2 workers (one torch thread
  each, whatever ``--threads`` says): the base configuration and each layer's trials (cut in one part per worker)
  as jobs, each part running through ``score_variants`` on the worker's engine. The pool is opened and started
  (``wait_ready``: spawn, imports, engine build) before the timed region — a sweep or the GUI pays that once —
  and, like every approach, runs one untimed warm-up analysis first; then each worker rebuilds its engine
  (:class:`_Rebuild`), so the timed analysis starts warm but with no cache from the earlier one, as the
  in-process approaches do with their fresh Engine. Its CPU is in the workers, so only its wall time is compared
  (against the other approaches' wall time; with ``--threads 1`` they use one core, the pool two, so run
  ``--threads 2`` too for the comparison at equal cores);
- incremental, per trial: ``analyze`` through the cut cache with each trial run on its own (``Engine.score``), as
  before one layer's trials shared their downstream run (``Engine.score_variants``): separates that gain;
- executor, no cache: ``analyze`` with the cut cache disabled (``cache_bytes=0``) — every configuration runs in full
  through the incremental evaluator's own executor, which separates the cache's gain from the executor's.

The table ends with the batched trials' gain over one trial at a time, the arithmetic ceiling of exact
incremental evaluation (the layers' MACs: each trial re-runs its layer and every later one; batching changes
module calls, not MACs, so on one core where convolutions dominate caching and batching together stay below it)
and whether the issue's >= 3x target against naive evaluate is reached by the best approach (wall time).

``--json`` prints one JSON line with every median and ratio (for comparing runs by script).

Times are process CPU seconds (robust to other work on a shared machine), wall seconds beside them; one torch
thread by default so that CPU time is the work done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APPROACHES = ("incremental", "naive forward", "naive evaluate", "executor, no cache", "incremental, per trial",
              "incremental, pool of 2")
POOL = "incremental, pool of 2"


def _trials(layers, settings):
    from qtradeoff.core.config import CompressionConfig
    from qtradeoff.core.search.sensitivity import pruned_layer, quantized_layer

    for layer in layers:
        for bits in settings.bits:
            yield f"{layer}/bits/{bits}", quantized_layer(CompressionConfig(), layer, bits, settings)
        for sparsity in settings.sparsities:
            yield f"{layer}/sparsity/{sparsity}", pruned_layer(CompressionConfig(), layer, sparsity)


def _report_drops(report) -> dict[str, float]:
    drops = {f"{item.layer}/bits/{b}": d for item in report.layers for b, d in item.quant_drop.items()}
    drops.update({f"{item.layer}/sparsity/{s}": d for item in report.layers for s, d in item.prune_drop.items()})
    return drops


class _PerTrial:
    """An Engine without ``score_variants``: the sensitivity analysis then scores each trial on its own."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        if name == "score_variants":
            raise AttributeError(name)
        return getattr(self._engine, name)


_POOL_WALL: list[float] = []  # the pool approach's timed region (without opening and closing the pool)


class _Rebuild:
    """A pool job: the worker's engine starts over (every cache dropped: cut values, compressor, reference), as
    a fresh Engine would, in the warm process."""

    config = None

    def run(self, engine) -> None:
        engine.__init__(engine.loaded, engine.data, cache_bytes=engine.evaluator.cache.max_bytes)


def _analysis(approach: str, loaded, data, settings, pool=None) -> dict[str, float]:
    """One whole sensitivity analysis by ``approach``; returns the drop of every configuration (points)."""
    import torch

    from qtradeoff.core.compression.compress import Compressor
    from qtradeoff.core.config import CompressionConfig
    from qtradeoff.core.engine.engine import Engine
    from qtradeoff.core.search.sensitivity import analyze

    if approach == POOL:
        for _ in pool.run(iter([_Rebuild() for _ in range(pool.workers)]), depth=1):  # one per worker
            pass
        started = time.perf_counter()
        session = Engine(loaded, data, compressor=Compressor(loaded.module, data.calib_inputs))
        drops = _report_drops(analyze(session, settings=settings, use_cache=False, backend=pool))
        _POOL_WALL.append(time.perf_counter() - started)
        return drops
    compressor = Compressor(loaded.module, data.calib_inputs)
    if approach in ("incremental", "executor, no cache", "incremental, per trial"):
        cache = 0 if approach == "executor, no cache" else 512 * 1024 * 1024
        session = Engine(loaded, data, compressor=compressor, cache_bytes=cache)
        if approach != "incremental":
            session = _PerTrial(session)
        return _report_drops(analyze(session, settings=settings, use_cache=False))
    if approach == "naive forward":
        def accuracy(config):
            with torch.inference_mode():  # as measure runs it: the cheapest plain forward
                logits = compressor.apply(config)(data.eval_inputs)
            return int((logits.argmax(1) == data.eval_labels).sum()) / len(data.eval_labels)
    else:
        engine = Engine(loaded, data, compressor=compressor)  # fresh: no reference, profile or cut cache yet

        def accuracy(config):
            return engine.evaluate_full(config, latency="none").accuracy

    base = accuracy(CompressionConfig())
    return {name: 100.0 * (base - accuracy(config)) for name, config in _trials(compressor.layer_names, settings)}


def _mac_ceiling() -> tuple[float, int]:
    """How much less arithmetic exact incremental evaluation does than naive re-evaluation on digits_cnn: the
    layers' MACs, each trial re-running its layer and every later one (layers in execution order, as on this
    sequential model), against every configuration running them all. Batching the trials of a layer changes
    calls, not MACs, so this bounds what caching and batching can give on one core where convolutions' arithmetic
    dominates; returns (ratio, trials per layer)."""
    from qtradeoff.core.engine.engine import Engine
    from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
    from qtradeoff.core.search.sensitivity import SensitivitySettings

    loaded = load_sample_model("digits_cnn")
    macs = [int(info.macs) for info in Engine(loaded, sample_data_for(loaded)).layers]
    settings = SensitivitySettings()
    per_layer = len(settings.bits) + len(settings.sparsities)
    incremental = sum(macs) + per_layer * sum(sum(macs[k:]) for k in range(len(macs)))
    naive = (1 + per_layer * len(macs)) * sum(macs)
    return naive / incremental, per_layer


def _worker(approach: str, threads: int) -> None:
    from qtradeoff.core.runtime import tune_allocator

    tune_allocator()  # as the app does at start
    import torch

    torch.set_num_threads(threads)
    from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
    from qtradeoff.core.search.sensitivity import SensitivitySettings

    loaded = load_sample_model("digits_cnn")
    data = sample_data_for(loaded)
    settings = SensitivitySettings()
    with contextlib.ExitStack() as stack:
        pool = None
        if approach == POOL:
            from qtradeoff.core.engine.backends import ProcessPool
            from qtradeoff.core.engine.engine import EngineSpec

            pool = stack.enter_context(ProcessPool(EngineSpec("digits_cnn"), 2, threads=1))
            pool.wait_ready()
        _analysis(approach, loaded, data, settings, pool)  # warm-up: imports, kernels, caches of torch itself
        cpu, wall = time.process_time(), time.perf_counter()
        drops = _analysis(approach, loaded, data, settings, pool)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if approach == POOL:
        wall = _POOL_WALL[-1]
    print(json.dumps({"cpu": cpu, "wall": wall, "drops": drops, "samples": len(data.eval_inputs),
                      "threads": torch.get_num_threads()}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.threads)
        return 0

    runs: dict[str, list[dict]] = {name: [] for name in APPROACHES}
    for round_ in range(args.repeats):
        order = APPROACHES if round_ % 2 == 0 else tuple(reversed(APPROACHES))
        for approach in order:
            child = subprocess.run([sys.executable, __file__, "--worker", approach, "--threads", str(args.threads)],
                                   capture_output=True, text=True, cwd=ROOT, check=False)
            if child.returncode != 0:
                print(f"{approach} failed:\n{child.stderr}", file=sys.stderr)
                return 1
            runs[approach].append(json.loads(child.stdout.strip().splitlines()[-1]))

    reference = runs["incremental"][0]["drops"]
    for approach, measured in runs.items():  # the speed-up must not change a single number
        for run in measured:
            wrong = [k for k, v in reference.items() if abs(run["drops"].get(k, float("nan")) - v) > 1e-9]
            if wrong or len(run["drops"]) != len(reference):
                print(f"MISMATCH: {approach} gives other drops than incremental evaluation at {wrong[:3]}")
                return 1

    cpu = {name: statistics.median(r["cpu"] for r in runs[name]) for name in APPROACHES}
    wall = {name: statistics.median(r["wall"] for r in runs[name]) for name in APPROACHES}
    first = runs["incremental"][0]
    print(f"sensitivity analysis of digits_cnn: {len(reference)} configurations + fp32, {first['samples']} eval "
          f"samples, {first['threads']} thread(s), each run in a fresh process, median of {args.repeats}; "
          "identical drops in every run")
    for name in APPROACHES:
        print(f"  {name:19s} cpu {cpu[name]:7.3f} s   wall {wall[name]:7.3f} s   "
              f"(cpu runs: {', '.join(format(r['cpu'], '.2f') for r in runs[name])})")
    for name in APPROACHES[1:]:
        if name == POOL:
            continue
        print(f"incremental vs {name}: {cpu[name] / cpu['incremental']:.2f}x faster (cpu), "
              f"{wall[name] / wall['incremental']:.2f}x (wall)")
    for name in ("naive evaluate", "naive forward", "incremental"):
        print(f"{POOL} vs {name} ({first['threads']} thread(s)): {wall[name] / wall[POOL]:.2f}x faster (wall; the "
              "pool's CPU is in its workers)")
    ceiling, per_layer = _mac_ceiling()
    print(f"batched trials (incremental) vs one trial at a time (incremental, per trial): "
          f"{cpu['incremental, per trial'] / cpu['incremental']:.2f}x (cpu), "
          f"{wall['incremental, per trial'] / wall['incremental']:.2f}x (wall)")
    print(f"arithmetic ceiling of exact incremental evaluation on one core (layer MACs, {per_layer} trials per layer "
          f"re-run from their layer on): {ceiling:.2f}x fewer MACs than naive re-evaluation")
    best = max(("incremental", "incremental, per trial", POOL), key=lambda name: wall["naive evaluate"] / wall[name])
    reached = wall["naive evaluate"] / wall[best]
    print(f"target >= 3x vs naive evaluate: {'reached' if reached >= 3.0 else 'NOT reached'} "
          f"(best: {best}, {reached:.2f}x wall)")
    if args.json:
        print("JSON " + json.dumps({"mac_ceiling": ceiling,
            "cpu": cpu, "wall": wall, "cpu_runs": {name: [r["cpu"] for r in runs[name]] for name in APPROACHES},
            "speedup_cpu": {name: cpu[name] / cpu["incremental"] for name in APPROACHES[1:]},
            "speedup_wall": {name: wall[name] / wall["incremental"] for name in APPROACHES[1:]},
            "pool_speedup_wall": {name: wall[name] / wall[POOL] for name in APPROACHES if name != POOL}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
