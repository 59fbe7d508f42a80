"""``qtradeoff apply MODEL --config cfg.json --format F -o OUT``: write the configuration as a deployable model
file, verify it in a fresh process and print the verification (the report is also written to ``OUT.verify.json``).

A file that fails its verification is kept with its report, and the command exits 1 with the failed checks on one
line; other failures follow qtradeoff.core.errors' exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FORMAT_CHOICES = ("torch-int8", "packed", "onnx")


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``apply`` (used by qtradeoff.cli's subcommand registry)."""
    from qtradeoff.cli_args import add_model_options, positive_int

    parser.description = "Write a configuration as a compressed model file and verify it in a fresh process."
    parser.add_argument("model", help="model file, or the name of a bundled sample (e.g. digits_cnn)")
    parser.add_argument("--config", help="configuration JSON (qtradeoff.config/1; default: fp32)")
    parser.add_argument("--format", choices=FORMAT_CHOICES, dest="export_format",
                        help="torch-int8: TorchScript of the real int8 model (plain PyTorch loads it); packed: "
                             "safetensors with bit-packed weights (qtradeoff's loader rebuilds it); onnx: QDQ ONNX "
                             "(default: from the output's suffix, .pt / .safetensors / .onnx)")
    parser.add_argument("-o", "--output", required=True, help="file to write (its report goes to OUTPUT.verify.json)")
    parser.add_argument("--data", help="evaluation data: 'digits', an ImageFolder directory or a tensor file "
                                       "(default: the bundled sample data, for sample models)")
    parser.add_argument("--eval-size", type=positive_int, help="verify on the first N evaluation samples only")
    parser.add_argument("--calib-size", type=positive_int, help="use only the first N calibration samples")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the timed runs")
    parser.add_argument("--repeats", type=positive_int, default=20, help="timed repeats per batch size (default 20)")
    parser.add_argument("--no-verify", action="store_true", help="write the file without reloading it (the size "
                                                                 "is still checked)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--weights", help="recovered weights from qtradeoff recover (the configuration they were "
                                          "trained for is used when --config is not given)")
    add_model_options(parser)
    from qtradeoff.cli_io import add_io_options

    add_io_options(parser)  # the same data and input options as evaluate: a token model exports like an image one


SUFFIX_FORMATS = {".pt": "torch-int8", ".safetensors": "packed", ".onnx": "onnx"}


def _format_name(args: argparse.Namespace) -> str:
    from qtradeoff.core.errors import UsageError

    if args.export_format:
        return args.export_format
    name = SUFFIX_FORMATS.get(Path(args.output).suffix.lower())
    if name is None:
        raise UsageError(f"cannot tell the format of {args.output} from its suffix; give --format "
                         f"({', '.join(FORMAT_CHOICES)})")
    return name


def run(args: argparse.Namespace) -> int:
    """Run ``apply``; returns the exit code (failures are raised, for qtradeoff.cli's wrapper to report)."""
    if Path(args.model).is_file():
        from qtradeoff.core.loading import _load_child

        _load_child.SERVER.start()  # the isolated test-load imports torch while this process does
    from qtradeoff.cli_args import config_argument, engine_spec, precheck_config
    from qtradeoff.core import export as export_mod

    precheck_config(args)
    out = export_mod.check_destination(Path(args.output))
    engine = engine_spec(args).build()
    config = config_argument(args, engine.layers)
    if args.weights:
        from qtradeoff.core.recovery.recovered_weights import with_recovered_weights

        engine, config = with_recovered_weights(engine, args.weights, config if args.config else None)
    fmt = export_mod.get_format(_format_name(args))
    progress = None
    if sys.stderr.isatty() and not args.json:
        from tqdm import tqdm

        progress = tqdm(total=3, file=sys.stderr, leave=False)
    report = None
    try:
        for item in export_mod.export_iter(engine, config, fmt.name, out, verify=not args.no_verify,
                                           threads=args.threads, repeats=args.repeats):
            if isinstance(item, export_mod.verify_report_type()):
                report = item
            elif progress is not None:
                progress.n = item.done
                progress.set_description(item.stage)
                progress.refresh()
    finally:
        if progress is not None:
            progress.close()
    from qtradeoff.core.export.verify import format_report

    print(json.dumps(report.to_dict(), sort_keys=True) if args.json else format_report(report))
    sys.stdout.flush()
    export_mod.raise_for_report(report)
    return 0
