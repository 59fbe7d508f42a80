"""Benchmark of the weight rounding algorithms (issue 17): accuracy with its 95 % interval for nearest rounding,
bias correction, AdaRound and GPTQ on the sample models at low weight bit widths (fp32 and int8 activations), and
the time each algorithm takes to compress the model, as a ratio to nearest rounding's time in the same run.

Timing: for each (model, weight bits) and each round, every algorithm compresses the model once on a fresh
Compressor (its caches empty: the statistics pass and every layer's rounding are in the time), algorithms
interleaved within a round so that machine load hits them alike; the figure is the median over rounds, and the
ratio is the median of per-round ratios to nearest. Accuracy: the compressor of the last round evaluates both
activation settings (its rounded weights reused, as the engine's cache does in the app).

The AIMET figure of the issue (AdaRound on digits_cnn, int4 weights / int8 activations, 98.33 % in 393 s) was
measured in an earlier session and is quoted, not run here; ``--peer-json`` adds rows of a peer run here (a JSON list
of {peer, model, bits, activation, algorithm, accuracy, seconds} or {..., error}, as peer_algorithms.py writes), and
the target line compares with the best peer that ran on each (model, bits, activation): the most accurate, the
fastest among equally accurate ones.
Measured 2026-12-04 20:05-20:15 UTC (2 threads, machine shared: load average 2.3-4.4; MCT 2.6.1 from
peer_algorithms.py, torch 2.13.0+cpu, same models and splits, load 1.6-3.8); nearest / bias correction / GPTQ
re-run 23:06-23:07 UTC (3 rounds, load 2.4) after GPTQ's statistics pass was made cheaper: every accuracy the same
as at 20:05, GPTQ's seconds below are that run's. Accuracies int8 / fp32 activations.
- digits_cnn (fp32 98.33 %, 3 rounds, load 2.3-2.5): int4 nearest 97.49 / 97.77, bias correction 97.77 / 97.49,
  AdaRound 98.33 / 98.33, GPTQ 98.89 / 98.61 %; int3 93.31 / 93.04, 97.49 / 97.49, 96.66 / 96.38, 97.77 / 97.77 %;
  compress seconds int4 0.00 / 0.05 / 6.4 / 0.30, int3 0.00 / 0.05 / 5.3 / 0.26 (GPTQ was 0.83 / 0.42 s). MCT PTQ:
  int4 98.61 % in 3.3 s / 98.61 % in 3.0 s, int3 94.99 % in 2.6 s / 94.99 % in 3.0 s (MCT GPTQ of 2026-12-03: int4
  98.89 % in 53.7 s / 98.61 % in 38.8 s, int3 95.82 % in 52.9 s / 94.71 % in 18.0 s). Bias correction alone
  collects E[x] only (no E[x xᵀ]): 0.05-0.08 s where it took 0.42-0.49 s. GPTQ's time was the second-order pass
  (a float64 Gram of the unfolded patches); E[x xᵀ] is now a float32 product per chunk (accumulated in float64;
  the rounding of all three models and both bit widths gave the same accuracies), an ungrouped conv's from
  channels-last patch rows copied once: interleaved A/B against main under the lock (22:58-23:09, 15 runs each,
  load 1.0-3.5), digits_cnn int4 GPTQ 0.24-0.35 s, median 0.27 s, vs main's 0.38-0.64 s, median 0.47 s (float32
  alone: median 0.29 s); runs of both that reached 2-15 s while the machine was oversubscribed are left out.
  A depthwise Gram from shifted views was tried and reverted (MobileNet GPTQ 3.2-3.7 s vs 1.1-1.3 s).
- digits_mlp (fp32 98.05 %, 1 round, load 3.1-3.3): int4 nearest 97.77 / 97.77, bias correction 97.77 / 97.77,
  AdaRound 97.77 / 97.77, GPTQ 98.05 / 98.05 %; int3 98.61 / 98.61, 98.61 / 98.33, 97.77 / 97.77, 98.05 / 98.05 %;
  seconds int4 0.00 / 0.01 / 7.1 / 0.19, int3 0.00 / 0.01 / 7.5 / 0.23. MCT PTQ int4 98.33 % in 4.6 s / 98.33 %
  in 1.7 s, int3 97.77 % in 2.0 s / 98.05 % in 3.4 s; MCT GPTQ int4 98.05 % in 6.4 s / 98.05 % in 3.6 s, int3
  98.05 % in 15.1 s / 97.77 % in 22.5 s.
- mobilenet_v3_small_digits (fp32 97.49 %, 1 round, load 2.7-3.0, --algorithms nearest,bias_correction,gptq):
  int4 nearest 85.24 / 83.84, bias correction 88.30 / 87.19, GPTQ 92.76 / 92.76 %; int3 66.57 / 69.08, 82.45 /
  83.84, 84.40 / 84.40 %; seconds int4 0.02 / 0.25 / 1.20, int3 0.03 / 0.26 / 1.28 (23:06 run, load 2.4; GPTQ was
  1.75 / 1.55 s). MCT PTQ int4 84.96 % in 27.6 s / 84.68 % in 29.3 s, int3 44.57 % in 26.9 s / 44.29 % in
  27.0 s. MCT GPTQ (int4 / int8) was stopped after 11 min unfinished (its Hessian estimation at 14 of 100
  iterations, ~20 min more announced, machine loaded): no MCT GPTQ row for MobileNet.
Targets: digits_cnn int4 no worse than fp32 and int3 within 2 points: MET (GPTQ). Against the best peer in a tenth
of its time: MET on digits_cnn int3 (bias correction 97.49 % in 0.05 s vs MCT PTQ 94.99 %), digits_mlp int3
(bias correction 98.61 / 98.33 % in 0.01 s), MobileNet int4 and int3 (bias correction 88.30 / 87.19 and 82.45 /
83.84 % in 0.25 s vs MCT PTQ); digits_cnn int4 MET AT THE BOUND (GPTQ 98.89 / 98.61 %, as accurate or more, in
0.30 s here, A/B median 0.27 s, vs MCT PTQ 3.0-3.3 s: a tenth of 3.0 s is 0.30 s); MISSED on digits_mlp int4 (best
here GPTQ 98.05 % vs MCT PTQ 98.33 %: one test image); see below for the rows with an MSE weight range.
NNCF 3.4.0 (earlier session) refused 4-bit conv weights for its CPU/ANY hardware configs.

Rounding options (issue 17, "better points on the frontier"): an algorithm may carry ``+act-order`` (GPTQ's
``gptq_act_order``) and ``+mse`` (``range: mse``, the weight grid chosen first, then rounded onto); each is a row of
its own and takes part in the "best here" choice of the targets (``nearest+mse`` included: its grid search is the
algorithm). Measured 2026-12-05 01:04-01:05 UTC under the lock (1 round, 2 threads, load average 0.13 before /
1.10 after; peers from the 2026-12-04 MCT runs above, --peer-json), algorithms nearest, bias_correction, gptq,
gptq+act-order, nearest+mse, bias_correction+mse, gptq+mse, gptq+act-order+mse; accuracies fp32 / int8 acts.
Every row of nearest, bias correction and GPTQ reproduced the figures above.
- GPTQ act-order vs natural order: MobileNet int4 95.82 / 95.54 % vs 92.76 / 92.76 (+3.06 / +2.78 points), int3
  91.09 / 90.53 vs 84.40 / 84.40 (+6.69 / +6.13); digits_cnn int4 98.33 / 98.33 vs 98.61 / 98.89 (-0.28 / -0.56),
  int3 96.10 / 96.10 vs 97.77 / 97.77 (-1.67); digits_mlp int4 98.05 / 98.05 unchanged, int3 98.33 / 98.33 vs
  98.05 / 98.05 (+0.28). Same cost (MobileNet 1.01 vs 1.00 s, digits 0.16-0.22 s). An option, off by default.
- MSE weight range: digits_mlp int4 nearest+mse 98.33 / 98.33 % in 0.10 s (min-max nearest 97.77, GPTQ 98.05;
  bias_correction+mse, gptq+mse and gptq+act-order+mse 98.05); digits_cnn int4 nearest+mse 98.61 / 98.33,
  bias_correction+mse 98.33 / 98.33, gptq+mse 98.33 / 98.33 (min-max GPTQ 98.61 / 98.89); but int3 nearest+mse
  77.44 / 76.32 % (min-max 93.04 / 93.31), gptq+mse 97.49 / 97.49; MobileNet int4 nearest+mse 79.94 / 80.22 (min-max
  83.84 / 85.24), gptq+mse 93.87 / 93.87 and gptq+act-order+mse 94.15 / 94.71 (act-order alone 95.82 / 95.54),
  int3 nearest+mse 21.73 / 21.73, gptq+mse 55.71 / 55.43, gptq+act-order+mse 63.51 / 62.67. Least squared error
  of the weights is not least output error: clipping that helps digits_mlp at int4 costs the convs at int3
  (depthwise channels of 9 weights clip hardest). Cost of the search (61 ratios per channel): 0.07 s on digits_cnn,
  0.10 s on digits_mlp, 0.76 s on MobileNet beside the rest of compression.
Targets with these rows: digits_mlp int4 against MCT PTQ (98.33 %, 1.7 s fp32 acts / 4.6 s int8) now MET by
nearest+mse, 98.33 % in 0.10 s on both activation settings -- at the bound and on one test image (the 359-image
split: 98.33 % is 353/359, GPTQ's 98.05 % is 352/359; the 95 % interval is [96.40, 99.23] %), the same accuracy
as MCT PTQ's with the same idea (MSE-selected per-channel weight thresholds), not a better method. Every other
target as before (MET); digits_cnn int4's best is still min-max GPTQ (98.61 / 98.89 %, 0.26 s).
Every MCT row above is in ``benchmarks/peer_mct_runs.json`` (peer_algorithms.py's output, as run here), so the
target lines can be re-checked without the peer's environment: ``--peer-json benchmarks/peer_mct_runs.json``.
int2 weights (the issue's third width), measured 2026-12-05 01:18-01:28 UTC under the lock (2 threads, load average
0.6-1.6), with MCT 2.6.1 run at int2 here the same hour (peer_algorithms.py, PTQ on all three models, GPTQ on the
two digits models; MobileNet's MCT GPTQ takes minutes per configuration and was not run). Accuracies fp32 / int8
acts, seconds of compression (3 rounds on the digits models, 1 on MobileNet):
- digits_cnn: nearest 20.06 / 20.33 %, bias correction 39.55 / 41.23 % (0.04 s), AdaRound 36.21 / 35.93 % (3.4 s,
  the 01:19 run), GPTQ 62.95 / 62.67 % (0.18 s), GPTQ act-order 72.98 / 73.54 % (0.18 s), nearest+mse 11.70 /
  11.42 %; MCT PTQ 10.58 / 10.31 % (0.8-0.9 s), MCT GPTQ 35.10 / 44.01 % (12.2-12.3 s).
- digits_mlp: nearest 72.98 / 73.54 %, bias correction 76.32 / 76.60 %, AdaRound 97.77 / 97.77 % (5.5 s), GPTQ
  98.05 / 98.05 % (0.15 s), nearest+mse 97.77 / 97.77 % (0.03 s); MCT PTQ 97.21 / 97.21 % (0.8 / 2.7 s), MCT GPTQ
  97.21 / 97.21 % (1.8 / 3.7 s).
- MobileNet: nearest 10.58 / 11.98 %, bias correction 24.51 / 22.56 % (0.25 s), AdaRound 25.35 / 32.31 % (36.9 s),
  GPTQ 55.15 / 54.60 % (1.07 s), GPTQ act-order 33.70 / 36.21 % (act-order hurts at int2 here), any +mse 9.75 %
  (chance: clipping a 9-weight depthwise channel onto 4 levels); MCT PTQ 9.75 / 9.75 % (8.5-8.8 s).
MobileNet AdaRound at int4 / int3 (01:32 run, load 0.05-1.4): 94.43 / 94.43 % in 33.5 s and 88.86 / 87.74 % in
36.3 s, below GPTQ act-order's 95.82 / 95.54 % and 91.09 / 90.53 % in about 1 s.
The MSE range search now rounds the candidate grids in elementwise ops (several ratios at once on small layers),
the same grids bit for bit: nearest+mse takes 0.03 s on digits_mlp (was 0.10 s), 0.14 s on MobileNet (was 0.76 s
for the search alone), and meets MCT PTQ's int2 / fp32-activation row (97.21 % in 0.8 s: a tenth is 0.08 s) with
97.77 % in 0.03 s, where GPTQ's 98.05 % took 0.15-0.16 s. With these runs every target line is MET, on every
model, width (int4, int3, int2) and activation setting; the int4 digits_mlp one rests on one test image (above).
Usage: .venv/bin/python benchmarks/bench_algorithms.py [--models ...] [--bits int4,int3,int2] [--rounds 1]
       [--algorithms nearest,bias_correction,adaround,gptq,gptq+act-order,gptq+mse,nearest+mse,...]
       [--adaround-iterations N] [--threads N] [--peer-json peer.json] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for

MODELS = ("digits_cnn", "digits_mlp", "mobilenet_v3_small_digits")
ALGORITHMS = ("nearest", "bias_correction", "adaround", "gptq")
# Options of the weight spec a row can add to its rounding, written "<rounding>+<option>[+<option>]":
# "act-order" (GPTQ's gptq_act_order) and "mse" (range: mse, the grid every rounding then rounds onto).
OPTIONS = {"act-order": {"gptq_act_order": True}, "mse": {"range": "mse"}}
ACTIVATIONS = ("fp32", "int8")
# Issue 17's AIMET figure on digits_cnn (fp32 98.33 %), int4 weights / int8 activations, measured before this work
# and not re-run here (its MCT GPTQ figure is superseded by peer_algorithms.py runs: see the docstring).
QUOTED_PEERS = (
    {"peer": "AIMET 2.42 AdaRound (quoted)", "model": "digits_cnn", "bits": 4, "activation": "int8",
     "accuracy": 0.9833, "seconds": 393.0},
)


def variant_weight(algorithm: str) -> dict:
    """The weight fields of a row's algorithm name: a rounding, then options (``gptq+act-order+mse``)."""
    rounding, *options = algorithm.split("+")
    if rounding not in ALGORITHMS or any(option not in OPTIONS for option in options) or \
            ("act-order" in options and rounding != "gptq"):
        raise ValueError(f"{algorithm!r}: a rounding ({', '.join(ALGORITHMS)}) then options "
                         f"(+{', +'.join(OPTIONS)}; act-order with gptq only)")
    weight = {"rounding": rounding}
    for option in options:
        weight.update(OPTIONS[option])
    return weight


