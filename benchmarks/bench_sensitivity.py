"""Sensitivity analysis of digits_cnn: incremental evaluation vs naive full re-evaluation, measured in one run.

Every approach analyses the same 56 configurations (7 layers × bits 8/6/4/3/2 × sparsities 0.25/0.5/0.75) on the
whole test split, each with its own fresh Compressor (so weight caches start equally cold), and must produce the
same drops. The approaches run interleaved, ``--repeats`` times, and the median time of each is reported.

- incremental: ``sensitivity.analyze`` through the cut cache (only the layers from the changed one on re-run);
- naive forward: for every configuration, the full simulated model's forward + top-1 accuracy;
- naive evaluate: for every configuration, ``measure.evaluate(..., latency="none")`` — the tool's full
  re-evaluation path (accuracy, fidelity, exact memory), what a sweep without incremental evaluation pays;
- naive from scratch: for every configuration, ``compress(base, config, calib)`` then the forward — nothing
  reused between configurations (no per-layer weight cache either).

Times are process CPU seconds (robust to other work on a shared machine) with wall seconds beside them; one
torch thread by default so that CPU time is the work done.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from qtradeoff.core.compress import Compressor, compress  # noqa: E402
from qtradeoff.core.config import CompressionConfig  # noqa: E402
from qtradeoff.core.incremental import IncrementalSession  # noqa: E402
from qtradeoff.core.measure import clear_caches, evaluate  # noqa: E402
from qtradeoff.core.model_io import load_sample_model, sample_data_for  # noqa: E402
from qtradeoff.core.sensitivity import SensitivitySettings, analyze, pruned_layer, quantized_layer  # noqa: E402


def trials(layers, settings):
    for layer in layers:
        for bits in settings.bits:
            yield layer, "bits", bits, quantized_layer(CompressionConfig(), layer, bits, settings)
        for sparsity in settings.sparsities:
            yield layer, "sparsity", sparsity, pruned_layer(CompressionConfig(), layer, sparsity)


class Clock:
    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


def run_incremental(loaded, data, settings):
    with Clock() as clock:
        session = IncrementalSession(loaded, data, compressor=Compressor(loaded.module, data.calib_inputs))
        report = analyze(session, settings=settings, use_cache=False)
    seconds = clock
    drops = {(item.layer, "bits", b): d for item in report.layers for b, d in item.quant_drop.items()}
    drops.update({(item.layer, "sparsity", s): d for item in report.layers for s, d in item.prune_drop.items()})
    return seconds, drops, session.evaluator.fraction_recomputed


def _accuracy(module, data):
    with torch.no_grad():
        logits = module(data.eval_inputs)
    return int((logits.argmax(1) == data.eval_labels).sum()) / len(data.eval_labels)


def run_naive_forward(loaded, data, settings, layers):
    with Clock() as clock:
        compressor = Compressor(loaded.module, data.calib_inputs)
        base = _accuracy(compressor.apply(CompressionConfig()), data)
        drops = {(layer, kind, value): 100.0 * (base - _accuracy(compressor.apply(config), data))
                 for layer, kind, value, config in trials(layers, settings)}
    return clock, drops


def run_naive_scratch(loaded, data, settings, layers):
    with Clock() as clock:
        base = _accuracy(compress(loaded.module, CompressionConfig(), data.calib_inputs), data)
        drops = {(layer, kind, value): 100.0 * (base - _accuracy(compress(loaded.module, config, data.calib_inputs),
                                                                  data))
                 for layer, kind, value, config in trials(layers, settings)}
    return clock, drops


def run_naive_evaluate(loaded, data, settings, layers):
    clear_caches()
    with Clock() as clock:
        compressor = Compressor(loaded.module, data.calib_inputs)

        def accuracy(config):
            return evaluate(loaded, data, config, latency="none", compressor=compressor).accuracy

        base = accuracy(CompressionConfig())
        drops = {(layer, kind, value): 100.0 * (base - accuracy(config))
                 for layer, kind, value, config in trials(layers, settings)}
    return clock, drops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_sample_model("digits_cnn")
    data = sample_data_for(loaded)
    settings = SensitivitySettings()
    layers = Compressor(loaded.module, data.calib_inputs).layer_names
    n_configs = len(layers) * (len(settings.bits) + len(settings.sparsities))
    run_incremental(loaded, data, settings)  # warm-up: imports, allocator, kernels

    names = ("incremental", "naive forward", "naive evaluate", "naive from scratch")
    clocks = {name: [] for name in names}
    fraction = 1.0
    for _ in range(args.repeats):
        clock, reference, fraction = run_incremental(loaded, data, settings)
        clocks["incremental"].append(clock)
        for name, function in (("naive forward", run_naive_forward), ("naive evaluate", run_naive_evaluate),
                               ("naive from scratch", run_naive_scratch)):
            clock, drops = function(loaded, data, settings, layers)
            clocks[name].append(clock)
            for key, drop in reference.items():  # the speed-up must not change a single number
                if abs(drop - drops[key]) > 1e-9:
                    print(f"MISMATCH ({name}) at {key}: incremental {drop} vs {drops[key]}")
                    return 1

    cpu = {name: statistics.median(c.cpu for c in clocks[name]) for name in names}
    wall = {name: statistics.median(c.wall for c in clocks[name]) for name in names}
    print(f"sensitivity analysis of digits_cnn: {n_configs} configurations + fp32, {len(data.eval_inputs)} eval "
          f"samples, {torch.get_num_threads()} thread(s), median of {args.repeats}; identical drops in all runs")
    for name in names:
        print(f"  {name:19s} cpu {cpu[name]:7.3f} s   wall {wall[name]:7.3f} s   "
              f"speed-up (cpu) {cpu[name] / cpu['incremental']:5.2f}x")
    print(f"  graph nodes re-run by incremental evaluation: {100 * fraction:.0f}% of what full evaluations run")
    for name in names[1:]:
        print(f"incremental vs {name}: {cpu[name] / cpu['incremental']:.2f}x (cpu), "
              f"{wall[name] / wall['incremental']:.2f}x (wall)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
