"""What the headless subcommands share about their arguments: option value types argparse cannot check by itself,
and the readers of MODEL/--data/--config (one place, so every subcommand accepts and refuses the same things)."""

from __future__ import annotations

import argparse
import json
import math

# -- option values argparse cannot check by itself ------------------------------------------------------------------
# Raising ArgumentTypeError lets argparse name the option: "argument --eval-size: must be ... got '0'".

def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _bounded(kind: type, low: float, inclusive: bool, what: str, doc: str):
    """An argparse type: a ``kind`` number at least ``low`` (above it when not ``inclusive``)."""

    def check(text: str):
        value = _number(text, kind)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    check.__doc__ = doc
    return check


positive_int = _bounded(int, 1, True, "a positive integer (at least 1)",
                        "An integer of at least 1 (a count of samples, threads, configurations, a batch size).")
non_negative_int = _bounded(int, 0, True, "0 or more", "An integer of at least 0 (a size where 0 means none).")
positive_float = _bounded(float, 0.0, False, "a number above 0", "A finite number above 0 (a time limit).")
non_negative_float = _bounded(float, 0.0, True, "0 or more", "A finite number of at least 0 (a tolerance).")


# One sample of 2^28 float32 values is 1 GiB: far beyond any image or sequence a CPU model is profiled on, and a
# shape above it is a typo (100000,100000,100000) that would fail allocating, or take the machine's memory.
MAX_SAMPLE_ELEMENTS = 1 << 28
# Latency is timed at batch 1 and one larger batch; beyond this a CPU measurement says nothing about deployment.
MAX_BATCH = 4096


def shape(text: str) -> tuple[int, ...]:
    """One sample's shape written like ``3,224,224`` (or ``3x224x224``): positive integers, at most
    ``MAX_SAMPLE_ELEMENTS`` values in all."""
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; write it like 3,224,224")
    if math.prod(dims) > MAX_SAMPLE_ELEMENTS:
        raise argparse.ArgumentTypeError(f"{text!r} is {math.prod(dims):,} values per sample, more than "
                                         f"{MAX_SAMPLE_ELEMENTS:,} (1 GiB of float32); check the shape")
    return dims


def batch_size(text: str) -> int:
    """A latency batch size: an integer from 1 to ``MAX_BATCH``."""
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH}, got {text!r}")
    return value


def arch_kwargs(text: str) -> dict:
    """``--arch-kwargs``: a JSON object of the architecture constructor's keyword arguments (plain data)."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON ({error.msg} at character {error.pos}); "
                                         "write an object like '{\"num_classes\": 10}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object; write it like '{{\"num_classes\": 10}}'")
    bad = next((key for key in value if not key.isidentifier()), None)
    if bad is not None:
        raise argparse.ArgumentTypeError(f"{bad!r} is not a keyword argument name")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand that opens a model takes, defined once: what builds a weights-only file, the
    consent to run code, and one sample's shape."""
    group = parser.add_argument_group("model options")
    group.add_argument("--architecture", help="what builds a weights-only file: a registry name "
                                              "(torchvision.resnet18, qtradeoff.digits_cnn) or package.module:callable "
                                              "(imports code: needs --trust)")
    group.add_argument("--arch-kwargs", type=arch_kwargs, metavar="JSON",
                       help="keyword arguments of the architecture's constructor, a JSON object "
                            "(e.g. '{\"num_classes\": 10}')")
    group.add_argument("--trust", action="store_true",
                       help="allow loading that can run code from the file or the architecture")
    group.add_argument("--input-shape", type=shape, metavar="SHAPE",
                       help="one sample's shape without the batch, e.g. 3,224,224 (default: from the file or data)")


def model_options(args: argparse.Namespace) -> dict:
    """The model options as keyword arguments of ``load_model`` (absent ones left out)."""
    found = {"trust": getattr(args, "trust", False), "architecture": getattr(args, "architecture", None),
             "arch_kwargs": getattr(args, "arch_kwargs", None), "input_shape": getattr(args, "input_shape", None)}
    return {key: value for key, value in found.items() if value is not None}


def engine_spec(args: argparse.Namespace):
    """The EngineSpec that a subcommand's MODEL, --data, model options and size options describe."""
    from qtradeoff.core.engine.engine import EngineSpec

    return EngineSpec(args.model, getattr(args, "data", None), eval_size=getattr(args, "eval_size", None),
                      calib_size=getattr(args, "calib_size", None), **model_options(args), **io_options(args))


def io_options(args: argparse.Namespace) -> dict:
    """EngineSpec fields of the data/model I/O options (qtradeoff.cli_io) a subcommand has."""
    # the scored output is --score-output (apply and recover use -o/--output for the file they write)
    names = {"label_column": "label_column", "score_output": "output", "input_spec": "input_spec"}
    found = {field: getattr(args, name) for name, field in names.items() if getattr(args, name, None) is not None}
    from qtradeoff.cli_io import data_options

    if data_options(args):
        found["data_options"] = data_options(args)
    return found


def precheck_config(args: argparse.Namespace) -> None:
    """Read and check ``--config`` on its own (file type, size, UTF-8, JSON, every field) before the model and
    data load, so a bad file fails in milliseconds; :func:`config_argument` then checks it against the model."""
    from qtradeoff.core.config import from_json_file

    if getattr(args, "config", None) is not None:
        from_json_file(args.config)


def config_argument(args: argparse.Namespace, layers):
    """The configuration ``--config`` names (fp32 when absent), checked against the model's ``layers``.

    Read by the core's one configuration-file reader: never blocks on a pipe or device, bounded in size, UTF-8
    only, duplicate keys refused; its errors name the file (exit 3)."""
    from qtradeoff.core.config import CompressionConfig, from_json_file

    if getattr(args, "config", None) is None:
        return CompressionConfig()
    return from_json_file(args.config, layers=layers)  # names, re: and type: selectors checked against the model
