"""Reload an exported ONNX model with ONNX Runtime alone, run it on inputs, and time it.

    python run_onnxruntime.py MODEL_FILE INPUTS.npy OUTPUTS.npy [--threads N] [--latency-batches 1,32] [--repeats K]
                              [--optimization none|basic|extended|all]

Writes the outputs on INPUTS (float32, first dimension = samples) to OUTPUTS.npy and prints one JSON line:
``{"runtime": "onnxruntime", "version": ..., "latency_ms": {"1": {"median", "min", "max"}, ...}}``.
A model exported with a fixed batch size is run in batches of that size (the last one padded). Imports only
onnxruntime, numpy and the standard library, so it shows the file needs nothing else.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def _session(path: str, threads: int | None, optimization: str = "all") -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # "all"/"extended" fuse DequantizeLinear→op→QuantizeLinear into int8 kernels (QLinearConv, QGemm), whose
    # u8s8 arithmetic can saturate on AVX2 CPUs without VNNI; "none" runs the QDQ graph node by node (dequantize +
    # float ops), i.e. exactly what the file says; "basic" also fuses float ops (Conv+Add…), changing
    # rounding.
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[optimization])
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _fixed_batch(session: ort.InferenceSession) -> int | None:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def run_batches(session: ort.InferenceSession, inputs: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Outputs of the first output on ``inputs``, in batches of the model's fixed batch size (or ``batch``)."""
    name = session.get_inputs()[0].name
    fixed = _fixed_batch(session)
    step = fixed or batch or len(inputs)
    outputs = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start:start + step]
        count = len(chunk)
        if fixed and count < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - count, axis=0)])
        outputs.append(session.run(None, {name: chunk})[0][:count])
    return np.concatenate(outputs)


def time_batch(session: ort.InferenceSession, inputs: np.ndarray, batch: int, repeats: int) -> dict:
    """Median/min/max milliseconds of one forward of ``batch`` samples (after two warm-up runs)."""
    name = session.get_inputs()[0].name
    fixed = _fixed_batch(session)
    if fixed and fixed != batch:
        return {"skipped": f"the model has a fixed batch size of {fixed}"}
    reps = -(-batch // len(inputs))
    x = np.ascontiguousarray(np.concatenate([inputs] * reps)[:batch])
    for _ in range(2):
        session.run(None, {name: x})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - started) * 1000.0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--latency-batches", default="", help="comma-separated batch sizes to time (none: no timing)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--optimization", choices=tuple(LEVELS), default="all",
                        help="ONNX Runtime graph optimization level (default all: int8 fused kernels)")
    args = parser.parse_args(argv)
    try:
        session = _session(args.model, args.threads, args.optimization)
    except Exception as error:  # noqa: BLE001 - any load failure is the export's failure
        print(f"{args.model}: ONNX Runtime cannot load it ({' '.join(str(error).split())[:300]})", file=sys.stderr)
        return 3
    inputs = np.load(args.inputs, allow_pickle=False)
    if inputs.dtype.kind == "f":  # integer ids (token models) keep their dtype
        inputs = inputs.astype(np.float32, copy=False)
    np.save(args.outputs, run_batches(session, inputs, batch=256))
    latency = {}
    for text in filter(None, args.latency_batches.split(",")):
        latency[str(int(text))] = time_batch(session, inputs, int(text), max(1, args.repeats))
    print(json.dumps({"runtime": "onnxruntime", "version": ort.__version__, "optimization": args.optimization,
                      "threads": args.threads, "latency_ms": latency}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
