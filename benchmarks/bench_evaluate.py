"""Benchmark of qtradeoff.core.engine.Engine.evaluate, every figure measured in this run.

For each sample model:
- accuracy-evaluation overhead: time of ``Engine.evaluate(config, latency="none", incremental=False)`` for a
  weight-only int8 config and a W8A8 config on one Engine (warm caches: the engine's compressor — processed weights,
  masks, calibration — the fp32 reference and the activation profile are reused, as in the GUI and sweeps) divided
  by a plain fp32 forward over the same evaluation data in the same chunks of EVAL_BATCH. ``incremental=False``: the
  same config is evaluated again and again here, so the cut cache would serve every chunk from memory and the
  ratio would no longer measure an evaluation; a full simulated forward is what the pre-engine ``measure.evaluate``
  ran and what this ratio has always measured. Runs are interleaved and the median of ``--repeats`` is used, so
  machine load hits baseline and configs alike.
- measured latency ratio int8/fp32 (real kernels: torch.ao x86 int8 vs fp32 eager) at batch 1 and ``--batch``: the
  ratio the W8A8 Result reports, its int8 model timed interleaved with the fp32 model round by round (issue 19;
  dividing the medians of two separate evaluations turned drift between them into the ratio).

Targets: <= 1.2 weight-only, <= 1.5 W8A8, int8 latency <= 0.5x fp32 on digits_cnn at batch 32.
``--json`` adds one JSON line per model with every figure (for comparing runs by script).
Usage: .venv/bin/python benchmarks/bench_evaluate.py [--repeats 15] [--batch 32] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import EVAL_BATCH, Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.latency import LatencySettings
from qtradeoff.core.runtime import tune_allocator

MODELS = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")
WEIGHT_ONLY = CompressionConfig().with_defaults(weight={"precision": "int8"})
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_model(name: str, repeats: int, batch: int, threads: int) -> dict:
    loaded = load_sample_model(name)
    data = sample_data_for(loaded)
    engine = Engine(loaded, data)
    configs = {"weight-only int8": WEIGHT_ONLY, "W8A8": W8A8}

    inputs = data.eval_inputs

    def plain():  # the same chunking evaluate uses, so the ratio measures evaluate's overhead, not batching
        with torch.inference_mode():
            for start in range(0, len(inputs), EVAL_BATCH):
                loaded.module(inputs[start:start + EVAL_BATCH])

    def accuracy_of(config):
        return lambda: engine.evaluate(config, latency="none", incremental=False)

    runs = {"fp32 forward": plain, **{label: accuracy_of(c) for label, c in configs.items()}}
    for fn in runs.values():  # warm-up: calibration, weight cache, fp32 reference, allocator
        fn()
        fn()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, fn in runs.items():
            times[label].append(_seconds(fn))
    medians = {label: statistics.median(values) for label, values in times.items()}

    settings = LatencySettings(batch_sizes=(1, batch), threads=threads, min_run_time=1.0, min_repeats=15)
    fp32 = engine.evaluate(CompressionConfig(), latency="measured", latency_settings=settings, incremental=False)
    int8 = engine.evaluate(W8A8, latency="measured", latency_settings=settings, incremental=False)
    return {
        "model": name,
        "eval_samples": len(data.eval_inputs),
        "fp32_forward_ms": medians["fp32 forward"] * 1e3,
        "weight_only_ratio": medians["weight-only int8"] / medians["fp32 forward"],
        "w8a8_ratio": medians["W8A8"] / medians["fp32 forward"],
        "latency": {b: (fp32.latency_ms(b), int8.latency_ms(b)) for b in (1, batch)},
        "ratio": {s.batch: s.fp32_ratio for s in int8.latency_measured},
        "executed": sorted(set(int8.executed_precisions.values())),
        "note": int8.measured_note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--json", action="store_true", help="also print one JSON line per model")
    args = parser.parse_args()
    tune_allocator()  # as the app does at start
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} threads, repeats {args.repeats}, eval chunks of {EVAL_BATCH}")
    header = (f"{'model':<28}{'fp32 fwd ms':>12}{'wo-int8/fp32':>14}{'W8A8/fp32':>11}"
              f"{'b1 fp32 ms':>12}{'b1 int8 ms':>12}{'b1 ratio':>10}"
              f"{f'b{args.batch} fp32 ms':>13}{f'b{args.batch} int8 ms':>13}{f'b{args.batch} ratio':>10}")
    print(header)
    for name in args.models:
        row = bench_model(name, args.repeats, args.batch, threads)
        (f1, i1), (fb, ib) = row["latency"][1], row["latency"][args.batch]
        r1, rb = (row["ratio"].get(b) or row["latency"][b][1] / row["latency"][b][0] for b in (1, args.batch))
        print(f"{name:<28}{row['fp32_forward_ms']:>12.2f}{row['weight_only_ratio']:>14.2f}{row['w8a8_ratio']:>11.2f}"
              f"{f1:>12.3f}{i1:>12.3f}{r1:>10.2f}{fb:>13.3f}{ib:>13.3f}{rb:>10.2f}")
        print(f"{'':<28}int8 run executed as {', '.join(row['executed'])}"
              + (f"; {row['note']}" if row["note"] else ""))
        if args.json:
            print("JSON " + json.dumps({
                "model": name, "fp32_forward_ms": row["fp32_forward_ms"],
                "weight_only_ratio": row["weight_only_ratio"], "w8a8_ratio": row["w8a8_ratio"],
                "b1_fp32_ms": f1, "b1_int8_ms": i1, "b1_ratio": r1,
                f"b{args.batch}_fp32_ms": fb, f"b{args.batch}_int8_ms": ib, f"b{args.batch}_ratio": rb}))
    print("targets: wo-int8/fp32 <= 1.2, W8A8/fp32 <= 1.5, digits_cnn int8/fp32 latency <= 0.5 at batch 32")


if __name__ == "__main__":
    main()
