"""Sweep files as a durable log: crashes, a second writer, a full disk, signals and corrupted records.

The subprocess tests run the real ``qtradeoff sweep`` (grid strategy, 32 evaluation samples) and do to it what
happens to sweeps on servers: SIGKILL at random points, two runs on one file, a disk that fills up, SIGINT and
SIGTERM. The rest drive :class:`SweepLog` / :func:`sweep_iter` in-process, with writes made to fail on purpose.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qtradeoff import cli
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.search import sweep
from qtradeoff.core.search.sweep import SweepError, SweepLog, read_records, read_results, sweep_iter

GRID = ["sweep", "digits_cnn", "--strategy", "grid", "--eval-size", "32", "--calib-size", "16", "--quiet"]
GRID_SIZE = 24  # explore's default grid: 6 precisions x 4 sparsities


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "qtradeoff", *GRID, "--out", str(out), *extra]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_command(out, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())


def _complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_for_lines(process: subprocess.Popen, path: Path, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while _complete_lines(path) < count:
        assert process.poll() is None, f"the sweep ended before {count} records: {process.communicate()}"
        assert time.monotonic() < deadline, f"no {count} records in {path} after {timeout} s"
        time.sleep(0.01)


def _assert_valid(path: Path) -> list[dict]:
    """Every line of ``path`` is a whole record, the last one included; returns the records."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the file ends with a partial line"
    records = [json.loads(line) for line in data.splitlines()]
    read_results(path)  # every result parses
    return records


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qtradeoff sweep: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def session():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=16, eval_size=32))


def cheap(session):
    return lambda config: session.evaluate(config, latency="none")


# -- crashes -------------------------------------------------------------------------------------------------------

