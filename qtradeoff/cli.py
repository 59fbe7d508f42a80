"""The ``qtradeoff`` command: with no subcommand it opens the desktop app (optionally on a model file); the
headless subcommands (``inspect``, ``evaluate``, ``sweep``…) register themselves in ``SUBCOMMANDS``.

Every subcommand runs inside one wrapper, :func:`run_guarded`: an expected failure (a
:class:`~qtradeoff.core.errors.QtradeoffError`, an ``OSError`` on a named file, Ctrl+C) becomes one line
``qtradeoff <command>: error: <message>`` on stderr and the exit code documented in :mod:`qtradeoff.core.errors`;
anything else is a bug and keeps its traceback. The argparse ``type=`` checks below are shared by every subcommand.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence

from qtradeoff.core.errors import CancelledError, InputError, QtradeoffError, UsageError

EXIT_CODES_HELP = ("exit codes: 0 done, 2 bad option or value, 3 bad input file (model, data, config, results), "
                   "4 the model needs --trust, 130 interrupted, 1 a bug (with its traceback)")

# name -> (configure(subparser), run(args) -> exit code). Headless commands add themselves here.
SUBCOMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


# -- one way to fail -----------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse's parser, but a bad option raises UsageError so that it is reported like every other failure:
    one line, exit code 2 (argparse's own code)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def escaped(text: str) -> str:
    """``text`` with every non-printable character written as its Python escape (a newline becomes ``\\n``)."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def one_line(message: str, names: Iterable[str] = ()) -> str:
    """``message`` on one line: the user's own names (file paths…) escaped, so that a file called ``a\\nb`` reads
    as that, then any other run of whitespace collapsed to one space."""
    odd = {part for name in names if isinstance(name, str) and not name.isprintable()
           for part in (name, os.path.basename(name)) if part and not part.isprintable()}
    for name in sorted(odd, key=len, reverse=True):  # a whole path before its last component
        message = message.replace(name, escaped(name))
    return escaped(" ".join(message.split()))


def _describe_os_error(error: OSError) -> str:
    names = [os.fsdecode(name) if isinstance(name, bytes | str) else str(name)
             for name in (error.filename, error.filename2) if name is not None]
    return f"{' -> '.join(names)}: {error.strerror or type(error).__name__}"


def report(error: BaseException, prog: str, names: Iterable[str] = ()) -> int:
    """Print ``error`` as one line on stderr and return its exit code (for an expected failure)."""
    if isinstance(error, KeyboardInterrupt):
        error = CancelledError("interrupted")
    elif isinstance(error, OSError) and not isinstance(error, QtradeoffError):
        error = InputError(_describe_os_error(error))
    message = str(error) or type(error).__name__
    print(f"{prog}: error: {one_line(message, names)}", file=sys.stderr)
    sys.stderr.flush()
    return error.exit_code if isinstance(error, QtradeoffError) else 1


def run_guarded(prog: str, action: Callable[[], int | None], names: Iterable[str] = ()) -> int:
    """Run ``action`` and return its exit code, or report an expected failure (see the module docstring).

    ``names`` are the strings the user typed (file names among them), escaped wherever a message repeats them.
    An OSError that names no file, like any other exception, is not expected and propagates with its traceback.
    """
    try:
        return int(action() or 0)
    except (QtradeoffError, KeyboardInterrupt) as error:
        return report(error, prog, names)
    except OSError as error:
        if error.filename is None:
            raise
        return report(error, prog, names)


# -- the command ---------------------------------------------------------------------------------------------------

def _register_builtin_commands() -> None:
    from qtradeoff.cli_inspect import configure_inspect, inspect_command  # light: imports torch only when run

    SUBCOMMANDS.setdefault("inspect", (configure_inspect, inspect_command))
    from qtradeoff.cli_evaluate import configure as configure_evaluate  # light: imports torch only when run
    from qtradeoff.cli_evaluate import run as evaluate_command

    SUBCOMMANDS.setdefault("evaluate", (configure_evaluate, evaluate_command))
    from qtradeoff import cli_sweep  # light: imports torch only when run

    SUBCOMMANDS.setdefault("sweep", (cli_sweep.configure, cli_sweep.run))
    from qtradeoff import cli_apply  # light: imports torch only when run

    SUBCOMMANDS.setdefault("apply", (cli_apply.configure, cli_apply.run))
    from qtradeoff import cli_recover  # light: imports torch only when run

    SUBCOMMANDS.setdefault("recover", (cli_recover.configure, cli_recover.run))


_register_builtin_commands()


def _gui_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qtradeoff",
        description="Explore the accuracy–speed–size trade-offs of quantizing and pruning a neural network. "
                    "Without a subcommand, opens the desktop app.",
        epilog=(("subcommands: " + ", ".join(sorted(SUBCOMMANDS)) + "; ") if SUBCOMMANDS else "") + EXIT_CODES_HELP,
    )
    parser.add_argument("model", nargs="?", help="model file to open (default: the bundled digits_cnn sample)")
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` alone (building the others' would import what they need for nothing)."""
    parser = _Parser(prog=f"qtradeoff {name}", epilog=EXIT_CODES_HELP)
    SUBCOMMANDS[name][0](parser)
    parser.set_defaults(command=name)
    return parser


def _run_subcommand(name: str, argv: Sequence[str]) -> int | None:
    args = command_parser(name).parse_args(argv)
    return SUBCOMMANDS[name][1](args)


def _start_loader_early(name: str, argv: Sequence[str]) -> None:
    """Start the isolated loader process now when the command will load a model file (its first argument) or a
    data file (``--data``, also test-read in the loader): the loader imports torch too, and started before this
    process imports it the two imports overlap instead of running one after the other (the loader's import was
    most of ``inspect``'s time beyond ``import torch``)."""
    if name not in ("inspect", "evaluate", "apply", "recover") or not argv or argv[0].startswith("-"):
        return
    data = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--data"), None)
    data = data or next((arg.partition("=")[2] for arg in argv if arg.startswith("--data=")), None)
    # a sample's name, or a missing file the command will report; a data folder is not test-read
    if not os.path.isfile(argv[0]) and not (data and os.path.isfile(data)):
        return
    from qtradeoff.core.loading import _files, _load_child  # no torch: only the process handle

    if not (data and os.path.isfile(data)) and _files.is_bundled_sample(argv[0]):
        return  # a bundled sample's own bytes load without the loader (model_io.load_model)

    try:
        _load_child.SERVER.start()
    except OSError:
        pass  # the command starts it again when it loads, and reports a failure there


def main(argv: Sequence[str] | None = None) -> int:
    from qtradeoff.core.runtime import tune_allocator

    tune_allocator()  # before any tensor is allocated: forwards run 2-4x faster without re-faulting their buffers
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        name = argv[0]
        _start_loader_early(name, argv[1:])
        return run_guarded(f"qtradeoff {name}", lambda: _run_subcommand(name, argv[1:]), names=argv)
    try:
        args = _gui_parser().parse_args(argv)
    except UsageError as error:
        return report(error, "qtradeoff", argv)
    from qtradeoff.gui.app import run_gui

    return run_gui(sys.argv[:1], model_path=args.model)


if __name__ == "__main__":
    raise SystemExit(main())
