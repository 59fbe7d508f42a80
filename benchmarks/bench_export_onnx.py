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
from qtradeoff.core.export.onnx_format import write_onnx
from qtradeoff.core.measurement import ort_latency

W8A8 = {"schema": "qtradeoff.config/1",
        "defaults": {"weight": {"precision": "int8", "granularity": "per_channel", "symmetric": True},
                     "activation": {"precision": "int8", "calibration": "minmax"}}}
FP32 = {"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "fp32"}}}
MODELS = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")


def onnx_export_latency(engine, config, folder: Path, *, batches=(1, 32), threads=None, rounds=15) -> dict:
    """Write fp32 and ``config`` as ONNX in ``folder``, time both interleaved on ONNX Runtime; plain-data figures."""
    fp32 = write_onnx(engine.compressor, engine.plan(CompressionConfig.from_dict(FP32, layer_names=engine.layer_names)),
                      engine.data.eval_inputs[:1], folder / "fp32.onnx")
    q = write_onnx(engine.compressor, engine.plan(config), engine.data.eval_inputs[:1], folder / "int8.onnx")
    stats = ort_latency.time_interleaved({"fp32": fp32.path, "int8": q.path}, engine.data.eval_inputs[:64].numpy(),
                                         batches=batches, threads=threads, rounds=rounds)
    return {"fp32_bytes": fp32.file_bytes, "int8_bytes": q.file_bytes,
            "latency": {str(b): {"fp32": stats["fp32"][b].to_dict(), "int8": stats["int8"][b].to_dict(),
                                 "ratio": stats["int8"][b].median_ms / stats["fp32"][b].median_ms} for b in batches},
            "paths": {"fp32": str(fp32.path), "int8": str(q.path)}}


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
            inputs, labels = engine.data.eval_inputs, engine.data.eval_labels
            with torch.no_grad():
                sim = engine.compressor.apply(config)(inputs).argmax(1)
            figures["accuracy"] = {
                "simulated": float((sim == labels).float().mean()),
                "onnx_none": _accuracy(figures["paths"]["int8"], inputs.numpy(), labels.numpy(), "none"),
                "onnx_all": _accuracy(figures["paths"]["int8"], inputs.numpy(), labels.numpy(), "all"),
            }
        lat = figures["latency"]
        print(f"{name}: files fp32 {figures['fp32_bytes']} B, int8 {figures['int8_bytes']} B "
              f"({figures['int8_bytes'] / figures['fp32_bytes']:.2f}x); ORT int8/fp32 latency "
              + ", ".join(f"batch {b} {v['ratio']:.2f} ({v['int8']['median_ms']:.3f}/{v['fp32']['median_ms']:.3f} ms, "
                          f"spread {v['int8']['spread']:.2f}/{v['fp32']['spread']:.2f})" for b, v in lat.items())
              + "; accuracy simulated {simulated:.4f}, ORT unfused {onnx_none:.4f}, ORT fused {onnx_all:.4f}"
              .format(**figures["accuracy"]))
        if args.json:
            print(json.dumps({"model": name, "threads": threads, **figures}))


if __name__ == "__main__":
    main()