def test_sigkill_at_five_random_points_then_resume_loses_and_repeats_nothing(tmp_path, capsys):
    reference = tmp_path / "uninterrupted.jsonl"
    assert cli.main([*GRID, "--out", str(reference)]) == 0
    expected = [record["key"] for record in read_records(reference)]
    assert len(expected) == GRID_SIZE == len(set(expected))

    out = tmp_path / "killed.jsonl"
    rng = random.Random(12)
    progress: list[int] = []
    for round_number in range(5):
        before = _complete_lines(out)
        process = _start(out, *(["--resume"] if round_number else []))
        # one or two new records, then a random moment within the next few: mid-measure or mid-write
        _wait_for_lines(process, out, before + rng.randint(1, 2))
        time.sleep(rng.uniform(0.0, 0.03))
        process.kill()
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
        assert before < _complete_lines(out) < GRID_SIZE
        progress.append(_complete_lines(out))
    print("records after each SIGKILL:", progress)
    finished = subprocess.run(_command(out, "--resume"), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    keys = [record["key"] for record in _assert_valid(out)]
    assert len(keys) == len(set(keys)) == GRID_SIZE and set(keys) == set(expected)
    assert keys == expected  # resuming appends the missing suffix, so even the order is the uninterrupted one


def test_a_torn_last_line_is_cut_off_and_a_record_missing_only_its_newline_is_kept(session, tmp_path):
    out = tmp_path / "torn.jsonl"
    list(sweep_iter(session, "grid", out, budget=2, evaluate=cheap(session)))
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"schema": "qtradeoff.sweep/1", "key": "torn", "res')
    with SweepLog.open(out, resume=True) as log:
        assert log.kept == 2
    assert out.read_bytes() == whole
    out.write_bytes(whole[:-1])  # the newline of the last record never reached the disk
    with SweepLog.open(out, resume=True) as log:
        assert log.kept == 2
    assert out.read_bytes() == whole


# -- one writer at a time ------------------------------------------------------------------------------------------

def test_two_sweeps_started_together_on_one_new_file_one_is_refused_naming_the_other(tmp_path):
    out = tmp_path / "shared.jsonl"
    first, second = _start(out, "--budget", "3"), _start(out, "--budget", "3")
    outcomes = {process.pid: (process.wait(timeout=120), process.communicate()[1]) for process in (first, second)}
    codes = sorted(code for code, _ in outcomes.values())
    assert codes == [0, 3], outcomes
    winner = next(pid for pid, (code, _) in outcomes.items() if code == 0)
    loser_message = next(_one_error_line(err) for code, err in outcomes.values() if code == 3)
    assert str(out) in loser_message
    # Which refusal the loser gets depends on when it reached the file: while the winner held it (the usual case),
    # it names the winner's pid; if its imports were so slow under load that the winner had already finished, it is
    # refused for the results the winner left. Both keep the winner's records intact, which is what matters.
    if "being written by another sweep" in loser_message:
        assert f"(pid {winner})" in loser_message
    else:
        assert "already holds results" in loser_message, loser_message
    keys = [record["key"] for record in _assert_valid(out)]
    assert len(keys) == len(set(keys)) == 3


def test_a_resume_while_another_sweep_writes_is_refused_before_loading_anything(tmp_path, capsys):
    out = tmp_path / "busy.jsonl"
    with SweepLog.open(out):  # this process plays the running sweep
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert cli.main([*GRID, "--out", str(out), *extra]) == 3
            assert f"being written by another sweep (pid {os.getpid()})" in _one_error_line(capsys.readouterr().err)
        with pytest.raises(SweepError, match=f"pid {os.getpid()}"):
            SweepLog.open(out, resume=True)
    assert not out.exists()  # nothing was written: the run that created the file removes it
    with SweepLog.open(out) as log:  # the lock went with its holder: a dead sweep never blocks the next one
        log.append({"key": "k", "result": {}})
    assert out.exists()


# -- disk full and I/O errors --------------------------------------------------------------------------------------

def test_out_dev_full_is_one_line_exit_3_also_on_resume(capsys):
    for extra in ([], ["--resume"]):
        assert cli.main([*GRID, "--budget", "2", "--out", "/dev/full", *extra]) == 3
        line = _one_error_line(capsys.readouterr().err)
        assert "wrote 0 records to /dev/full" in line and "before the disk filled" in line and "--resume" in line


@pytest.fixture
def small_disk(tmp_path):
    """A 32 KiB tmpfs (about ten records), unmounted afterwards; skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_a_valid_file_and_resume_completes_once_there_is_room(small_disk, tmp_path, capsys):
    out = small_disk / "sweep.jsonl"
    assert cli.main([*GRID, "--out", str(out)]) == 3
    line = _one_error_line(capsys.readouterr().err)
    kept = len(_assert_valid(out))
    assert 0 < kept < GRID_SIZE
    assert f"wrote {kept} records to {out} ({kept} in the file) before the disk filled" in line
    assert "free space and rerun with --resume" in line

    assert cli.main([*GRID, "--out", str(out), "--resume"]) == 3  # still full: the same clean message
    line = _one_error_line(capsys.readouterr().err)
    assert f"wrote 0 records to {out} ({kept} in the file) before the disk filled" in line
    assert len(_assert_valid(out)) == kept

    roomy = tmp_path / "sweep.jsonl"
    shutil.copyfile(out, roomy)
    assert cli.main([*GRID, "--out", str(roomy), "--resume"]) == 0
    keys = [record["key"] for record in _assert_valid(roomy)]
    assert len(keys) == len(set(keys)) == GRID_SIZE


def _failing_write(monkeypatch, *, after: int, error: int, on: str = "write"):
    """Make the results file's ``after``-th+1 record fail with ``error``: half written first, for a write."""
    real_write, real_fsync = os.write, os.fsync
    records = {"n": 0}

    def write(fd, data):
        if records["n"] >= after:
            if on == "write" and len(data) > 1:
                real_write(fd, bytes(data[: len(data) // 2]))  # the disk took half the line, then filled up
            if on == "write":
                raise OSError(error, os.strerror(error))
        return real_write(fd, data)

    def fsync(fd):
        records["n"] += 1
        if records["n"] > after and on == "fsync":
            raise OSError(error, os.strerror(error))
        return real_fsync(fd)

    monkeypatch.setattr(sweep.os, "write", write)
    monkeypatch.setattr(sweep.os, "fsync", fsync)


@pytest.mark.parametrize(("error", "on", "words"), [
    (errno.ENOSPC, "write", "before the disk filled; free space and rerun with --resume"),
    (errno.EDQUOT, "write", "before the disk quota was reached; free space and rerun with --resume"),
    (errno.EIO, "write", "before writing failed (Input/output error); check the disk and rerun with --resume"),
    (errno.EIO, "fsync", "before writing failed (Input/output error); check the disk and rerun with --resume"),
])
def test_a_failing_write_is_cut_back_to_the_last_whole_record(session, tmp_path, monkeypatch, error, on, words):
    out = tmp_path / "failing.jsonl"
    _failing_write(monkeypatch, after=2, error=error, on=on)
    with pytest.raises(SweepError) as raised:
        list(sweep_iter(session, "grid", out, budget=4, evaluate=cheap(session)))
    assert str(raised.value) == f"wrote 2 records to {out} (2 in the file) {words}"
    assert len(_assert_valid(out)) == 2
    monkeypatch.undo()
    points = list(sweep_iter(session, "grid", out, resume=True, budget=4, evaluate=cheap(session)))
    assert [point.new for point in points] == [False, False, True, True]
    assert len(_assert_valid(out)) == 4


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--resume"]])
def test_out_naming_a_directory_or_a_fifo_is_one_line_exit_3(tmp_path, capsys, extra):
    assert cli.main([*GRID, "--out", str(tmp_path), *extra]) == 3
    assert "is a directory" in _one_error_line(capsys.readouterr().err)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert cli.main([*GRID, "--out", str(fifo), *extra]) == 3  # refused, never blocks on the pipe
    assert "is not a regular file" in _one_error_line(capsys.readouterr().err)
    with pytest.raises(SweepError, match="is not a regular file"):
        read_results(fifo)
    with pytest.raises(SweepError, match="is a directory"):
        read_results(tmp_path)


# -- signals -------------------------------------------------------------------------------------------------------

def _assert_interrupted(line: str, out: Path, signame: str) -> None:
    kept = len(_assert_valid(out))
    assert 0 < kept < GRID_SIZE
    assert (f"interrupted by {signame} after {kept} of {GRID_SIZE} configurations; {out} keeps {kept} records, "
            "resume with --resume") in line


def test_sigint_stops_a_sweep_after_the_current_record_with_exit_130(tmp_path):
    # SIGINT ignored on the way in, as a shell does for a background job: the sweep must still honour kill -INT.
    out = tmp_path / "int.jsonl"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = _start(out)
    finally:
        signal.signal(signal.SIGINT, previous)
    _wait_for_lines(process, out, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    _assert_interrupted(_one_error_line(stderr), out, "SIGINT")


def test_sigterm_stops_a_sweep_with_exit_143_and_the_handlers_are_put_back(tmp_path, capsys):
    out = tmp_path / "term.jsonl"
    received = []

    def signal_when_two_records_are_in():
        while _complete_lines(out) < 2:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    # a harmless handler underneath, in case the signal arrives after the sweep put it back
    def underneath(signum, frame):
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, underneath)
    try:
        sender = threading.Thread(target=signal_when_two_records_are_in, daemon=True)
        sender.start()
        assert cli.main([*GRID, "--out", str(out)]) == 143
        sender.join(timeout=30)
        assert signal.getsignal(signal.SIGTERM) is underneath and not received
    finally:
        signal.signal(signal.SIGTERM, previous)
    _assert_interrupted(_one_error_line(capsys.readouterr().err), out, "SIGTERM")


# -- corrupted records ---------------------------------------------------------------------------------------------

def test_corrupted_records_are_skipped_on_resume_with_their_line_numbers(tmp_path, capsys):
    out = tmp_path / "edited.jsonl"
    assert cli.main([*GRID, "--budget", "4", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["result"]["eval_samples"] = "many"  # int("many"): the traceback of issue 12
    lines[1] = json.dumps(edited)
    lines[2] = "this line is not JSON"
    out.write_text("\n".join(lines) + "\n" + lines[3][:40])  # and a torn last line after them
    capsys.readouterr()

    assert cli.main([*GRID, "--budget", "5", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("qtradeoff sweep: warning: ")]
    assert len(warnings) == 2 and len(err.splitlines()) == 2, err
    assert f"{out}:2: skipped a corrupted record (invalid literal for int()" in warnings[0]
    assert f"{out}:3: skipped a corrupted record (not JSON" in warnings[1]
    assert out.read_text().endswith("\n")

    # for plotting the damage is an error naming the line, unless the caller asks to skip it
    with pytest.raises(SweepError, match=r"edited\.jsonl:2: record 2 has an invalid result \(invalid literal for int"):
        read_results(out)
    skipped: list[int] = []
    records = read_records(out, on_corrupt=lambda number, problem: skipped.append(number))
    assert skipped == [2, 3]
    keys = [record["key"] for record in records]
    assert len(keys) == len(set(keys)) == 5  # the two skipped configurations measured again, plus the fifth
