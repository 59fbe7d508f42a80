"""Every subcommand fails the same way: one line on stderr, ``qtradeoff <cmd>: error: …``, and the exit code
documented in qtradeoff.core.errors, whatever the command. A bug keeps its traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from qtradeoff import cli, cli_args
from qtradeoff.core.errors import (
    EXIT_CANCELLED,
    EXIT_INPUT,
    EXIT_NEEDS_TRUST,
    EXIT_USAGE,
    CancelledError,
    InputError,
    NeedsTrustError,
    QtradeoffError,
    UsageError,
    exit_code_of,
)
from qtradeoff.core.loading.model_io import SAMPLE_DIR

COMMANDS = sorted(cli.SUBCOMMANDS)
# A value each shared check rejects, so a bad option value can be built for any subcommand, present or future.
BAD_VALUES = {cli_args.positive_int: "0", cli_args.non_negative_int: "-1", cli_args.positive_float: "0",
              cli_args.non_negative_float: "-1", cli_args.shape: "3,a"}


def _actions(name: str) -> list[argparse.Action]:
    return cli.command_parser(name)._actions


def _argv(name: str, first: str, tmp_path, *extra: str) -> list[str]:
    """``name first`` plus a harmless value for every other required option (e.g. sweep's --out)."""
    argv = [name, first]
    for action in _actions(name):
        if action.required and action.option_strings:
            argv += [action.option_strings[0], str(tmp_path / f"{action.dest}.out")]
    return argv + list(extra)


def _has_option(name: str, option: str) -> bool:
    return any(option in action.option_strings for action in _actions(name))


def _one_error_line(capsys, name: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"qtradeoff {name}: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("name", COMMANDS)
def test_a_missing_model_file_is_an_input_error_everywhere(name, tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert cli.main(_argv(name, str(missing), tmp_path)) == EXIT_INPUT
    assert str(missing) in _one_error_line(capsys, name)


@pytest.mark.parametrize("name", COMMANDS)
def test_a_file_name_with_a_newline_stays_on_one_line_escaped(name, tmp_path, capsys):
    missing = tmp_path / "two\nlines.pt"
    assert cli.main(_argv(name, str(missing), tmp_path)) == EXIT_INPUT
    assert "two\\nlines.pt" in _one_error_line(capsys, name)


@pytest.mark.parametrize("name", COMMANDS)
def test_a_model_file_that_is_a_directory_is_an_input_error(name, tmp_path, capsys):
    assert cli.main(_argv(name, str(tmp_path), tmp_path)) == EXIT_INPUT
    assert str(tmp_path) in _one_error_line(capsys, name)


@pytest.mark.parametrize("name", [name for name in COMMANDS if _has_option(name, "--config")])
@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema": "qtradeoff.config/1", "defaults": 3})])
def test_a_bad_config_file_is_an_input_error_naming_the_file(name, content, tmp_path, capsys):
    config = tmp_path / "broken.json"
    config.write_text(content)
    assert cli.main(_argv(name, "digits_mlp", tmp_path, "--config", str(config))) == EXIT_INPUT
    assert str(config) in _one_error_line(capsys, name)


@pytest.mark.parametrize("name", [name for name in COMMANDS if _has_option(name, "--config")])
def test_a_missing_config_file_is_an_input_error_naming_the_file(name, tmp_path, capsys):
    config = tmp_path / "absent.json"
    assert cli.main(_argv(name, "digits_mlp", tmp_path, "--config", str(config))) == EXIT_INPUT
    line = _one_error_line(capsys, name)
    assert str(config) in line and "No such file" in line


def test_every_subcommand_has_a_checked_option():
    for name in COMMANDS:
        assert any(action.type in BAD_VALUES for action in _actions(name)), name


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_option_value_is_a_usage_error_naming_the_option(name, tmp_path, capsys):
    for action in _actions(name):
        if action.type in BAD_VALUES:
            option, value = action.option_strings[0], BAD_VALUES[action.type]
            assert cli.main(_argv(name, "digits_mlp", tmp_path, option, value)) == EXIT_USAGE, option
            line = _one_error_line(capsys, name)
            assert f"argument {option}" in line and repr(value) in line


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_option_and_a_missing_argument_are_usage_errors(name, tmp_path, capsys):
    assert cli.main(_argv(name, "digits_mlp", tmp_path, "--no-such-option")) == EXIT_USAGE
    assert "--no-such-option" in _one_error_line(capsys, name)
    assert cli.main([name]) == EXIT_USAGE
    assert "required" in _one_error_line(capsys, name)


@pytest.mark.parametrize(("argv", "option"), [
    (["evaluate", "digits_mlp", "--eval-size", "0"], "--eval-size"),
    (["evaluate", "digits_mlp", "--eval-size", "-5"], "--eval-size"),
    (["evaluate", "digits_mlp", "--batch", "0"], "--batch"),
    (["evaluate", "digits_mlp", "--threads", "-1"], "--threads"),
    (["evaluate", "digits_mlp", "--threads", "two"], "--threads"),
    (["sweep", "digits_mlp", "--out", "x.jsonl", "--eval-size", "0"], "--eval-size"),
    (["sweep", "digits_mlp", "--out", "x.jsonl", "--budget", "-1"], "--budget"),
    (["sweep", "digits_mlp", "--out", "x.jsonl", "--max-drop", "nan"], "--max-drop"),
    (["sweep", "digits_mlp", "--out", "x.jsonl", "--max-ms", "0"], "--max-ms"),
    (["sweep", "digits_mlp", "--out", "x.jsonl", "--cache-mb", "-1"], "--cache-mb"),
    (["inspect", "model.pt", "--input-shape", "3,0,8"], "--input-shape"),
])
def test_values_argparse_cannot_check_are_rejected_before_any_work(argv, option, capsys):
    assert cli.main(argv) == EXIT_USAGE
    assert f"argument {option}" in _one_error_line(capsys, argv[0])


def test_a_budget_search_without_a_budget_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["sweep", "digits_mlp", "--strategy", "budget", "--out", str(tmp_path / "o.jsonl")]) == EXIT_USAGE
    assert "--max-bytes" in _one_error_line(capsys, "sweep")


def test_needs_trust_has_its_own_code_and_line(capsys):
    path = SAMPLE_DIR / "digits_cnn.torchscript.pt"
    assert cli.main(["inspect", str(path)]) == EXIT_NEEDS_TRUST
    captured = capsys.readouterr()
    assert "needs --trust" in captured.out  # the verdict the user asked for is still printed
    assert captured.err.count("\n") == 1 and "--trust" in captured.err and str(path) in captured.err


# -- the wrapper, seen through a subcommand registered the way a future one would be ---------------------------

@pytest.fixture
def fake_command(monkeypatch):
    """Register ``fake``, whose run raises whatever the test puts in ``box["raise"]``."""
    box: dict = {}

    def configure(parser):
        parser.add_argument("--count", type=cli_args.positive_int, default=1)

    def run(args):
        if "raise" in box:
            raise box["raise"]
        print(f"count {args.count}")
        return 0

    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", (configure, run))
    return box


@pytest.mark.parametrize(("error", "code", "text"), [
    (InputError("data.pt is not a tensor file"), EXIT_INPUT, "data.pt is not a tensor file"),
    (UsageError("--this needs --that"), EXIT_USAGE, "--this needs --that"),
    (NeedsTrustError("x.pt can run code"), EXIT_NEEDS_TRUST, "x.pt can run code"),
    (CancelledError("stopped"), EXIT_CANCELLED, "stopped"),
    (QtradeoffError("something\n   expected"), 1, "something expected"),
    (KeyboardInterrupt(), EXIT_CANCELLED, "interrupted"),
    (FileNotFoundError(2, "No such file or directory", "in.json"), EXIT_INPUT, "in.json: No such file or directory"),
    (PermissionError(13, "Permission denied", "out.jsonl"), EXIT_INPUT, "out.jsonl: Permission denied"),
    (IsADirectoryError(21, "Is a directory", "somewhere"), EXIT_INPUT, "somewhere: Is a directory"),
])
def test_every_expected_failure_is_one_line_with_its_code(fake_command, error, code, text, capsys):
    fake_command["raise"] = error
    assert cli.main(["fake"]) == code
    assert _one_error_line(capsys, "fake") == f"qtradeoff fake: error: {text}\n"


def test_a_bug_keeps_its_traceback(fake_command):
    fake_command["raise"] = ZeroDivisionError("division by zero")
    with pytest.raises(ZeroDivisionError):
        cli.main(["fake"])
    fake_command["raise"] = OSError("an OSError naming no file is not the user's doing")
    with pytest.raises(OSError):
        cli.main(["fake"])


def test_success_is_unchanged_by_the_wrapper(fake_command, capsys):
    assert cli.main(["fake", "--count", "3"]) == 0
    assert capsys.readouterr() == ("count 3\n", "")


def test_the_domain_errors_belong_to_the_hierarchy_and_keep_their_old_bases():
    from qtradeoff.core.config import ConfigError
    from qtradeoff.core.engine.incremental import IncrementalError
    from qtradeoff.core.engine.measure import Cancelled
    from qtradeoff.core.loading._files import FileCheckError
    from qtradeoff.core.loading.data import DataLoadError
    from qtradeoff.core.loading.inventory import InventoryError
    from qtradeoff.core.loading.model_io import ModelLoadError, NeedsTrust
    from qtradeoff.core.search.explore import SearchError
    from qtradeoff.core.search.sweep import SweepError

    for kind in (ModelLoadError, FileCheckError, DataLoadError, InventoryError, ConfigError, SweepError,
                 IncrementalError):
        assert issubclass(kind, InputError) and kind.exit_code == EXIT_INPUT, kind
    assert issubclass(NeedsTrust, ModelLoadError) and NeedsTrust.exit_code == EXIT_NEEDS_TRUST
    assert issubclass(SearchError, UsageError) and issubclass(SearchError, ValueError)
    assert issubclass(ConfigError, ValueError) and issubclass(InventoryError, RuntimeError)
    assert issubclass(IncrementalError, RuntimeError)
    assert Cancelled.exit_code == EXIT_CANCELLED
    assert exit_code_of(NeedsTrust("x", globals=["a.b"])) == EXIT_NEEDS_TRUST
    assert exit_code_of(KeyboardInterrupt()) == EXIT_CANCELLED and exit_code_of(RuntimeError()) == 1


def test_one_line_escapes_the_users_names_and_collapses_the_rest():
    name = "/tmp/a\nb\x1b[31m.pt"
    line = cli.one_line(f"{name} is not a model file;\n  choose\tanother", names=[name])
    assert line == "/tmp/a\\nb\\x1b[31m.pt is not a model file; choose another"
    assert cli.one_line("only the basename: b\nc.pt", names=["/x/b\nc.pt"]) == "only the basename: b\\nc.pt"


# -- through a real process ---------------------------------------------------------------------------------------

def _run(*argv: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "qtradeoff", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_a_subprocess_prints_one_line_and_exits_with_the_code(tmp_path):
    missing = tmp_path / "nope.pt"
    done = _run("sweep", str(missing), "--out", str(tmp_path / "o.jsonl"), "--quiet")
    assert done.returncode == EXIT_INPUT and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("qtradeoff sweep: error: ")
    assert str(missing) in done.stderr


def test_a_bug_in_a_subprocess_shows_its_traceback_and_exits_1():
    done = _run(code="from qtradeoff import cli\n"
                     "cli.SUBCOMMANDS['boom'] = (lambda parser: None, lambda args: 1 // 0)\n"
                     "raise SystemExit(cli.main(['boom']))\n")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr


def test_help_and_option_errors_do_not_import_torch():
    probe = (
        "import json, sys\n"
        "from qtradeoff import cli\n"
        "seen = {}\n"
        "for argv in [['--help']] + [[name, '--help'] for name in sorted(cli.SUBCOMMANDS)] + "
        "[['evaluate', 'model.pt', '--batch', '0'], ['sweep', 'model.pt', '--out', 'o', '--eval-size', '0']]:\n"
        "    try:\n"
        "        code = cli.main(argv)\n"
        "    except SystemExit as done:\n"
        "        code = done.code\n"
        "    seen[' '.join(argv)] = [code, 'torch' in sys.modules]\n"
        "print(json.dumps(seen))\n"
    )
    done = _run(code=probe)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["--help"] == [0, False] and seen["evaluate --help"] == [0, False]
    assert all(not imported for _code, imported in seen.values()), seen
    assert seen["evaluate model.pt --batch 0"][0] == EXIT_USAGE
