"""A peer's post-training rounding run on the sample models, for bench_algorithms' ``--peer-json`` (issue 17).

Runs in a separate virtual environment holding the peer (its pins must not reach the project's venv) and imports
qtradeoff from the repository through ``sys.path`` only to load the same sample model and the same digits splits
(179 calibration images, 359 test images) that bench_algorithms uses. Writes a JSON list of rows
{peer, model, bits, activation, algorithm, accuracy, seconds, config}.

Peer: Sony MCT (``model-compression-toolkit``), PyTorch facade. Its target platform is built from MCT's own IMX500
v1 operator sets with every conv / depthwise conv / linear kernel at ``bits`` (symmetric, per output channel,
MSE-chosen thresholds) and activations int8 (MCT's power-of-two thresholds, MSE-chosen) or not quantized (``fp32``).
Algorithms: ``ptq`` (MCT's post-training quantization: batch-norm folding, shift-negative correction and its weight
bias correction, on by default) and ``gptq`` (MCT's gradient-based PTQ: learned rounding with Hessian-weighted
sample-layer-attention loss, ``--epochs`` passes over the calibration set).

Setup (once): python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install torch==2.13.0 torchvision==0.28.0
    model-compression-toolkit==2.6.1 safetensors (digits_cnn's sample is a safetensors file)
MCT GPTQ on mobilenet_v3_small_digits took 4.5-5.6 min per configuration on a quiet machine; on a loaded one
(2026-12-04) it had not finished after 11 min: run it alone.
Usage: flock /tmp/bench.lock /tmp/peer-venv/bin/python benchmarks/peer_algorithms.py --models digits_cnn
       --bits 4,3,2 --activations int8,fp32 --algorithms ptq,gptq --epochs 5 --json /tmp/peer.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from qtradeoff.core import tvcompat  # noqa: E402
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for  # noqa: E402

# The registry's torchvision wheel is a CUDA build whose C++ ops do not load against the CPU torch; peers import
# torchvision, so declare its missing op schemas first, as the project does.
tvcompat.torchvision()


def mct_platform(bits: int, activation: str):
    """MCT's IMX500 v1 operator sets with every kernel at ``bits`` (per channel) and int8 or unquantized acts."""
    from model_compression_toolkit.target_platform_capabilities.constants import KERNEL_ATTR, WEIGHTS_N_BITS
    from model_compression_toolkit.target_platform_capabilities.tpc_models.imx500_tpc.v1_0 import tpc as imx500

    linear, _, default = imx500.get_op_quantization_configs()
    quantize_acts = activation != "fp32"
    linear = linear.clone_and_edit(attr_to_edit={KERNEL_ATTR: {WEIGHTS_N_BITS: bits}},
                                   enable_activation_quantization=quantize_acts)
    default = default.clone_and_edit(enable_activation_quantization=quantize_acts)
    return imx500.generate_tpc(default_config=default, base_config=linear, mixed_precision_cfg_list=[linear],
                               name=f"qtradeoff_w{bits}_{activation}")


def run_mct(module, calib: torch.Tensor, bits: int, activation: str, algorithm: str, epochs: int,
            batch: int) -> torch.nn.Module:
    import model_compression_toolkit as mct

    def representative():
        for start in range(0, len(calib), batch):
            yield [calib[start:start + batch]]

    platform = mct_platform(bits, activation)
    if algorithm == "ptq":
        quantized, _ = mct.ptq.pytorch_post_training_quantization(module, representative,
                                                                  target_platform_capabilities=platform)
    else:
        gptq = mct.gptq.get_pytorch_gptq_config(n_epochs=epochs)
        quantized, _ = mct.gptq.pytorch_gradient_post_training_quantization(
            module, representative, gptq_config=gptq, target_platform_capabilities=platform)
    return quantized


def accuracy(module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    module.eval()
    with torch.no_grad():
        outputs = torch.cat([module(inputs[start:start + 64]) for start in range(0, len(inputs), 64)])
    return float((outputs.argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["digits_cnn"])
    parser.add_argument("--bits", default="4", help="weight bit widths, comma-separated")
    parser.add_argument("--activations", default="int8", help="int8 and/or fp32, comma-separated")
    parser.add_argument("--algorithms", default="ptq,gptq")
    parser.add_argument("--epochs", type=int, default=5, help="GPTQ passes over the calibration set")
    parser.add_argument("--batch", type=int, default=32, help="calibration batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", required=True, help="append the rows to this JSON list (created if missing)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    logging.getLogger("Model Compression Toolkit").setLevel(logging.ERROR)
    import model_compression_toolkit as mct

    out = Path(args.json)
    rows = json.loads(out.read_text()) if out.exists() else []
    for name in args.models:
        loaded = load_sample_model(name)
        data = sample_data_for(loaded)
        fp32 = accuracy(loaded.module, data.eval_inputs, data.eval_labels)
        print(f"{name}: fp32 {fp32:.2%} on {len(data.eval_labels)} test samples", flush=True)
        for bits in (int(b) for b in args.bits.split(",")):
            for activation in args.activations.split(","):
                for algorithm in args.algorithms.split(","):
                    with open("/proc/loadavg") as handle:
                        load = handle.read().split()[0]
                    start = time.perf_counter()
                    try:
                        quantized = run_mct(loaded.module, data.calib_inputs, bits, activation, algorithm,
                                            args.epochs, args.batch)
                    except Exception as error:  # a peer's refusal is a finding: record it
                        print(f"  {name} int{bits} {activation} {algorithm}: FAILED {type(error).__name__}: "
                              f"{error}", flush=True)
                        rows.append({"peer": f"Sony MCT {mct.__version__} {algorithm.upper()}", "model": name,
                                     "bits": bits, "activation": activation, "algorithm": algorithm,
                                     "error": f"{type(error).__name__}: {error}"})
                        out.write_text(json.dumps(rows, indent=1))
                        continue
                    seconds = time.perf_counter() - start
                    acc = accuracy(quantized, data.eval_inputs, data.eval_labels)
                    print(f"  {name} int{bits} {activation} {algorithm}: {acc:.2%} in {seconds:.1f} s "
                          f"(load {load})", flush=True)
                    config = {"weights": f"int{bits} symmetric per-channel, MSE thresholds",
                              "activations": "int8 power-of-two, MSE" if activation != "fp32" else "fp32",
                              "calibration": f"{len(data.calib_inputs)} images, batch {args.batch}"}
                    if algorithm == "gptq":
                        config["epochs"] = args.epochs
                    rows.append({"peer": f"Sony MCT {mct.__version__} {algorithm.upper()}", "model": name,
                                 "bits": bits, "activation": activation, "algorithm": algorithm,
                                 "accuracy": acc, "seconds": seconds, "load": load, "config": config})
                    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
