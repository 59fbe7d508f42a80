"""Benchmark of the onnx export on ONNX Runtime: int8 (QDQ) / fp32 latency at batch 1 and 32, from exported files.

For each sample model, the fp32 model and its W8A8 configuration (int8 per-channel weights, int8 min-max
activations) are written with :func:`qtradeoff.core.export.onnx_format.write_onnx`, then timed interleaved on ONNX
Runtime (:func:`qtradeoff.core.measurement.ort_latency.time_interleaved`, optimization level ``all``: int8 fused
kernels). Printed per model: file sizes, the int8/fp32 median-latency ratio per batch (with the spreads), and the
test-set accuracy of the simulated model, of the file on ONNX Runtime unfused (``none``: what the file computes)
and fused (``all``: what a deployment runs). ``--json`` adds one JSON line per model.
Usage: .venv/bin/python benchmarks/bench_export_onnx.py [--rounds 15] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.export.onnx_format import onnx_export_latency
from qtradeoff.core.measurement import ort_latency

W8A8 = {"schema": "qtradeoff.config/1",
        "defaults": {"weight": {"precision": "int8", "granularity": "per_channel", "symmetric": True},
                     "activation": {"precision": "int8", "calibration": "minmax"}}}
MODELS = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")


def _accuracy(path, inputs: np.ndarray, labels: np.ndarray, optimization: str) -> float:
    session = ort_latency.session(path, optimization=optimization)
    out = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return float((out.argmax(1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    for name in MODELS:
        engine = EngineSpec(name).build()
        config = CompressionConfig.from_dict(W8A8, layer_names=engine.layer_names)
        with tempfile.TemporaryDirectory() as folder:
            figures = onnx_export_latency(engine, config, Path(folder), threads=threads, rounds=args.rounds)
            figures.pop("stats")  # LatencyStats objects; "latency" holds the same figures as plain data
            inputs, labels = engine.data.eval_inputs, engine.data.eval_labels
            with torch.no_grad():
                sim = engine.compressor.apply(config)(inputs).argmax(1)
            figures["accuracy"] = {
                "simulated": float((sim == labels).float().mean()),
                "onnx_none": _accuracy(figures["paths"]["config"], inputs.numpy(), labels.numpy(), "none"),
                "onnx_all": _accuracy(figures["paths"]["config"], inputs.numpy(), labels.numpy(), "all"),
            }
        lat = figures["latency"]
        print(f"{name}: files fp32 {figures['fp32_bytes']} B, int8 {figures['int8_bytes']} B "
              f"({figures['int8_bytes'] / figures['fp32_bytes']:.2f}x); ORT int8/fp32 latency "
              + ", ".join(f"batch {b} {v['ratio']:.2f} "
                          f"({v['config']['median_ms']:.3f}/{v['fp32']['median_ms']:.3f} ms, "
                          f"spread {v['config']['spread']:.2f}/{v['fp32']['spread']:.2f})" for b, v in lat.items())
              + "; accuracy simulated {simulated:.4f}, ORT unfused {onnx_none:.4f}, ORT fused {onnx_all:.4f}"
              .format(**figures["accuracy"]))
        if args.json:
            print(json.dumps({"model": name, "threads": threads, **figures}))


if __name__ == "__main__":
    main()
