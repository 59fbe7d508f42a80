"""``qtradeoff evaluate MODEL``: measure one configuration headless and print the Result (table or JSON).

Exit codes as documented in qtradeoff.core.errors (0 done, 2 bad option, 3 bad model/data/config file, 4 needs
``--trust``, 130 interrupted); qtradeoff.cli's wrapper prints every expected failure as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# --eval-size auto aims at one evaluation of about this long unless --target-seconds says otherwise
DEFAULT_TARGET_SECONDS = 60.0


def eval_size_argument(text: str):
    """``--eval-size``: a positive number of samples, or ``auto`` (the engine proposes one for the time target)."""
    from qtradeoff.cli_args import positive_int

    if text.strip().lower() == "auto":
        return "auto"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'auto', got {text!r}") from None


RUNTIMES = ("torch", "onnxruntime", "openvino")


def runtimes_argument(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in RUNTIMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown runtime {', '.join(unknown) or text!r}; choose from "
                                         f"{', '.join(RUNTIMES)}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``evaluate`` (used by qtradeoff.cli's subcommand registry)."""
    from qtradeoff.cli_args import add_model_options, batch_size, positive_float, positive_int

    parser.description = "Evaluate one compression configuration: accuracy, memory and latency."
    parser.add_argument("model", help="model file, or the name of a bundled sample (e.g. digits_cnn)")
    add_model_options(parser)
    parser.add_argument("--data", help="evaluation data: 'digits', an ImageFolder directory, a tensor file "
                                       "(.pt/.npz/safetensors), a .npy array (inputs only), a .csv table, a folder of "
                                       "wav files per class or a dataset hook package.module:callable (needs --trust) "
                                       "(default: the bundled sample data, for sample models)")
    parser.add_argument("--config", help="configuration JSON (default: fp32, i.e. the unmodified model)")
    from qtradeoff.cli_io import add_io_options

    add_io_options(parser)
    parser.add_argument("--batch", type=batch_size, default=32,
                        help="second latency batch size besides 1 (default 32)")
    parser.add_argument("--latency", choices=("both", "measured", "estimated", "none"), default="both",
                        help="which latency figures to produce (default both)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for timing (default: the physical cores, minus one when other work runs)")
    parser.add_argument("--runtime", type=runtimes_argument, default=("torch",),
                        help="runtimes to time on, comma-separated: torch, onnxruntime, openvino (default torch; the "
                             "others time the configuration exported as ONNX, interleaved with the fp32 model)")
    parser.add_argument("--eval-size", type=eval_size_argument, default=None,
                        help="use only the first N evaluation samples, or 'auto': as many as keep the estimated "
                             "evaluation time near --target-seconds (at least 100 where the split has them)")
    parser.add_argument("--target-seconds", type=positive_float, default=None,
                        help=f"time target of --eval-size auto (default {DEFAULT_TARGET_SECONDS:g}); implies auto "
                             "when --eval-size is not given")
    parser.add_argument("--calib-size", type=positive_int, help="use only the first N calibration samples")
    parser.add_argument("--json", action="store_true", help="print the Result as JSON instead of a table")
    parser.add_argument("--weights", help="recovered weights from qtradeoff recover (the configuration they were "
                                          "trained for is used when --config is not given)")
    parser.add_argument("--export", metavar="PATH", help="also write the configuration file (qtradeoff.config/1) "
                                                         "with the measured metrics and environment")


def _percent(value, ci) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}%  [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}] 95% CI"


