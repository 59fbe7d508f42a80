"""``qtradeoff recover MODEL --config cfg.json -o weights.safetensors``: fine-tune a compressed configuration for a
bounded number of steps with distillation from the fp32 model, write the recovered weights, and print the accuracy
before and after on the evaluation split (which training never sees).

``evaluate`` and ``apply`` take the file with ``--weights``. Exit codes as in qtradeoff.core.errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TRAIN_SPLITS = ("calib", "train")


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``recover`` (used by qtradeoff.cli's subcommand registry)."""
    from qtradeoff.cli_args import add_model_options, non_negative_float, positive_float, positive_int

    parser.description = ("Fine-tune a compressed configuration (fake-quant with a straight-through estimator, "
                          "pruning masks kept, distillation from the fp32 model) and write the recovered weights.")
    parser.add_argument("model", help="model file, or the name of a bundled sample (e.g. digits_cnn)")
    parser.add_argument("--config", help="configuration JSON (qtradeoff.config/1) to recover")
    parser.add_argument("-o", "--output", required=True, help="recovered weights to write (.safetensors)")
    parser.add_argument("--data", help="data: 'digits', an ImageFolder directory or a tensor file (default: the "
                                       "bundled sample data, for sample models)")
    parser.add_argument("--train-split", choices=TRAIN_SPLITS, default="calib",
                        help="what to train on: the calibration split (default) or, for the bundled digits, their "
                             "train split; never the evaluation split")
    parser.add_argument("--epochs", type=positive_int, default=None, help="passes over the training split "
                                                                          "(default 30)")
    parser.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (wins over --epochs)")
    parser.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="training batch size (default 32)")
    parser.add_argument("--temperature", type=positive_float, default=None, help="distillation temperature "
                                                                                 "(default 2)")
    parser.add_argument("--label-weight", type=non_negative_float, default=None,
                        help="weight of the label loss beside distillation, 0..1 (default 0.5; unused without labels)")
    parser.add_argument("--time-limit", type=non_negative_float, default=60.0,
                        help="stop training after this many seconds (default 60; 0: no limit)")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for training (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order (default 0)")
    parser.add_argument("--eval-size", type=positive_int, help="report accuracy on the first N evaluation samples")
    parser.add_argument("--calib-size", type=positive_int, help="use only the first N calibration samples")
    parser.add_argument("--no-eval", action="store_true", help="write the weights without evaluating them")
    add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def settings_from_args(args: argparse.Namespace):
    from qtradeoff.core.errors import UsageError
    from qtradeoff.core.recovery.qat import RecoverySettings

    values = {name: getattr(args, name) for name in ("epochs", "steps", "lr", "batch_size", "temperature",
                                                      "label_weight", "threads", "seed")
              if getattr(args, name, None) is not None}
    if args.label_weight is not None and args.label_weight > 1:
        raise UsageError(f"argument --label-weight: must be between 0 and 1, got {args.label_weight:g}")
    values["time_limit_s"] = args.time_limit or None
    return RecoverySettings(**values)


def _train_data(args: argparse.Namespace, engine):
    """``(inputs, labels, split name)`` to train on; the evaluation split is never among them."""
    from qtradeoff.core.errors import UsageError

    if args.train_split == "calib":
        return engine.data.calib_inputs, engine.data.calib_labels, "calibration"
    preprocessing = getattr(engine.loaded, "preprocessing", None)
    if engine.data.name != "digits" or preprocessing is None:
        raise UsageError("--train-split train exists only for the bundled digits data; other data trains on its "
                         "calibration split")
    from qtradeoff.core.loading.data import digits_split

    inputs, labels = digits_split("train", preprocessing)
    return inputs, labels, "train"


def run(args: argparse.Namespace) -> int:
    """Run ``recover``; returns the exit code (failures are raised, for qtradeoff.cli's wrapper to report)."""
    if Path(args.model).is_file():
        from qtradeoff.core.loading import _load_child

        _load_child.SERVER.start()
    from qtradeoff.cli_args import config_argument, engine_spec, precheck_config
    from qtradeoff.core.errors import CancelledError, InputError, UsageError

    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"{args.output} is a folder; give -o a file name (e.g. {out / 'recovered.safetensors'})")
    precheck_config(args)
    settings = settings_from_args(args)
    engine = engine_spec(args).build()
    if args.config is None:
        raise UsageError("give the configuration to recover with --config (an fp32 model has nothing to recover)")
    config = config_argument(args, engine.layers)
    inputs, labels, split = _train_data(args, engine)

    from qtradeoff.core.recovery.qat import RecoveryProgress, recover_iter
    from qtradeoff.core.recovery.recovered_weights import RecoveredWeights, recovered_engine, save_recovered

    talk = not args.json
    if talk:
        print(f"training on the {split} split ({len(inputs)} samples{', labelled' if labels is not None else ''}); "
              f"the {engine.eval_samples} evaluation samples are never trained on", file=sys.stderr)
    progress = None
    if sys.stderr.isatty() and talk:
        from tqdm import tqdm

        progress = tqdm(total=settings.total_steps(len(inputs)), unit="step", file=sys.stderr, leave=False)
    weights = None
    try:
        for item in recover_iter(engine, config, settings, inputs=inputs, labels=labels, split=split):
            if isinstance(item, RecoveredWeights):
                weights = item
            elif isinstance(item, RecoveryProgress) and progress is not None:
                progress.set_postfix(loss=f"{item.loss:.3f}")
                progress.update(item.done - progress.n)
    finally:
        if progress is not None:
            progress.close()
    if weights is None:
        raise CancelledError("recovery cancelled")
    from qtradeoff.core.config import ModelRef

    loaded = engine.loaded
    weights.model_file = Path(str(getattr(loaded, "path", "") or loaded.name)).name
    if weights.config.model is None:
        weights.config = weights.config.with_model(ModelRef(weights.model_file, loaded.sha256, loaded.format))
    save_recovered(weights, out)
    summary = {"output": str(out), "training": weights.training}
    if not args.no_eval:
        before = engine.evaluate(config, latency="none", eval_size=args.eval_size)
        after = recovered_engine(engine, weights, config).evaluate(config, latency="none", eval_size=args.eval_size)
        summary["before"], summary["after"] = _scores(before), _scores(after)
    if args.json:
        print(json.dumps(summary, sort_keys=True, allow_nan=False))
    else:
        print(format_summary(summary))
    return 0


