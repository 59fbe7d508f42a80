"""Run an exported ``packed`` file: rebuilt by qtradeoff's loader (:func:`qtradeoff.core.export.packed.load_packed`)
in a fresh process, then timed like every runner.

    python run_packed.py MODEL_FILE INPUTS.npy OUTPUTS.npy [--threads N] [--latency-batches 1,32] [--repeats K]

Same contract as ``run_torch.py`` (whose argument parsing and timing it reuses); the JSON line says
``"runtime": "packed"``. The rebuilt model is a float model (dequantized weights, simulated activation grids):
its latency is that of fp32 eager plus the casts, not of integer kernels.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_torch  # noqa: E402 - the sibling runner, found through the path set just above


def main(argv=None) -> int:
    args = run_torch.parse_args(argv)
    import torch

    from qtradeoff.core.export.packed import load_packed

    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    module = load_packed(args.model)
    inputs = run_torch.load_inputs(args.inputs)
    chunk = run_torch.CHUNK
    with torch.inference_mode():
        outputs = [module(torch.from_numpy(inputs[i:i + chunk])).float().numpy() for i in range(0, len(inputs), chunk)]
        np.save(args.outputs, np.concatenate(outputs))
        latency = {}
        for size in run_torch.batch_sizes(args.latency_batches):
            batch = torch.from_numpy(np.ascontiguousarray(run_torch.batch_of(inputs, size)))
            latency[str(size)] = run_torch.time_calls(lambda batch=batch: module(batch), args.repeats)
    print(json.dumps({"runtime": "packed", "version": torch.__version__, "threads": torch.get_num_threads(),
                      "latency_ms": latency}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