def config_for(bits: str, activation: str, algorithm: str, iterations: int | None) -> CompressionConfig:
    weight = {"precision": bits, **variant_weight(algorithm)}
    if iterations and weight["rounding"] == "adaround":
        weight["adaround_iterations"] = iterations
    activation_spec = {"precision": activation}
    if activation != "fp32":
        activation_spec["calibration"] = "percentile"
    return CompressionConfig().with_defaults(weight=weight, activation=activation_spec)


def compress_seconds(engine: Engine, config: CompressionConfig) -> tuple[float, Compressor]:
    compressor = Compressor(engine.module, engine.data.calib_inputs, layers=engine.compressor.inventory)
    start = time.perf_counter()
    compressor.simulate(compressor.plan(config))
    return time.perf_counter() - start, compressor


def bench_model(name: str, bits_list: list[str], rounds: int, iterations: int | None,
                algorithms: tuple[str, ...] = ALGORITHMS) -> list[dict]:
    loaded = load_sample_model(name)
    data = sample_data_for(loaded)
    engine = Engine(loaded, data)
    fp32 = engine.evaluate(CompressionConfig(), latency="none")
    rows = [{"model": name, "bits": "fp32", "activation": "fp32", "algorithm": "-", "accuracy": fp32.accuracy,
             "ci95": list(fp32.accuracy_ci95), "seconds": 0.0, "ratio": None, "eval_samples": fp32.eval_samples}]
    for bits in bits_list:
        seconds: dict[str, list[float]] = {algorithm: [] for algorithm in algorithms}
        ratios: dict[str, list[float]] = {algorithm: [] for algorithm in algorithms}
        compressors: dict[str, Compressor] = {}
        for _ in range(rounds):
            this_round = {}
            for algorithm in algorithms:
                spent, compressors[algorithm] = compress_seconds(engine, config_for(bits, "fp32", algorithm,
                                                                                    iterations))
                this_round[algorithm] = spent
                seconds[algorithm].append(spent)
            for algorithm in algorithms:
                ratios[algorithm].append(this_round[algorithm] / this_round["nearest"])
        for algorithm in algorithms:
            evaluator = Engine(loaded, data, compressor=compressors[algorithm])
            for activation in ACTIVATIONS:
                result = evaluator.evaluate(config_for(bits, activation, algorithm, iterations), latency="none")
                rows.append({"model": name, "bits": bits, "activation": activation, "algorithm": algorithm,
                             "accuracy": result.accuracy, "ci95": list(result.accuracy_ci95),
                             "seconds": statistics.median(seconds[algorithm]),
                             "ratio": statistics.median(ratios[algorithm]), "eval_samples": result.eval_samples})
            shown = ", ".join(f"{row['activation']} acts {row['accuracy']:.2%}" for row in rows[-len(ACTIVATIONS):])
            print(f"  {name} {bits} {algorithm}: {statistics.median(seconds[algorithm]):.2f} s, {shown}", flush=True)
    return rows


