"""Benchmark of issue 19: the tool's int8/fp32 latency ratio against torch.ao FX's default x86 flow, and cold start.

For each sample model and torchvision resnet18 and mobilenet_v2 at 64x64 (random weights, 10 classes), at 1 and 2
threads, batch 1 and 32, ``--repeats`` times in turn:
- the tool's ratio: ``Engine.evaluate(W8A8, latency="measured")`` at that thread count, read from the Result
  (its real int8 model timed interleaved with the fp32 model, :mod:`qtradeoff.core.measurement.interleaved`);
- torch.ao FX's default flow (``prepare_fx``/``convert_fx`` with ``get_default_qconfig_mapping("x86")``,
  calibrated on the same samples) timed with the same protocol against the same fp32 model.
Each ratio is the median over the repeats; its spread is the farther of the repeats from that median, relative to
it. ``tool/FX`` compares the two int8 models round by round: the three models (fp32, the tool's, FX's) run in the
same interleaved rounds with FX's model as the reference, so each round gives one tool/FX ratio and load between
rounds cancels out; the figure is the median over the repeats of each repeat's median ratio (its spread beside
it). Targets: tool/FX <= 1.05, and the spreads of the tool's reported ratio and of FX's within ±15 %.
``rounds`` is the median number of interleaved rounds of the tool's timing per repeat, ``dropped`` the rounds it
dropped as disturbed over all repeats, ``budget`` how many repeats stopped on their time budget unconverged
(marked NOISY). A missed row whose FX spread is as bad as the tool's is marked ``noise?``: the graphs (each row
lists both boundary counts) run the same kernels as FX's, and the loaded machine timed them apart. Then the cold
start of ``qtradeoff evaluate digits_cnn --json`` in fresh processes (``bench_startup.py --in-process``): the
first evaluation against twice a warm one plus ``import torch``. Nothing is asserted: the machine is shared, so
the load average is printed with the figures. Run it under ``flock /tmp/bench.lock``.
Usage: .venv/bin/python benchmarks/bench_latency.py [--repeats 5] [--threads 1 2] [--models ...] [--cold 3]
       [--json [PATH]]  (JSON lines on stdout, or appended to PATH)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.data import EvalData, fingerprint
from qtradeoff.core.loading.model_io import LoadedModel, load_sample_model, sample_data_for
from qtradeoff.core.measurement.int8_graph import boundaries
from qtradeoff.core.measurement.interleaved import time_interleaved
from qtradeoff.core.measurement.latency import LatencySettings
from qtradeoff.core.measurement.realquant import quantized_engine
from qtradeoff.core.runtime import tune_allocator
from qtradeoff.core.tvcompat import torchvision

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")
TORCHVISION = ("resnet18", "mobilenet_v2")
W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
SPREAD_BOUND = 0.15
MARGIN = 1.05


def _torchvision(name: str) -> tuple[LoadedModel, EvalData]:
    torch.manual_seed(0)
    module = getattr(torchvision().models, name)(weights=None, num_classes=10).eval()
    inputs = torch.randn(96, 3, 64, 64)
    loaded = LoadedModel(module=module, path=Path(f"{name}.pt"), name=name, format="state_dict", sha256="",
                         trusted=True, file_bytes=0, input_shape=(3, 64, 64), num_classes=10,
                         architecture=f"torchvision.{name}", load_seconds=0.0)
    return loaded, EvalData(name, inputs[:32], None, inputs[32:], None, 10, fingerprint(inputs))


def _load(name: str) -> tuple[LoadedModel, EvalData]:
    if name in TORCHVISION:
        return _torchvision(name)
    loaded = load_sample_model(name)
    return loaded, sample_data_for(loaded, calib_size=128, eval_size=64)


def _fx_default(module: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module | None:
    """torch.ao FX's default x86 flow on ``module`` (None where FX cannot trace it, e.g. TorchScript)."""
    import copy
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if isinstance(module, torch.jit.ScriptModule):
        return None
    with warnings.catch_warnings(), quantized_engine(), torch.no_grad():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(module).eval(), get_default_qconfig_mapping("x86"),
                              example_inputs=(calib[:1],))
        prepared(calib)
        return convert_fx(prepared)


