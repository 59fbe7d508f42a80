"""The ``qtradeoff`` command: with no subcommand it opens the desktop app (optionally on a model file); the
headless subcommands (``inspect``, ``evaluate``, ``sweep``…) register themselves in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

# name -> (configure(subparser), run(args) -> exit code). Headless commands add themselves here.
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def _register_builtin_commands() -> None:
    from qtradeoff.cli_inspect import configure_inspect, inspect_command  # light: imports torch only when run

    SUBCOMMANDS.setdefault("inspect", (configure_inspect, inspect_command))
    from qtradeoff.cli_evaluate import configure as configure_evaluate  # light: imports torch only when run
    from qtradeoff.cli_evaluate import run as evaluate_command

    SUBCOMMANDS.setdefault("evaluate", (configure_evaluate, evaluate_command))
    from qtradeoff import cli_sweep  # light: imports torch only when run

    SUBCOMMANDS.setdefault("sweep", (cli_sweep.configure, cli_sweep.run))


_register_builtin_commands()


def _gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qtradeoff",
        description="Explore the accuracy–speed–size trade-offs of quantizing and pruning a neural network. "
                    "Without a subcommand, opens the desktop app.",
        epilog=("subcommands: " + ", ".join(sorted(SUBCOMMANDS))) if SUBCOMMANDS else None,
    )
    parser.add_argument("model", nargs="?", help="model file to open (default: the bundled digits_cnn sample)")
    return parser


def _command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtradeoff")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, _run) in SUBCOMMANDS.items():
        configure(sub.add_parser(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from qtradeoff.core.runtime import tune_allocator

    tune_allocator()  # before any tensor is allocated: forwards run 2-4x faster without re-faulting their buffers
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        args = _command_parser().parse_args(argv)
        return int(SUBCOMMANDS[args.command][1](args) or 0)
    args = _gui_parser().parse_args(argv)
    from qtradeoff.gui.app import run_gui

    return run_gui(sys.argv[:1], model_path=args.model)


if __name__ == "__main__":
    raise SystemExit(main())
