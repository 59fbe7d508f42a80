"""Run an exported ``torch-int8`` file with plain PyTorch: no qtradeoff import (this file imports only torch, numpy
and the standard library, so it proves the file stands alone).

    python run_torch.py MODEL_FILE INPUTS.npy OUTPUTS.npy [--threads N] [--latency-batches 1,32] [--repeats K]

Writes the model's outputs on INPUTS (float32, first dimension = samples) to OUTPUTS.npy and prints one JSON line:
``{"runtime": "torch", "version": ..., "latency_ms": {"1": {"median": .., "min": .., "max": ..}, ...}}``.
The other runners (``run_packed.py``, ``run_onnxruntime.py``) keep the same contract.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np

# Each timed repeat runs the forward enough times to last about this long (a batch-1 forward of a small model is
# ~0.1 ms: one call per repeat would time the timer).
REPEAT_SECONDS = 0.01
WARMUP = 3
CHUNK = 64  # outputs are computed in chunks of this many samples (bounded activation memory)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--latency-batches", default="1,32",
                        help="comma-separated batch sizes to time ('' or 0: no timing)")
    parser.add_argument("--repeats", type=int, default=20)
    return parser.parse_args(argv)


def batch_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip() and int(part) > 0]


def batch_of(inputs: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` samples, repeated when there are fewer."""
    reps = -(-size // len(inputs))
    return np.concatenate([inputs] * reps)[:size] if reps > 1 else inputs[:size]


def time_calls(call, repeats: int) -> dict:
    """Median, min and max milliseconds per call over ``repeats`` timed repeats, after a warm-up."""
    for _ in range(WARMUP):
        call()
    started = time.perf_counter()
    call()
    once = max(time.perf_counter() - started, 1e-7)
    inner = max(1, int(REPEAT_SECONDS / once))
    samples = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        for _ in range(inner):
            call()
        samples.append((time.perf_counter() - started) * 1000.0 / inner)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "repeats": len(samples),
            "calls_per_repeat": inner}


def load_inputs(path: str) -> np.ndarray:
    """The evaluation inputs the verifier wrote: float data as float32, integer ids (token models) in their dtype."""
    inputs = np.load(path, allow_pickle=False)
    return inputs.astype(np.float32, copy=False) if inputs.dtype.kind == "f" else inputs


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    warnings.simplefilter("ignore")  # torch's deprecation notes on quantized tensors are not the caller's output
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {"qtradeoff.json": ""}
    module = torch.jit.load(args.model, map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["qtradeoff.json"] or "{}")
    engine = meta.get("quantized_engine")
    if engine and engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine  # the int8 weights were packed for this engine's kernels
    module.eval()
    inputs = load_inputs(args.inputs)
    with torch.inference_mode():
        outputs = [module(torch.from_numpy(inputs[i:i + CHUNK])).float().numpy() for i in range(0, len(inputs), CHUNK)]
        np.save(args.outputs, np.concatenate(outputs))
        latency = {}
        for size in batch_sizes(args.latency_batches):
            batch = torch.from_numpy(np.ascontiguousarray(batch_of(inputs, size)))
            latency[str(size)] = time_calls(lambda batch=batch: module(batch), args.repeats)
    print(json.dumps({"runtime": "torch", "version": torch.__version__, "threads": torch.get_num_threads(),
                      "quantized_engine": torch.backends.quantized.engine, "latency_ms": latency}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