def format_table(result) -> str:
    """Human-readable summary of a Result."""
    from qtradeoff.core.loading.model_io import human_bytes

    lines = []
    if result.labelled:
        lines.append(f"accuracy (top-1)   {_percent(result.accuracy, result.accuracy_ci95)}")
        if result.top5 is not None:
            lines.append(f"accuracy (top-5)   {_percent(result.top5, result.top5_ci95)}")
    elif (result.provenance.get("data") or {}).get("synthetic"):
        lines.append("accuracy           n/a: fidelity on synthetic inputs "
                     f"({result.provenance['data'].get('input', {}).get('text', '')}) below")
    else:
        lines.append("accuracy           n/a (no labels): fidelity vs fp32 below")
    lines.append(f"agreement w/ fp32  {_percent(result.agreement, result.agreement_ci95)}")
    sqnr = "inf (identical to fp32)" if math.isinf(result.sqnr_db) else f"{result.sqnr_db:.1f} dB"
    lines.append(f"output SQNR        {sqnr}")
    prov = result.provenance
    fidelity = prov.get("fidelity") or {}
    if fidelity.get("mse") is not None:
        cosine = fidelity.get("cosine")
        lines.append(f"output MSE         {fidelity['mse']:.4g} vs fp32, cosine similarity "
                     + ("n/a" if cosine is None else f"{cosine:.6f}"))
    chosen = prov.get("output")
    if chosen and chosen.get("structured"):
        others = ", ".join(f"{o['name']} {o['shape']}" for o in chosen.get("others", ())) or "none"
        lines.append(f"scored output      {chosen['scored']} (others: {others}; choose with --score-output)")
    lines.append(f"evaluated on       {result.eval_samples} samples")
    lines.append(f"weights            {human_bytes(result.weight_bytes)} ({result.weight_bytes} B; fp32 "
                 f"{result.fp32_weight_bytes} B, {result.compression_ratio:.2f}x smaller)" + int8_count(result))
    lines.append(f"peak activations   {human_bytes(result.peak_activation_bytes)} at batch 1")
    for stats in result.latency_measured:
        lines.append(f"latency measured   batch {stats.batch:>3}: {stats.median_ms:.3f} ms median, "
                     f"IQR {stats.iqr_ms:.3f} ms, {stats.repeats} repeats"
                     + (f", {stats.fp32_ratio:.2f}x fp32 (interleaved, ±{stats.ratio_spread:.0%} at 95 %"
                        + ("" if stats.ratio_converged else ", not converged in its time budget") + ")"
                        if stats.fp32_ratio is not None else "")
                     + (f"  NOISY (spread {max(stats.spread, stats.ratio_spread):.0%} of the median; rerun on an "
                        "idle machine)" if stats.noisy else ""))
    for runtime, runtime_stats in result.latency_by_runtime.items():
        for stats in runtime_stats:
            lines.append(f"latency {runtime:<16} batch {stats.batch:>3}: {stats.median_ms:.3f} ms median, "
                         f"IQR {stats.iqr_ms:.3f} ms, {stats.repeats} rounds" + ("  NOISY" if stats.noisy else ""))
    calibration = ((result.provenance or {}).get("roofline") or {}).get("calibration")
    for stats in result.latency_estimated:
        lines.append(f"latency estimated  batch {stats.batch:>3}: {stats.median_ms:.3f} ms (roofline estimate)")
    if result.latency_estimated and calibration:
        lines.append(f"roofline           {calibration}")
    if result.executed_precisions:
        counts: dict[str, int] = {}
        for precision in result.executed_precisions.values():
            counts[precision] = counts.get(precision, 0) + 1
        lines.append("executed as        " + ", ".join(f"{n} layers {p}" for p, n in sorted(counts.items())))
    if result.measured_note:
        lines.append(f"note               {result.measured_note}")
    for kept in prov.get("fp32_layers") or ():
        lines.append(f"kept fp32          {kept['name']}: {kept['reason']}")
    for note in prov.get("simulation_notes") or ():
        lines.append(f"simulation         {note}")
    for warning in prov.get("warnings") or ():
        lines.append(f"warning            {warning}")
    lines.append(f"environment        torch {prov.get('torch')}, {prov.get('cpu')}, {prov.get('threads')} threads")
    return "\n".join(lines)


