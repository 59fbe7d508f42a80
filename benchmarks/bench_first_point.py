"""Benchmark: time to the first point on a real-size model (torchvision resnet50 at 224x224), every figure measured
in this run.

Writes ``torchvision.models.<model>(num_classes=10)`` with random weights (no download) as a state_dict file
(safetensors, or ``torch.save`` with ``--format pt``) and a tensor data file of ``--samples`` random 3x224x224
evaluation inputs with labels (plus ``--calib`` calibration inputs) to a temporary folder. Then, over ``--rounds``
interleaved rounds in this one process:

- first point = ``EngineSpec(model, data, architecture=...).load()`` + ``Engine(...)`` + the fp32 baseline
  ``engine.evaluate(CompressionConfig(), latency="estimated")``, from files to a Result, with a fresh engine;
- plain = one fp32 forward of the loaded module over the same evaluation samples, in the engine's chunks
  (``Engine.eval_chunk``: EVAL_BATCH, fewer on inputs whose activations are large), as the engine runs them.

Prints each stage's median seconds, the ratio first point / plain (target <= 3x), peak RSS (VmHWM) at the first
point and at the end, the engine's time estimate and proposed subset for a one-minute target for a W8A8 edit, and
(unless ``--no-edit``) what that edit really took in round 1, with the cut cache's bytes against its bound.
``--json`` adds one JSON line with every figure. The roofline calibration is cached on disk per machine: a first
run on a fresh machine pays it (seconds), later runs read it; the output says which happened.

Usage: flock /tmp/bench.lock .venv/bin/python benchmarks/bench_first_point.py [--rounds 3] [--samples 100]
       [--model resnet50] [--format safetensors|pt] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine, EngineSpec
from qtradeoff.core.measurement import roofline
from qtradeoff.core.runtime import tune_allocator
from qtradeoff.core.tvcompat import torchvision


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def write_files(folder: Path, model: str, fmt: str, samples: int, calib: int) -> tuple[Path, Path]:
    torch.manual_seed(0)
    module = getattr(torchvision().models, model)(num_classes=10).eval()
    state = {name: tensor.contiguous() for name, tensor in module.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        model_path = folder / f"{model}.safetensors"
        save_file(state, str(model_path))
    else:
        model_path = folder / f"{model}.pt"
        torch.save(state, model_path)
    total = samples + calib
    data_path = folder / "data.pt"
    torch.save({"inputs": torch.randn(total, 3, 224, 224), "labels": torch.randint(0, 10, (total,))}, data_path)
    return model_path, data_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100, help="evaluation samples (default 100)")
    parser.add_argument("--calib", type=int, default=32, help="calibration samples (default 32)")
    parser.add_argument("--model", default="resnet50", help="torchvision builder (default resnet50)")
    parser.add_argument("--format", choices=("safetensors", "pt"), default="safetensors")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-edit", dest="edit", action="store_false",
                        help="skip the W8A8 edit after the first point (its time against the estimate, peak RSS)")
    args = parser.parse_args()
    tune_allocator()  # as the app does
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    roofline_cached = roofline.cache_path(threads).is_file()

    with tempfile.TemporaryDirectory() as tmp:
        model_path, data_path = write_files(Path(tmp), args.model, args.format, args.samples, args.calib)
        spec = EngineSpec(str(model_path), str(data_path), architecture=f"torchvision.{args.model}",
                          eval_size=args.samples, calib_size=args.calib)
        stages: dict[str, list[float]] = {"load": [], "engine": [], "baseline": [], "first point": [], "plain": []}
        estimate = proposal = memory = None
        edit_seconds = cache_bytes = cache_limit = edit_rss = None
        for round_index in range(args.rounds):
            started = time.perf_counter()
            loaded, data = spec.load()
            loaded_at = time.perf_counter()
            engine = Engine(loaded, data)
            built_at = time.perf_counter()
            result = engine.evaluate(CompressionConfig(), latency="estimated")
            done_at = time.perf_counter()
            if round_index == 0:
                first_point_rss = peak_rss_bytes()  # VmHWM of files -> first Result, before anything else runs
            stages["load"].append(loaded_at - started)
            stages["engine"].append(built_at - loaded_at)
            stages["baseline"].append(done_at - built_at)
            stages["first point"].append(done_at - started)

            inputs, chunk = data.eval_inputs, engine.eval_chunk
            started = time.perf_counter()
            with torch.inference_mode():
                for start in range(0, len(inputs), chunk):
                    loaded.module(inputs[start:start + chunk])
            stages["plain"].append(time.perf_counter() - started)
            if round_index == 0:
                # what the engine would have told the user before an int8 edit and how big a subset fits 60 s
                w8a8 = CompressionConfig().with_defaults(weight={"precision": "int8"},
                                                         activation={"precision": "int8"})
                estimate = engine.estimate_seconds(w8a8, latency="estimated")
                proposal = engine.propose_eval_size(60.0, w8a8, latency="estimated")
                memory = engine.memory_estimate()
                if args.edit:  # and what the edit really took, with the cut cache against its bound
                    started = time.perf_counter()
                    engine.evaluate(w8a8, latency="estimated")
                    edit_seconds = time.perf_counter() - started
                    cache_bytes, cache_limit = engine.evaluator.cache.bytes, engine.evaluator.cache.max_bytes
                    edit_rss = peak_rss_bytes()
            del engine, loaded, data, result

    medians = {name: statistics.median(values) for name, values in stages.items()}
    ratio = medians["first point"] / medians["plain"]
    print(f"{args.model} 224x224, {args.samples} random samples ({args.format} state_dict), {threads} threads, "
          f"{args.rounds} interleaved rounds (medians):")
    for name in ("load", "engine", "baseline", "first point", "plain"):
        spread = ", ".join(f"{v:.2f}" for v in stages[name])
        print(f"  {name:<12} {medians[name]:7.2f} s   ({spread})")
    print(f"  time to first point / plain fp32 forward: {ratio:.2f}x  (target <= 3x); chunks of {chunk} samples")
    print(f"  peak RSS (VmHWM) at the first point of round 1: {first_point_rss / 2**30:.2f} GiB; at the end: "
          f"{peak_rss_bytes() / 2**30:.2f} GiB")
    print(f"  roofline calibration: {'read from the cache' if roofline_cached else 'measured in the first round'}")
    print(f"  estimate before a W8A8 edit (estimated latency): {estimate.describe()}")
    print(f"  proposed subset for a 60 s target (W8A8): {proposal} of {args.samples} samples")
    print(f"  memory estimate: {memory.total_bytes / 2**30:.2f} GiB (estimate)")
    if edit_seconds is not None:
        print(f"  W8A8 edit (round 1, estimated latency): {edit_seconds:.2f} s measured vs {estimate.seconds:.2f} s "
              f"estimated; cut cache {cache_bytes / 2**20:.0f} MiB of its {cache_limit / 2**20:.0f} MiB bound; "
              f"peak RSS after it {edit_rss / 2**30:.2f} GiB")
    if args.json:
        print(json.dumps({"model": args.model, "samples": args.samples, "threads": threads, "rounds": args.rounds,
                          "chunk": chunk,
                          "seconds": medians, "ratio": ratio, "peak_rss_bytes": peak_rss_bytes(),
                          "first_point_rss_bytes": first_point_rss,
                          "roofline_cached": roofline_cached, "w8a8_estimate": estimate.to_dict(),
                          "proposed_eval_size_60s": proposal, "memory_estimate": memory.to_dict(),
                          "w8a8_edit_seconds": edit_seconds, "cut_cache_bytes": cache_bytes,
                          "cut_cache_limit": cache_limit, "peak_rss_after_edit_bytes": edit_rss}))


if __name__ == "__main__":
    main()
