"""Benchmark of the exported files: int8 / fp32 latency per runtime at batch 1 and 32, every figure measured in
this run, from the files themselves (each timing is a fresh runner process: ``qtradeoff/core/export/runners``).

For each sample model: the fp32 base saved the way ``torch-int8`` saves (frozen TorchScript, same runner) and the
W8A8 ``torch-int8`` export; ``--rounds`` rounds alternate fp32 and int8 runs (machine load hits both alike), and
the ratio is the median over rounds of int8 median / fp32 median. The export's own verification is skipped here
(``apply`` does it); the accuracy of each int8 file on the sample test set is printed beside its ratio.

ONNX Runtime and OpenVINO rows (where installed: the ``[onnx]`` / ``[openvino]`` extras): the fp32 model and the
W8A8 configuration written as ONNX (QDQ), timed in alternating blocks on each runtime in this process
(:func:`qtradeoff.core.export.onnx_format.onnx_export_latency`; ONNX Runtime at optimization level ``all``, what a
deployment runs), and the accuracy each runtime reaches on the file (ONNX Runtime also unfused, level ``none``:
what the file computes).
Measured 2026-12-02 (AMD EPYC, AVX2 without VNNI, --threads 1 on a shared loaded machine, 3 rounds): int8/fp32
at batch 1 / 32: digits_cnn 0.40x / 0.45x, digits_mlp 0.59x / 0.48x, mobilenet_v3_small_digits 0.17x / 0.07x. The
int8 files of digits_cnn and mobilenet here score 88.58 % / 92.76 % against 98.33 % / 97.49 % simulated: fbgemm's
saturating int16 pair sums on this CPU (see the export verification, which fails them).
Usage: .venv/bin/python benchmarks/bench_export.py [--rounds 5] [--repeats 10] [--threads N] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.export import RUNNERS_DIR, export
from qtradeoff.core.export.torch_int8 import save_torchscript, trace_frozen
from qtradeoff.core.export.verify import run_runner
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.runtime import tune_allocator

MODELS = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
BATCHES = (1, 32)


def _torch_fp32(engine, path: Path) -> None:
    save_torchscript(trace_frozen(engine.module, engine.data.calib_inputs[:2]), path, {"schema": "fp32 baseline"})


# runtime -> (writer of the fp32 file, int8 export format, runner script, suffix).
# --- ONNX Runtime rows go here: ("onnxruntime", <fp32 .onnx writer>, "onnx", RUNNERS_DIR / "run_onnxruntime.py",
# ".onnx"), once the onnx format is registered.
RUNTIMES = {"torch": (_torch_fp32, "torch-int8", RUNNERS_DIR / "run_torch.py", ".pt")}


def bench_model(name: str, rounds: int, repeats: int, threads: int | None, folder: Path) -> list[dict]:
    loaded = load_sample_model(name)
    engine = Engine(loaded, sample_data_for(loaded))
    inputs = engine.data.eval_inputs[:32].numpy()
    rows = []
    for runtime, (write_fp32, fmt, runner, suffix) in RUNTIMES.items():
        fp32_file, int8_file = folder / f"{name}.fp32{suffix}", folder / f"{name}.int8{suffix}"
        write_fp32(engine, fp32_file)
        report = export(engine, W8A8, fmt, int8_file, verify=False)
        labels = engine.data.eval_labels.numpy()
        outputs, _ = run_runner(runner, int8_file, engine.data.eval_inputs.numpy(), standalone=True,
                                latency_batches=(), threads=threads)
        accuracy = float((outputs.argmax(1) == labels).mean())
        ratios: dict[int, list[float]] = {b: [] for b in BATCHES}
        medians: dict[str, dict[int, list[float]]] = {"fp32": {b: [] for b in BATCHES},
                                                      "int8": {b: [] for b in BATCHES}}
        for _ in range(rounds):
            timings = {}
            for kind, path in (("fp32", fp32_file), ("int8", int8_file)):
                _, info = run_runner(runner, path, inputs, standalone=True, latency_batches=BATCHES,
                                     repeats=repeats, threads=threads)
                timings[kind] = {b: info["latency_ms"][str(b)]["median"] for b in BATCHES}
                for b in BATCHES:
                    medians[kind][b].append(timings[kind][b])
            for b in BATCHES:
                ratios[b].append(timings["int8"][b] / timings["fp32"][b])
        row = {"model": name, "runtime": runtime, "int8_accuracy": accuracy,
               "simulated_accuracy": engine.evaluate(W8A8, latency="none").accuracy,
               "fp32_file_bytes": fp32_file.stat().st_size, "int8_file_bytes": report.file_bytes,
               "sample_file_bytes": loaded.file_bytes}
        for b in BATCHES:
            row[f"fp32_ms_b{b}"] = statistics.median(medians["fp32"][b])
            row[f"int8_ms_b{b}"] = statistics.median(medians["int8"][b])
            row[f"ratio_b{b}"] = statistics.median(ratios[b])
        rows.append(row)
    rows += _onnx_rows(name, engine, loaded, rounds, threads, folder / name)
    return rows


def _onnx_rows(name: str, engine, loaded, rounds: int, threads: int | None, folder: Path) -> list[dict]:
    from qtradeoff.core.export.onnx_format import onnx_export_latency
    from qtradeoff.core.measurement import runtime_latency

    runtimes = tuple(r for r in runtime_latency.RUNTIMES if runtime_latency.available(r))
    if not runtimes:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    figures = onnx_export_latency(engine, W8A8, folder, batches=BATCHES, threads=threads, rounds=3 * rounds,
                                  runtimes=runtimes)
    inputs, labels = engine.data.eval_inputs.numpy(), engine.data.eval_labels.numpy()
    simulated = engine.evaluate(W8A8, latency="none").accuracy
    rows = []
    for runtime in runtimes:
        def accuracy(optimization: str, runtime=runtime) -> float:
            out = runtime_latency.outputs(runtime, figures["paths"]["config"], inputs, threads=threads,
                                          optimization=optimization)
            return float((out.argmax(1) == labels).mean())

        timed = figures["by_runtime"][runtime]["stats"]
        row = {"model": name, "runtime": runtime, "int8_accuracy": accuracy("all"),
               "simulated_accuracy": simulated, "fp32_file_bytes": figures["fp32_bytes"],
               "int8_file_bytes": figures["int8_bytes"], "sample_file_bytes": loaded.file_bytes}
        if runtime == "onnxruntime":
            row["int8_accuracy_unfused"] = accuracy("none")
        for b in BATCHES:
            row[f"fp32_ms_b{b}"] = timed["fp32"][b].median_ms
            row[f"int8_ms_b{b}"] = timed["config"][b].median_ms
            row[f"ratio_b{b}"] = timed["config"][b].median_ms / timed["fp32"][b].median_ms
            row[f"spread_b{b}"] = max(timed["config"][b].spread, timed["fp32"][b].spread)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tune_allocator()
    print(f"{'model':<28}{'runtime':<12}{'int8/fp32 b1':>13}{'int8/fp32 b32':>14}{'fp32 b1 ms':>11}"
          f"{'int8 b1 ms':>11}{'int8 acc':>9}{'sim acc':>8}{'int8 file':>10}{'fp32 file':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        for name in args.models:
            for row in bench_model(name, args.rounds, args.repeats, args.threads, Path(folder)):
                print(f"{row['model']:<28}{row['runtime']:<12}{row['ratio_b1']:>12.2f}x{row['ratio_b32']:>13.2f}x"
                      f"{row['fp32_ms_b1']:>11.3f}{row['int8_ms_b1']:>11.3f}{100 * row['int8_accuracy']:>8.2f}%"
                      f"{100 * row['simulated_accuracy']:>7.2f}%{row['int8_file_bytes']:>10}"
                      f"{row['fp32_file_bytes']:>10}"
                      + (f"  (unfused {100 * row['int8_accuracy_unfused']:.2f}%)" if "int8_accuracy_unfused" in row
                         else "") + (f"  spread {row['spread_b1']:.2f}/{row['spread_b32']:.2f}" if "spread_b1" in row
                                     else ""), flush=True)
                if args.json:
                    print(json.dumps(row))


if __name__ == "__main__":
    main()
