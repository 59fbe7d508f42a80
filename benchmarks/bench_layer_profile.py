"""Benchmark of issue 18's per-layer latency profile: what the forward hooks cost and whether the per-layer times add
up to the whole forward, on every sample model at W8A8.

For each sample model, ``--repeats`` times in turn:
- the profile (:func:`qtradeoff.core.engine.layer_profile.profile_layers`, batch 1, 15 rounds) of W8A8: the ratio
  of the int8 forward (hooked) to the fp32 forward (hooked), and the ratio summed over the layers alone;
- the hook overhead: the fp32 model's forward with the profile's hooks against without, timed interleaved
  (:func:`qtradeoff.core.measurement.interleaved.time_interleaved` on a hooked and an unhooked copy);
- coverage: (Σ layers + glue) / hooked forward, which is 1 by construction up to rounding of medians, printed as
  a check of the attribution.
Medians over the repeats, spread = farthest repeat from the median relative to it. Nothing is asserted: the machine
is shared, so the load average is printed with the figures. Run it under ``flock /tmp/bench.lock``.
Usage: .venv/bin/python benchmarks/bench_layer_profile.py [--repeats 3] [--threads 1] [--models ...]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.engine.layer_profile import profile_layers
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement.interleaved import time_interleaved
from qtradeoff.core.measurement.latency import LatencySettings, batch_of
from qtradeoff.core.measurement.layer_times import _Clock

SAMPLES = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


def _spread(values: list[float]) -> float:
    median = statistics.median(values)
    return max(abs(v - median) for v in values) / median if median else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="*", default=list(SAMPLES))
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}; {args.threads} thread(s); batch 1; {args.repeats} repeats")
    print(f"{'model':28s} {'int8/fp32 (forward)':>20s} {'int8/fp32 (Σ layers)':>21s} {'hook overhead':>14s} "
          f"{'coverage':>9s}")
    for name in args.models:
        loaded = load_sample_model(name)
        engine = Engine(loaded, sample_data_for(loaded, eval_size=64, calib_size=128))
        forward, layers, overhead, coverage = [], [], [], []
        for _ in range(args.repeats):
            profile = list(profile_layers(engine, W8A8, threads=args.threads))[-1]
            forward.append(profile.config_total_ms / profile.fp32_total_ms)
            fp32_sum = sum(t.fp32_ms or 0 for t in profile.layers)
            config_sum = sum(t.config_ms or 0 for t in profile.layers)
            layers.append(config_sum / fp32_sum)
            coverage.append((fp32_sum + profile.fp32_glue_ms) / profile.fp32_total_ms)
            hooked = copy.deepcopy(engine.module)
            clock = _Clock(hooked, list(engine.layer_names))
            settings = LatencySettings(batch_sizes=(1,), threads=args.threads, min_run_time=0.3)
            timing = next(iter(time_interleaved({"plain": engine.module, "hooked": hooked},
                                                batch_of(engine.data.eval_inputs, 1), settings)))
            clock.close()
            overhead.append(timing.stats["hooked"].median_ms / timing.stats["plain"].median_ms)
        print(f"{name:28s} {statistics.median(forward):13.2f} ±{_spread(forward):4.0%} "
              f"{statistics.median(layers):14.2f} ±{_spread(layers):4.0%} "
              f"{statistics.median(overhead):8.2f}× ±{_spread(overhead):3.0%} {statistics.median(coverage):9.3f}")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