def _summary(values: list[float]) -> tuple[float, float]:
    median = statistics.median(values)
    return median, (max(abs(v - median) for v in values) / median if median > 0 else 0.0)


def bench_model(name: str, threads: int, repeats: int, batches: tuple[int, ...]) -> dict:
    loaded, data = _load(name)
    engine = Engine(loaded, data)
    fx = _fx_default(loaded.module, data.calib_inputs)
    settings = LatencySettings(batch_sizes=batches, threads=threads)
    reported: dict[int, list[float]] = {b: [] for b in batches}  # the ratio the tool's Result states
    tool: dict[int, list[float]] = {b: [] for b in batches}  # the tool's int8 model, timed beside FX's
    tool_fx: dict[int, list[float]] = {b: [] for b in batches}  # the tool's over FX's, round by round
    theirs: dict[int, list[float]] = {b: [] for b in batches}
    # per repeat of the tool's timing: rounds timed, rounds dropped as disturbed, whether it stopped on its budget
    protocol: dict[int, list[tuple[int, int, bool]]] = {b: [] for b in batches}
    result = None
    for _ in range(repeats):
        result = engine.evaluate(W8A8, latency="measured", latency_settings=settings, eval_size=64)
        record = result.provenance.get("latency_protocol", {})
        for stats in result.latency_measured:
            reported[stats.batch].append(stats.fp32_ratio if stats.fp32_ratio is not None else 1.0)
            key = str(stats.batch)
            protocol[stats.batch].append((record.get("rounds", {}).get(key, 0), record.get("dropped", {}).get(key, 0),
                                          record.get("stopped", {}).get(key) != "converged"))
        if fx is not None:
            # the three models in the same rounds, over FX's: each round gives the tool/FX ratio directly
            real = engine.real_model(engine.plan(W8A8)).module
            with quantized_engine():
                for timing in time_interleaved({"fp32": loaded.module, "tool": real, "fx": fx}, data.eval_inputs,
                                               settings, reference="fx"):
                    fx_over_fp32 = 1.0 / timing.ratios["fp32"].median
                    theirs[timing.batch].append(fx_over_fp32)
                    tool_fx[timing.batch].append(timing.ratios["tool"].median)
                    tool[timing.batch].append(timing.ratios["tool"].median * fx_over_fp32)
    rows = {}
    for batch in batches:
        ours, our_spread = _summary(reported[batch])
        fx_ratio, fx_spread = _summary(theirs[batch]) if theirs[batch] else (None, None)
        beside = statistics.median(tool[batch]) if tool[batch] else None
        relative, relative_spread = _summary(tool_fx[batch]) if tool_fx[batch] else (None, None)
        rows[batch] = {"tool": ours, "tool_spread": our_spread, "fx": fx_ratio, "fx_spread": fx_spread,
                       "tool_beside_fx": beside, "tool_over_fx": relative, "tool_over_fx_spread": relative_spread,
                       "tool_runs": reported[batch], "tool_beside_fx_runs": tool[batch], "fx_runs": theirs[batch],
                       "tool_over_fx_runs": tool_fx[batch],
                       "tool_rounds": [r for r, _, _ in protocol[batch]],
                       "tool_dropped": [d for _, d, _ in protocol[batch]],
                       "tool_unconverged": sum(u for _, _, u in protocol[batch])}
    return {"model": name, "threads": threads, "rows": rows,
            "boundaries": len(result.provenance.get("int8_boundaries", ())) if result else None,
            "fx_boundaries": None if fx is None else len(boundaries(fx)),
            "executed": sorted(set(result.executed_precisions.values())) if result else [],
            "threads_reason": result.provenance.get("latency_protocol", {}).get("reason") if result else None}