def _accuracy(rows, model, bits, activation, algorithm):
    for row in rows:
        if (row["model"], row["bits"], row["activation"], row["algorithm"]) == (model, bits, activation, algorithm):
            return row
    return None


def targets(rows: list[dict], peers: list[dict]) -> list[str]:
    lines = []
    fp32 = next((r for r in rows if r["model"] == "digits_cnn" and r["bits"] == "fp32"), None)
    if fp32 is None:  # the fp32 targets are digits_cnn's; the peer targets below hold for every model run
        lines.append("digits_cnn not run: its fp32 targets not checked")
    for bits, allowed in (("int4", 0.0), ("int3", 0.02)) if fp32 is not None else ():
        for activation in ACTIVATIONS:
            candidates = [r for r in rows if r["model"] == "digits_cnn" and r["bits"] == bits
                          and r["activation"] == activation]
            if not candidates:
                continue
            best = max(candidates, key=lambda r: r["accuracy"])
            met = best["accuracy"] >= fp32["accuracy"] - allowed - 1e-9
            what = "no worse than fp32" if allowed == 0 else "within 2 points of fp32"
            lines.append(f"{'MET   ' if met else 'MISSED'} digits_cnn {bits} weights / {activation} activations "
                         f"{what}: best {best['algorithm']} {best['accuracy']:.2%} vs fp32 {fp32['accuracy']:.2%}")
    # the Done-when's target is against the best peer that ran on each (model, bits, activation): the most accurate,
    # and among equally accurate peers the fastest (the stricter time bound)
    best_peers: dict[tuple, dict] = {}
    for peer in peers:
        if "error" in peer:  # a peer that refused this configuration sets no target
            continue
        key = (peer["model"], peer["bits"], peer.get("activation", "int8"))
        held = best_peers.get(key)
        if held is None or (round(peer["accuracy"], 4), -peer["seconds"]) > (round(held["accuracy"], 4),
                                                                           -held["seconds"]):
            best_peers[key] = peer
    for (model, peer_bits, activation), peer in best_peers.items():
        bits = f"int{peer_bits}"
        candidates = [r for r in rows if r["model"] == model and r["bits"] == bits
                      and r["activation"] == activation and r["algorithm"] != "nearest"]  # nearest+mse counts
        if not candidates:
            continue
        best = max(candidates, key=lambda r: (r["accuracy"], -r["seconds"]))
        fast = [r for r in candidates if r["seconds"] <= peer["seconds"] / 10]
        # quoted accuracies are rounded to 4 decimals (98.89 % is 355/359 = 0.98886): compare at that precision
        good = [r for r in fast if round(r["accuracy"], 4) >= round(peer["accuracy"], 4)]
        lines.append(f"{'MET   ' if good else 'MISSED'} as accurate as the best peer {peer['peer']} "
                     f"({peer['accuracy']:.2%}, {peer['seconds']:.1f} s) in <= 1/10 of its time on {model} "
                     f"{bits}/{activation}: "
                     + (f"{good[0]['algorithm']} {good[0]['accuracy']:.2%} in {good[0]['seconds']:.2f} s" if good
                        else f"best here {best['algorithm']} {best['accuracy']:.2%} in {best['seconds']:.2f} s"))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--bits", default="int4,int3,int2", help="weight precisions, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="comma-separated, nearest first (the time ratio's baseline); a rounding may carry "
                             "options: gptq+act-order, gptq+mse, nearest+mse, gptq+act-order+mse")
    parser.add_argument("--adaround-iterations", type=int, default=None, help="default: the config's default")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peer-json", default=None, help="rows of a peer run here (JSON list)")
    parser.add_argument("--json", default=None, help="write every row to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    algorithms = tuple(args.algorithms.split(","))
    if algorithms[0] != "nearest":
        parser.error("--algorithms: nearest first (the time ratio's baseline)")
    for algorithm in algorithms:
        try:
            variant_weight(algorithm)
        except ValueError as error:
            parser.error(f"--algorithms: {error}")
    with open("/proc/loadavg") as handle:
        load_before = handle.read().split()[:3]
    rows = []
    for name in args.models:
        rows += bench_model(name, args.bits.split(","), args.rounds, args.adaround_iterations, algorithms)
    with open("/proc/loadavg") as handle:
        load_after = handle.read().split()[:3]
    print(f"\nthreads {torch.get_num_threads()}, rounds {args.rounds}, load average before {' '.join(load_before)}, "
          f"after {' '.join(load_after)}")
    print(f"{'model':<27}{'weights':<8}{'acts':<6}{'algorithm':<23}{'accuracy':>9}  {'95 % CI':<17}"
          f"{'seconds':>8}{'x nearest':>11}")
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.0f}x"
        print(f"{row['model']:<27}{row['bits']:<8}{row['activation']:<6}{row['algorithm']:<23}"
              f"{row['accuracy']:>8.2%}  [{row['ci95'][0]:.2%}, {row['ci95'][1]:.2%}] "
              f"{row['seconds']:>7.2f}{ratio:>11}")
    peers = list(QUOTED_PEERS)
    if args.peer_json:
        with open(args.peer_json) as handle:
            peers += json.load(handle)
    print("\npeers:")
    for peer in peers:
        what = f"  {peer['peer']}: {peer['model']} int{peer['bits']} weights / {peer.get('activation', 'int8')} acts, "
        if "error" in peer:
            print(what + f"FAILED {peer['error']}")
        else:
            print(what + f"{peer['accuracy']:.2%} in {peer['seconds']:.1f} s"
                  + (f" (load {peer['load']})" if "load" in peer else ""))
    print("\ntargets (issue 17):")
    for line in targets(rows, peers):
        print("  " + line)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "peers": peers, "load": [load_before, load_after]}, handle, indent=1)


if __name__ == "__main__":
    main()