def int8_count(result) -> str:
    """``"; 20 of 21 layers ran on int8 kernels"`` beside the memory figure, when layers were measured for real
    (counted bytes do not say that the kernels were int8: a TorchScript model may have run them all in fp32)."""
    executed = result.executed_precisions or {}
    if not executed:
        return ""
    int8 = sum(1 for precision in executed.values() if precision.startswith("int8"))
    return f"; {int8} of {len(executed)} layers ran on int8 kernels"


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; returns the exit code (failures are raised, for qtradeoff.cli's wrapper to report)."""
    if Path(args.model).is_file():
        from qtradeoff.core.loading import _load_child

        # the isolated test-load's process imports torch (1-2 s, more under load) while this one does
        _load_child.SERVER.start()
    import torch

    from qtradeoff.cli_args import config_argument, engine_spec, precheck_config
    from qtradeoff.core.engine.measure import Cancelled, Progress, Result
    from qtradeoff.core.measurement.latency import LatencySettings

    precheck_config(args)
    auto = args.eval_size == "auto" or (args.eval_size is None and args.target_seconds is not None)
    if auto:
        args.eval_size = None  # the whole split loads; the engine picks how much of it to evaluate
    engine = engine_spec(args).build()
    config = config_argument(args, engine.layers)
    if args.weights:
        from qtradeoff.core.recovery.recovered_weights import with_recovered_weights

        engine, config = with_recovered_weights(engine, args.weights, config if args.config else None)
    _check_batch_fits(args.batch, engine.data.input_shape)
    batches = (1,) if args.batch == 1 else (1, args.batch)
    # without --threads the engine picks the timing threads (and states them in the Result's provenance)
    settings = LatencySettings(batch_sizes=batches, threads=args.threads)
    eval_size, subset_note = _choose_subset(engine, config, args, settings, auto)
    result = None
    progress = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        progress = tqdm(total=100, unit="%", file=sys.stderr, leave=False)
    for item in engine.evaluate_iter(config, latency=args.latency, latency_settings=settings, eval_size=eval_size,
                                     subset_note=subset_note):
        if isinstance(item, Result):
            result = item
        elif isinstance(item, Progress) and progress is not None:
            progress.set_description(item.stage)
            progress.update(round(100 * item.fraction) - progress.n)
    if progress is not None:
        progress.close()
    if result is None:
        raise Cancelled("evaluation cancelled")
    others = tuple(r for r in args.runtime if r != "torch")
    if others and args.latency in ("both", "measured"):
        from qtradeoff.core.export.onnx_format import with_runtime_latency

        threads = args.threads or result.provenance.get("threads") or torch.get_num_threads()
        result = with_runtime_latency(engine, config, result, others, batches=batches, threads=threads)
    if args.export:
        _export(args.export, config, result, engine.loaded)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
    else:
        print(format_table(result))
    return 0


def _choose_subset(engine, config, args: argparse.Namespace, settings, auto: bool) -> tuple[int, dict]:
    """The evaluation size to run (proposed for the time target with ``auto``), after saying on stderr what the
    run is estimated to take when that is long, and warning when its memory estimate is near the RAM available."""
    target = args.target_seconds if args.target_seconds is not None else DEFAULT_TARGET_SECONDS
    note: dict = {"proposed": auto}
    if auto:
        samples = engine.propose_eval_size(target, config, latency=args.latency, latency_settings=settings)
        note["target_seconds"] = target
    else:
        samples = engine.eval_samples
    estimate = engine.estimate_seconds(config, samples, latency=args.latency, latency_settings=settings)
    note["estimate"] = estimate.to_dict()
    if auto:
        print(f"qtradeoff evaluate: --eval-size auto: {samples} of {engine.eval_samples} evaluation samples for a "
              f"target of {target:g} s", file=sys.stderr)
    if estimate.noteworthy or auto:
        print(f"qtradeoff evaluate: {estimate.describe()}", file=sys.stderr)
    warning = engine.memory_estimate(samples).warning()
    if warning:
        print(f"qtradeoff evaluate: warning: {warning}", file=sys.stderr)
    return samples, note


def _check_batch_fits(batch: int, input_shape) -> None:
    """Refuse a --batch whose input tensor alone would not fit the memory budget (activations need more still),
    before the latency run would fail allocating it."""
    from qtradeoff.core.errors import UsageError
    from qtradeoff.core.loading._files import human_bytes, memory_budget

    needed = batch * math.prod(input_shape) * 4
    budget = memory_budget()
    if needed > budget:
        raise UsageError(f"argument --batch: a batch of {batch} inputs of shape {tuple(input_shape)} takes "
                         f"{human_bytes(needed)}, more than the memory budget of {human_bytes(budget)}; "
                         "choose a smaller batch")


def _export(path: str, config, result, loaded) -> None:
    """Write the configuration file the GUI's File → Export writes, atomically (a failed write leaves no file)."""
    import os

    from qtradeoff.core.config import ModelRef
    from qtradeoff.core.engine.report import config_document

    if config.model is None:
        config = config.with_model(ModelRef(Path(loaded.path).name, loaded.sha256, loaded.format))
    from qtradeoff.core.errors import InputError

    target = Path(path)
    if target.is_dir():
        raise InputError(f"{path} is a folder; give --export a file name (e.g. {target / 'config.json'})")
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        scratch.write_text(config_document(config, result) + "\n", encoding="utf-8")
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