def cold_start(runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    inside = []
    for _ in range(runs):
        child = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_startup.py"), "--in-process"],
                               cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if child.returncode != 0:
            raise SystemExit(f"cold start failed:\n{child.stderr}")
        inside.append(json.loads(child.stdout.strip().splitlines()[-1]))
    figures = {key: statistics.median(r[key] for r in inside) for key in ("import_torch", "cold", "warm")}
    figures["dynamo"] = any(r["dynamo"] for r in inside)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--models", nargs="*", default=[*SAMPLES, *TORCHVISION])
    parser.add_argument("--cold", type=int, default=3, help="fresh processes for the cold-start row (0: skip)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write one JSON line per model and thread count (stdout, or appended to PATH)")
    args = parser.parse_args()

    def emit_json(record: dict) -> None:
        if args.json == "-":
            print("JSON " + json.dumps(record))
        elif args.json:
            with open(args.json, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")

    tune_allocator()  # as the app does at start
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.repeats} repeats, load at start "
          f"{open('/proc/loadavg').read().split()[:3]}")
    print(f"{'model':<27}{'thr':>4}{'batch':>6}{'tool int8/fp32':>16}{'spread':>8}{'FX int8/fp32':>14}{'spread':>8}"
          f"{'tool/FX':>14}{'rounds':>8}{'dropped':>8}{'budget':>7}  targets")
    missed = 0
    for threads in args.threads:
        for name in args.models:
            row = bench_model(name, threads, args.repeats, tuple(args.batches))
            for batch, r in row["rows"].items():
                if r["fx"] is None:
                    verdict = "no FX baseline (not traceable)"
                    relative = float("nan")
                else:
                    relative = r["tool_over_fx"]
                    ok_ratio = relative <= MARGIN
                    ok_spread = r["tool_spread"] <= SPREAD_BOUND and r["fx_spread"] <= SPREAD_BOUND
                    verdict = ("MET" if ok_ratio and ok_spread else "MISSED") + (
                        "" if ok_ratio else " (ratio)") + ("" if ok_spread else " (spread)")
                    missed += verdict != "MET"
                    if verdict != "MET" and r["fx_spread"] >= min(r["tool_spread"], SPREAD_BOUND):
                        verdict += " noise?"  # FX's own repeats disagree as much: the machine's spread
                fx_text = "n/a" if r["fx"] is None else f"{r['fx']:.3f}"
                relative_text = "n/a" if r["fx"] is None else f"{relative:.2f}±{r['tool_over_fx_spread']:.0%}"
                fx_spread = "" if r["fx_spread"] is None else f"±{r['fx_spread']:.0%}"
                print(f"{name:<27}{threads:>4}{batch:>6}{r['tool']:>16.3f}{'±' + format(r['tool_spread'], '.0%'):>8}"
                      f"{fx_text:>14}{fx_spread:>8}{relative_text:>14}{statistics.median(r['tool_rounds']):>8.0f}"
                      f"{sum(r['tool_dropped']):>8}{r['tool_unconverged']:>7}  {verdict}")
            print(f"{'':<27}    int8 run: {', '.join(row['executed'])}; {row['boundaries']} quantize/dequantize "
                  f"boundaries (FX: {row['fx_boundaries']}); load {open('/proc/loadavg').read().split()[0]}")
            emit_json(row)
    print(f"targets: tool ratio <= FX ratio x {MARGIN} and spreads within ±{SPREAD_BOUND:.0%}: "
          f"{'all MET' if not missed else f'{missed} row(s) MISSED'}")
    if args.cold:
        cold = cold_start(args.cold)
        bound = 2 * cold["warm"] + cold["import_torch"]
        verdict = "MET" if cold["cold"] <= bound else "MISSED"
        print(f"cold start (median of {args.cold} fresh processes): import torch {cold['import_torch']:.2f} s, first "
              f"evaluate of digits_cnn {cold['cold']:.2f} s, warm {cold['warm']:.2f} s; first / (2 x warm + import "
              f"torch) = {cold['cold'] / bound:.2f} (target <= 1): {verdict}; torch._dynamo imported: "
              f"{cold['dynamo']}")
        emit_json({"cold_start": cold})
    print(f"load at end {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
