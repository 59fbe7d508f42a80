"""Benchmark of sweep throughput on each evaluation backend, every figure measured in this run.

The same configurations go through the in-process backend, the process pool with 1 and with 2 workers, and Ray
(a local instance started here, one actor per CPU), all open at once; the figure is configurations per second
over one round, as a ratio to the in-process backend's throughput *in the same round*. Rounds are interleaved
(each round runs every backend once, in turn) and the median ratio over ``--rounds`` is printed, so machine load
hits every backend alike.

What one configuration costs: a full evaluation (``evaluate_full``: no activation cut cache, so no backend is
served whole results from memory) of digits_cnn on its 359-sample evaluation split, with estimated latency (the
roofline: nothing is timed, so parallel workers corrupt no figure). Each round draws ``--configs`` fresh random
mixed-precision configurations (per-layer weight bits 32/8/6/4/3/2, magnitude sparsity 0-75 %, int8 activations on
half), the same for every backend; the engines' per-layer weight caches warm up alike on all backends.

Start-up (spawning workers, importing torch, building each worker's engine; for Ray also starting the instance) is
measured separately as the time from opening the backend to its first result, and is *not* in the throughput
ratios: a sweep pays it once. Threads: in-process and the 1-worker pool use every core; with 2 workers (pool or
Ray) each worker runs torch on cores/2 threads. The pool keeps two jobs in flight per worker; "pool, 2w, depth 1"
is the same pool with one (as it was before), for the prefetch's gain.

Targets on 2 cores: pool of 2 workers >= 1.7x in-process; Ray >= 1.5x.

Then, in a process of its own, ``bench_first_point.py``: a torchvision resnet50 at 224x224 on 100 random samples,
the time from opening the file to the first point (load, engine, fp32 baseline) as a ratio to one plain fp32
forward over the same samples (target <= 3x); ``--no-first-point`` skips it.
Usage: .venv/bin/python benchmarks/bench_sweep.py [--rounds 3] [--configs 40] [--no-ray] [--no-first-point] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.backends import InProcess, ProcessPool, RayBackend, available_cores
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.runtime import tune_allocator
from qtradeoff.core.search import explore

WIDTHS = (32, 8, 6, 4, 3, 2)
SPARSITIES = (0.0, 0.25, 0.5, 0.75)


def random_configs(layers, count: int, seed: int) -> list[CompressionConfig]:
    """``count`` distinct mixed-precision configurations drawn with ``seed``."""
    rng = random.Random(seed)
    configs: dict[str, CompressionConfig] = {}
    while len(configs) < count:
        config = CompressionConfig()
        if rng.random() < 0.5:
            config = config.with_defaults(activation={"precision": "int8"})
        for name in layers:
            config = explore.set_layer(config, name, bits=rng.choice(WIDTHS), sparsity=rng.choice(SPARSITIES))
        configs.setdefault(config.key(), config)
    return list(configs.values())


def run_round(backend, configs) -> float:
    """Seconds to evaluate every configuration on ``backend`` (each must succeed)."""
    started = time.perf_counter()
    outcomes = list(backend.map(configs, full=True))
    elapsed = time.perf_counter() - started
    failed = [outcome.failure for outcome in outcomes if not outcome.ok]
    if failed or len(outcomes) != len(configs):
        raise SystemExit(f"{backend.name}: {len(failed)} failures ({failed[:1]}), {len(outcomes)} results")
    if len({outcome.index for outcome in outcomes}) != len(configs):
        raise SystemExit(f"{backend.name}: a configuration came back twice")
    return elapsed


def open_timed(label: str, make, layers) -> tuple[object, float]:
    """A backend and the seconds from opening it to its first result (one tiny warm-up map per worker)."""
    started = time.perf_counter()
    backend = make()
    warmup = random_configs(layers, 2 * getattr(backend, "workers", 1), seed=-1)
    first = None
    for _ in backend.map(warmup, full=True):
        first = first or time.perf_counter() - started
    print(f"  {label:<16} open -> first result {first:6.1f} s")
    return backend, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", type=int, default=40)
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--eval-size", type=int, default=None, help="evaluation samples (default: the whole split)")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray (e.g. when it is not installed)")
    parser.add_argument("--no-first-point", action="store_true", help="skip the resnet50 time to the first point")
    parser.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = parser.parse_args()
    tune_allocator()  # as the app does at start
    cores = available_cores()
    torch.set_num_threads(cores)
    spec = EngineSpec(args.model, eval_size=args.eval_size)
    print(f"torch {torch.__version__}, {cores} cores, {args.model}, {args.configs} configurations per round, "
          f"{args.rounds} rounds, full evaluations with estimated latency; load average {os.getloadavg()[0]:.1f} "
          "before (other work on the machine takes cores from the workers)")
    local = InProcess(spec)
    layers = local.engine.layer_names
    print(f"  {local.engine.eval_samples} evaluation samples, {len(layers)} layers; start-up:")
    # In-process on one thread: not a target, a reference that shows how much of a ratio comes from running
    # torch on every core beside other work on the machine (its threads then wait for each other) rather than
    # from parallel workers.
    makers = {"in-process, 1 thread": lambda: InProcess(spec, threads=1),
              "pool, 1 worker": lambda: ProcessPool(spec, 1),
              "pool, 2 workers": lambda: ProcessPool(spec, 2),
              # the pool as it was before two jobs were kept in flight per worker (not a target: the prefetch's gain)
              "pool, 2w, depth 1": lambda: ProcessPool(spec, 2, depth=1)}
    if not args.no_ray:
        makers["ray, 2 actors"] = lambda: RayBackend(spec, workers=min(2, cores))
    backends, startup = {"in-process": local}, {}
    try:
        for label, make in makers.items():
            backends[label], startup[label] = open_timed(label, make, layers)
        run_round(local, random_configs(layers, 4, seed=-2))  # warm the in-process engine like the others
        seconds: dict[str, list[float]] = {label: [] for label in backends}
        for round_index in range(args.rounds):
            configs = random_configs(layers, args.configs, seed=round_index)
            for label, backend in backends.items():
                seconds[label].append(run_round(backend, configs))
            print(f"  round {round_index + 1}: " + ", ".join(f"{label} {values[-1]:.1f} s"
                                                          for label, values in seconds.items()))
    finally:
        for backend in backends.values():
            backend.close()
    ratios = {label: statistics.median(local_s / s for local_s, s in zip(seconds["in-process"], values, strict=True))
              for label, values in seconds.items()}
    # the same against the in-process backend on one thread: what parallel workers add over one core's work,
    # without the in-process backend's own use of the second core (its torch threads)
    single = {label: statistics.median(one_s / s for one_s, s in zip(seconds["in-process, 1 thread"], values,
                                                                     strict=True))
              for label, values in seconds.items()}
    print(f"{'backend':<21}{'configs/s':>10}{'x in-process':>14}{'x 1 thread':>12}{'first result s':>16}")
    for label, values in seconds.items():
        rate = args.configs / statistics.median(values)
        first = f"{startup[label]:.1f}" if label in startup else "-"
        print(f"{label:<21}{rate:>10.2f}{ratios[label]:>14.2f}{single[label]:>12.2f}{first:>16}")
    print(f"load average {os.getloadavg()[0]:.1f} after")
    print("throughput ratios exclude start-up (median over rounds of in-process time / backend time, same configs)")
    print("targets on 2 cores: pool of 2 workers >= 1.7x in-process; Ray >= 1.5x")
    if args.json:
        print("JSON " + json.dumps({"cores": cores, "configs": args.configs, "rounds": args.rounds,
                                    "seconds": seconds, "ratios": ratios, "ratios_to_one_thread": single,
                                    "first_result_s": startup}))
    if not args.no_first_point:
        print("\nresnet50 time to the first point (benchmarks/bench_first_point.py, its own process):", flush=True)
        script = Path(__file__).with_name("bench_first_point.py")
        command = [sys.executable, str(script), "--rounds", str(args.rounds)] + (["--json"] if args.json else [])
        if subprocess.run(command, check=False).returncode != 0:
            raise SystemExit("bench_first_point.py failed")


if __name__ == "__main__":
    main()