def _scores(result) -> dict:
    return {"accuracy": result.accuracy, "accuracy_ci95": result.accuracy_ci95, "agreement": result.agreement,
            "eval_samples": result.eval_samples, "labelled": result.labelled}


def _percent(value, ci) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f}%  [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}] 95% CI"


def format_summary(summary: dict) -> str:
    training = summary["training"]
    first, last = training.get("first_loss"), training.get("last_loss")
    lines = [f"trained on         {training['split']} split, {training['samples']} samples (never the evaluation "
             "split)",
             f"steps              {training['steps']} of {training['planned_steps']} in {training['seconds']:.1f} s"
             + (f" (stopped: {training['stopped_early']})" if training.get("stopped_early") else ""),
             f"loss               {first:.4f} -> {last:.4f}" if first is not None and last is not None else
             "loss               n/a"]
    for name in ("before", "after"):
        scores = summary.get(name)
        if scores is None:
            continue
        label = "accuracy" if scores["labelled"] else "agreement w/ fp32"
        value = scores["accuracy"] if scores["labelled"] else scores["agreement"]
        ci = scores["accuracy_ci95"] if scores["labelled"] else None
        shown = _percent(value, ci) if ci else f"{100 * value:.2f}%"
        lines.append(f"{label} {name:<7} {shown} on {scores['eval_samples']} evaluation samples")
    if training.get("kept"):
        lines.append(f"kept               {training['kept']}")
    if training.get("left_as_ptq"):
        lines.append("not fine-tuned     " + ", ".join(training["left_as_ptq"]) + " (layer type not trainable)")
    lines.append(f"wrote              {summary['output']}")
    return "\n".join(lines)
