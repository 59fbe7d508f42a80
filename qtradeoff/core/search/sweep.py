"""Headless sweeps: run a search strategy and append one JSON line per evaluated configuration, resumably.

A results file is a durable log, owned by :class:`SweepLog`:

- one writer at a time: the file is locked (``flock``) while a sweep writes it, and a second sweep on the same
  file (new, ``--overwrite`` or ``--resume``) is refused naming the holder's pid; the kernel drops the lock when
  the holder dies, so a crashed sweep never blocks the next one;
- every record ``{"schema", "key", "role", "strategy", "model_sha256", "data_fingerprint", "config", "result"}``
  is one complete line, written and ``fsync``-ed before the sweep moves on, so a crash loses at most the
  configuration being measured; a write that fails half-way (disk full, I/O error) is cut back off, so the file
  ends with a complete line and the error says how many records it keeps;
- resuming repairs a torn last line (a crash of an older writer, or a filesystem that lost the tail), skips a
  corrupted record in the middle with a warning naming its line (that configuration is measured again), replays
  the deterministic strategy with already-measured configurations served from the file and appends only new
  ones.
- a configuration that could not be evaluated (a backend's worker died twice running it, or its evaluation
  raised) is one record with ``"role": "failed"``, ``"failed": reason`` and no ``result``: readers skip it, and
  a resume measures it again (the cause may have been the machine, not the configuration).

The sweep evaluates on the session, or on a backend (:mod:`qtradeoff.core.engine.backends`: a process pool or Ray)
that runs the independent candidates of a grid or of an evolutionary generation in parallel; only this process
writes the file, and the records and keys are the same whatever the backend, so a file resumes on any of them.

:func:`read_records` / :func:`read_results` (what the GUI plots) are stricter: a corrupted record is an error naming
its line unless the caller asks to skip it, since a plot that silently drops points would mislead.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import warnings

try:
    import fcntl
except ImportError:  # Windows: no flock; files are written unguarded there
    fcntl = None
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qtradeoff.core.errors import InputError, QtradeoffError
from qtradeoff.core.measurement.result import Result
from qtradeoff.core.search import explore

SCHEMA = "qtradeoff.sweep/1"
_VERIFIED = "verified:"  # key prefix of a solver's final, non-incremental re-measurement


class SweepError(InputError):
    """A results file cannot be written or resumed; the message names the file and what to do."""


class SweepWarning(UserWarning):
    """Something in a results file was skipped or repaired while resuming it (the sweep goes on)."""


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a running sweep; ``new`` is False when it was read back from the file (resume)."""

    config: object
    result: object
    role: str
    new: bool
    done: int  # points so far (resumed ones included)
    evaluated: int  # configurations actually measured in this run


# -- reading -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Line:
    number: int  # 1-based line number in the file
    start: int  # byte offset of the line
    end: int  # byte offset after its newline (or after its last byte when the line is unterminated)
    terminated: bool


def _lines(data: bytes) -> Iterator[_Line]:
    start, number = 0, 0
    while start < len(data):
        number += 1
        newline = data.find(b"\n", start)
        end = len(data) if newline < 0 else newline + 1
        yield _Line(number, start, end, newline >= 0)
        start = end


class _FailedRecord(Exception):
    """A record of a configuration that could not be evaluated: no Result to read (skipped, not corrupt)."""


class _Corrupt(ValueError):
    """A complete line that is not a usable record (``result``: it is a record, but its result is invalid)."""

    def __init__(self, problem: str, *, result: bool):
        super().__init__(problem)
        self.problem, self.result = problem, result

    def message(self, path: Path, line: int, record: int) -> str:
        if self.result:
            return (f"{path}:{line}: record {record} has an invalid result ({self.problem}); the file was written "
                    "by another version or edited")
        return (f"{path}:{line} is not a qtradeoff sweep record ({self.problem}); is this a results file written "
                "by `qtradeoff sweep`?")


def _parse(text: bytes, *, need_key: bool) -> tuple[dict, Result]:
    """The record on one line and its Result, or _Corrupt saying why it is not one."""
    try:
        record = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Corrupt("not UTF-8 text", result=False) from None
    except json.JSONDecodeError as error:
        raise _Corrupt(f"not JSON: {error.msg}", result=False) from None
    if isinstance(record, dict) and "failed" in record and "result" not in record:
        raise _FailedRecord
    if not isinstance(record, dict) or "result" not in record:
        raise _Corrupt("a JSON value without a result", result=False)
    if need_key and not isinstance(record.get("key"), str):
        raise _Corrupt("no configuration key", result=False)
    try:
        return record, Result.from_dict(record["result"])
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        problem = f"missing {error}" if isinstance(error, KeyError) else (str(error) or type(error).__name__)
        raise _Corrupt(problem, result=True) from None


def _scan(data: bytes, path: Path, on_corrupt: Callable[[int, str], None] | None, *, need_key: bool = False,
          lenient_last: bool = False) -> tuple[list[tuple[dict, Result]], int, bool]:
    """``(records, end, whole_tail)``: the valid records of a file's bytes, the offset after its last complete
    line (a torn last line starts there) and whether an unterminated last line parsed as a whole record.

    A complete line that is not a record goes to ``on_corrupt(line_number, problem)`` and is skipped, or raises
    SweepError naming the line when there is no ``on_corrupt``. ``need_key``: records must carry their
    configuration key (to be served on resume). ``lenient_last``: an unparsable (not JSON) last line counts as
    torn even when it ends with a newline (for reading plots; a writer cuts off only an unterminated one)."""
    records: list[tuple[dict, Result]] = []
    end, whole_tail, count = 0, False, 0
    lines = list(_lines(data))
    last = max((line.number for line in lines if data[line.start:line.end].strip()), default=0)
    for line in lines:
        body = data[line.start:line.end]
        if not body.strip():
            end = line.end if line.terminated else end
            continue
        count += 1
        try:
            parsed = _parse(body, need_key=need_key)
        except _FailedRecord:
            end = line.end if line.terminated else end
            continue
        except _Corrupt as error:
            if not line.terminated or (lenient_last and line.number == last and not error.result):
                break  # the line an interrupted write left behind: not a record yet
            if on_corrupt is None:
                raise SweepError(error.message(path, line.number, count)) from None
            on_corrupt(line.number, error.problem)
            end = line.end
            continue
        records.append(parsed)
        if line.terminated:
            end = line.end
        else:
            whole_tail = True  # a record whose newline never made it: keep it, the writer adds the newline
    return records, end, whole_tail


# A results line is ~1-3 KB; 256 MiB holds ~100,000 points, far beyond what a plot or a resumed sweep uses, and
# bounds what a wrongly named file (a disk image, a log) can make the reader allocate.
MAX_RESULTS_BYTES = 256 << 20


def _check_readable(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise SweepError(f"{path} is a directory; name a results file (e.g. {path / 'sweep.jsonl'})")
    if not stat.S_ISREG(mode):
        raise SweepError(f"{path} is not a regular file; name a results file")


def read_records(path: str | Path, *, on_corrupt: Callable[[int, str], None] | None = None) -> list[dict]:
    """The records of a results file (empty when it does not exist); a torn or unparsable *last* line is ignored
    (an interrupted write).

    A corrupted complete line raises :class:`SweepError` naming it, unless ``on_corrupt(line_number, problem)``
    is given: then it is reported there and skipped."""
    return [record for record, _ in _read(Path(path), on_corrupt)]


def _read(path: Path, on_corrupt) -> list[tuple[dict, Result]]:
    try:
        # non-blocking, and the type checked before reading: a FIFO or a device never hangs or floods the reader
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise SweepError(f"{path} cannot be read ({error.strerror or error}); check the path and permissions") from None
    try:
        info = os.fstat(fd)
        _check_readable(path, info.st_mode)
        if info.st_size > MAX_RESULTS_BYTES:
            raise SweepError(f"{path} is {info.st_size >> 20} MiB, more than the {MAX_RESULTS_BYTES >> 20} MiB a "
                             "results file may be; split the sweep into several files")
        with open(fd, "rb", closefd=False) as file:
            data = file.read(MAX_RESULTS_BYTES + 1)
        if len(data) > MAX_RESULTS_BYTES:  # it grew while we read
            raise SweepError(f"{path} grew past {MAX_RESULTS_BYTES >> 20} MiB while being read; read it again "
                             "once the sweep writing it has finished")
    except OSError as error:
        raise SweepError(f"{path} cannot be read ({error.strerror or error}); check the path and permissions") from None
    finally:
        os.close(fd)
    return _scan(data, path, on_corrupt, lenient_last=True)[0]


def read_results(path: str | Path, *, on_corrupt: Callable[[int, str], None] | None = None) -> list:
    """Every Result in a results file, in the order they were written (what the GUI plots); a corrupted record
    is an error naming its line unless ``on_corrupt`` is given (see :func:`read_records`)."""
    return [result for _, result in _read(Path(path), on_corrupt)]


def read_points(path: str | Path) -> list[tuple[object, object]]:
    """``(config, Result)`` pairs of a results file: seeds for :func:`~qtradeoff.core.search.explore.evolutionary`."""
    return [(result.config, result) for result in read_results(path)]


# -- writing -------------------------------------------------------------------------------------------------------

def _lock_holder(fd: int) -> int | None:
    """The pid holding a ``flock`` on ``fd``'s file, from Linux's /proc/locks (None where that is unavailable)."""
    info = os.fstat(fd)
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "->" entries are waiters, not holders
            continue
        device_inode = fields[5]
        if device_inode == wanted or device_inode.rsplit(":", 1)[-1] == str(info.st_ino):
            candidates.append((device_inode != wanted, fields[4]))  # an exact device match first
    for _, pid in sorted(candidates):
        if pid.isdigit() and int(pid) > 0:
            return int(pid)
    return None


class SweepLog:
    """An open results file that only this object writes: locked, read, its torn tail repaired, appended to.

    Open it with :meth:`open` (or let :func:`sweep_iter` do it); ``records`` are the valid records already in the
    file (on resume), ``kept`` counts the complete records the file holds and ``written`` those this run added.
    A character device (``/dev/null``, ``/dev/full``) is written as a stream: not locked, read or truncated.
    """

    def __init__(self, path: Path, fd: int, *, created: bool, regular: bool,
                 records: list[tuple[dict, Result]], end: int):
        self.path, self._fd, self._created, self._regular = path, fd, created, regular
        self.records = records
        self.kept = len(records)
        self.written = 0
        self._end = end

    @classmethod
    def open(cls, path: str | Path, *, resume: bool = False, overwrite: bool = False,
             warn: Callable[[str], None] | None = None) -> SweepLog:
        """Lock ``path`` for writing (refused while another sweep holds it), then: ``resume`` reads its records
        (corrupted ones reported to ``warn`` and skipped, a torn last line cut off); ``overwrite`` empties it;
        otherwise a file that already holds results is refused."""
        path = Path(path)
        warn = warn or (lambda message: warnings.warn(message, SweepWarning, stacklevel=3))
        fd, created = cls._open_locked(path)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):  # only character devices get here (see _open_locked)
                return cls(path, fd, created=False, regular=False, records=[], end=0)
            log = cls._prepare(path, fd, created, resume=resume, overwrite=overwrite, warn=warn)
        except BaseException:
            cls._abandon(path, fd, created)
            raise
        return log

    @staticmethod
    def _open_locked(path: Path) -> tuple[int, bool]:
        flags = os.O_RDWR | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SweepError(f"{path} cannot be created ({error.strerror or error}); choose another --out") from None
        while True:
            created = False
            try:
                try:
                    fd, created = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666), True
                except FileExistsError:
                    fd = os.open(path, flags)
            except FileNotFoundError:
                continue  # removed between the two opens: try again
            except IsADirectoryError:
                raise SweepError(f"{path} is a directory; name a results file (e.g. {path / 'sweep.jsonl'})"
                                 ) from None
            except OSError as error:
                raise SweepError(f"{path} cannot be written ({error.strerror or error}); choose another --out"
                                 ) from None
            mode = os.fstat(fd).st_mode
            if stat.S_ISCHR(mode):
                return fd, False
            if not stat.S_ISREG(mode):
                os.close(fd)
                raise SweepError(f"{path} is not a regular file; name a results file")
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                who = f"pid {holder}" if holder is not None else "another process"
                raise SweepError(f"{path} is being written by another sweep ({who}); wait for it to finish or "
                                 "choose another --out") from None
            except OSError:
                pass  # a filesystem without locks: write unguarded rather than not at all
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd, created
            os.close(fd)  # the file was removed or replaced while we waited for it: lock the one now there

    @classmethod
    def _prepare(cls, path: Path, fd: int, created: bool, *, resume: bool, overwrite: bool,
                 warn: Callable[[str], None]) -> SweepLog:
        size = os.fstat(fd).st_size
        if size and not resume:
            if not overwrite:
                raise SweepError(f"{path} already holds results; pass --resume to continue it or --overwrite to "
                                 "start over")
            cls._truncate(path, fd, 0)
            size = 0
        if not size:
            return cls(path, fd, created=created, regular=True, records=[], end=0)
        try:
            data = b""
            while len(data) < size:  # pread may return less than asked (very large files)
                chunk = os.pread(fd, size - len(data), len(data))
                if not chunk:
                    break
                data += chunk
            size = len(data)
        except OSError as error:
            raise SweepError(f"{path} cannot be read ({error.strerror or error}); check the disk") from None

        def corrupt(number: int, problem: str) -> None:
            warn(f"{path}:{number}: skipped a corrupted record ({problem}); its configuration is measured again")

        records, end, whole_tail = _scan(data, path, corrupt, need_key=True)
        log = cls(path, fd, created=created, regular=True, records=records, end=end)
        if whole_tail:
            log._append_bytes(b"\n", end=size)  # the last record lacked only its newline
        elif end < size:  # a write cut short by a crash: the normal state after one, repaired silently
            cls._truncate(path, fd, end)
        return log

    @staticmethod
    def _truncate(path: Path, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError as error:
            raise SweepError(f"{path} cannot be written ({error.strerror or error}); choose another --out") from None

    def append(self, record: dict) -> None:
        """Write ``record`` as one complete, fsync-ed line; on failure the file is cut back to its last complete
        line and SweepError says how many records it keeps."""
        self._append_bytes(json.dumps(record).encode("utf-8") + b"\n", end=self._end)
        self.kept += 1
        self.written += 1

    def append_failure(self, record: dict) -> None:
        """Write the record of a configuration that could not be evaluated (it has ``failed``, no ``result``):
        readers skip it, and a resume measures that configuration again."""
        self._append_bytes(json.dumps(record).encode("utf-8") + b"\n", end=self._end)
        self.written += 1

    def _append_bytes(self, data: bytes, *, end: int) -> None:
        try:
            view = memoryview(data)
            while view:  # a write may be partial (a disk filling up, a signal): finish it or fail
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except BaseException as error:
            self._cut_back(end)  # never leave a partial line, whatever stopped the write (Ctrl+C included)
            if isinstance(error, OSError):
                raise self._write_failure(error) from None
            raise
        self._end = end + len(data)

    def _cut_back(self, end: int) -> None:
        if not self._regular:
            return
        try:
            os.ftruncate(self._fd, end)
        except OSError:
            pass  # the next resume cuts the torn line off instead

    def _write_failure(self, error: OSError) -> SweepError:
        kept = f"wrote {self.written} records to {self.path} ({self.kept} in the file)"
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            cause = {errno.ENOSPC: "the disk filled", errno.EDQUOT: "the disk quota was reached",
                     errno.EFBIG: "the file reached its size limit"}[error.errno]
            return SweepError(f"{kept} before {cause}; free space and rerun with --resume")
        return SweepError(f"{kept} before writing failed ({error.strerror or error}); check the disk and rerun "
                          "with --resume")

    def close(self) -> None:
        """Release the file; one this run created and left empty is removed (a sweep that never started)."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        self._abandon(self.path, fd, self._created and self._end == 0)

    @staticmethod
    def _abandon(path: Path, fd: int, remove: bool) -> None:
        try:
            if remove and os.fstat(fd).st_size == 0:
                path.unlink(missing_ok=True)  # while still locked: the next opener re-checks the inode
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> SweepLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def sweep_iter(session, strategy: str, out: str | Path | SweepLog, *, resume: bool = False, overwrite: bool = False,
               budget: int | None = None, seed: int = 0, should_stop: Callable[[], bool] = lambda: False,
               evaluate: Callable | None = None, verify: Callable | None = None,
               warn: Callable[[str], None] | None = None, backend=None,
               on_failure: Callable[[object, str], None] | None = None, **options) -> Iterator[SweepPoint]:
    """Run ``strategy`` (see :func:`explore.run`) on ``session`` and record every point in ``out``.

    ``out`` is a path (opened, locked and closed here, with ``resume``/``overwrite``/``warn`` as in
    :meth:`SweepLog.open`) or a :class:`SweepLog` the caller opened and closes. ``resume`` continues an existing
    file (its configurations are not measured again); without it an existing non-empty file is an error unless
    ``overwrite``. ``evaluate``/``verify`` default to the session's incremental and full evaluations with
    estimated latency. ``options`` go to the strategy (``max_drop``, ``locked``, ``max_bytes``...).

    ``backend`` (a :class:`~qtradeoff.core.engine.backends.Backend` the caller opened and closes) evaluates instead
    of ``session``: the independent candidates of a grid or an evolutionary/random generation as one parallel batch,
    the descents' (greedy, smallest, budget) one at a time (a sequential search gets no speed-up). The file is
    written here only, with the same records and keys whatever the backend, so a file started on one backend resumes
    on another. A configuration the backend could not evaluate (its worker died twice, or the evaluation raised) is
    recorded with ``"failed": reason`` and no result, reported to ``on_failure(config, reason)`` (default: a
    SweepWarning), skipped by readers and measured again on resume; a sequential strategy cannot go on without it
    and stops with :class:`EvaluationFailed`.
    """
    kwargs = dict(budget=budget, seed=seed, should_stop=should_stop, evaluate=evaluate, verify=verify,
                  backend=backend, on_failure=on_failure)
    if isinstance(out, SweepLog):
        yield from _sweep(session, strategy, out, **kwargs, **options)
        return
    with SweepLog.open(out, resume=resume, overwrite=overwrite, warn=warn) as log:
        yield from _sweep(session, strategy, log, **kwargs, **options)


class EvaluationFailed(QtradeoffError):
    """A sequential search needed a configuration that could not be evaluated (it is recorded as failed)."""


def _sweep(session, strategy: str, log: SweepLog, *, budget, seed, should_stop, evaluate, verify, backend,
           on_failure, **options) -> Iterator[SweepPoint]:
    model_sha = getattr(session.loaded, "sha256", "") or ""
    known: dict[str, Result] = {}
    for record, result in log.records:
        if model_sha and record.get("model_sha256") not in (None, "", model_sha):
            raise SweepError(f"{log.path} was written for another model (sha256 {str(record['model_sha256'])[:12]}…); "
                             "resume it with the same model or choose another --out")
        if record.get("data_fingerprint") not in (None, "", session.data.fingerprint):
            raise SweepError(f"{log.path} was written with other data; resume it with the same --data or choose "
                             "another --out")
        known[record["key"]] = result
    def record_of(key: str, config) -> dict:
        return {"schema": SCHEMA, "key": key, "role": "", "strategy": strategy, "seed": seed,
                "model_sha256": model_sha, "data_fingerprint": session.data.fingerprint, "config": config.to_dict()}

    def failed(key: str, config, reason: str) -> None:
        log.append_failure({**record_of(key, config), "role": "failed", "failed": reason})
        if on_failure is not None:
            on_failure(config, reason)
        else:
            warnings.warn(f"{config.key()} could not be evaluated ({reason}); recorded as failed in {log.path}",
                          SweepWarning, stacklevel=4)

    def through_backend(full: bool, prefix: str):
        def run(config):
            outcome = next(iter(backend.map([config], full=full)))
            if outcome.ok:
                return outcome.result
            failed(prefix + config.key(), config, outcome.failure)
            raise EvaluationFailed(f"configuration {config.key()} could not be evaluated ({outcome.failure}); "
                                   f"the {strategy} search cannot go on without it ({log.path} records it as "
                                   "failed; --resume tries it again)")

        return run

    if backend is not None:
        base_evaluate = evaluate or through_backend(False, "")
        base_verify = verify or through_backend(True, _VERIFIED)
    else:
        base_evaluate = evaluate or (lambda config: session.evaluate(config, latency="estimated"))
        base_verify = verify or (lambda config: session.evaluate_full(config, latency="estimated"))

    fresh: set[str] = set()
    counters = {"evaluated": 0}

    def served_many(configs):
        """A batch through the backend, in order: known configurations from the file, the rest in parallel."""
        results: list = [None] * len(configs)
        ready = [False] * len(configs)
        missing = []
        for index, config in enumerate(configs):
            found = known.get(config.key())
            if found is not None:
                results[index], ready[index] = found, True
            else:
                missing.append(index)
        given = 0
        while given < len(configs) and ready[given]:
            yield results[given]
            given += 1
        for outcome in backend.map([configs[index] for index in missing], should_stop=should_stop):
            index = missing[outcome.index]
            config = configs[index]
            counters["evaluated"] += 1
            if outcome.ok:
                results[index] = outcome.result
                fresh.add(config.key())
            else:
                failed(config.key(), config, outcome.failure)
            ready[index] = True
            # in order, so the strategy and the file see the same sequence whatever finishes first
            while given < len(configs) and ready[given]:
                yield results[given]
                given += 1

    def served(prefix: str, measure: Callable):
        def run(config):
            key = prefix + config.key()
            result = known.get(key)
            if result is not None:
                return result
            counters["evaluated"] += 1
            result = measure(config)
            fresh.add(key)
            return result

        return run

    options = dict(options)
    options.update(budget=budget, seed=seed, should_stop=should_stop, evaluate=served("", base_evaluate),
                   verify=served(_VERIFIED, base_verify))
    if backend is not None and evaluate is None:
        options["evaluate_many"] = served_many
    if (callable(getattr(backend, "run", None)) and strategy in explore.NEEDS_SENSITIVITY
            and options.get("sensitivity") is None):
        # the sensitivity analysis the search starts from, its layers spread over the pool's workers
        from qtradeoff.core.search.sensitivity import SensitivityReport, sensitivity_iter

        for item in sensitivity_iter(session, should_stop=should_stop, backend=backend):
            if isinstance(item, SensitivityReport):
                options["sensitivity"] = item
        if options.get("sensitivity") is None:  # stopped
            return
    done = 0
    for config, result in explore.run(strategy, session, **options):
        role = explore.role_of(result)
        key = (_VERIFIED if role == "final" else "") + config.key()
        new = key in fresh
        if new:
            fresh.discard(key)
            log.append({**record_of(key, config), "role": role, "result": result.to_dict()})
            known[key] = result
        done += 1
        yield SweepPoint(config, result, role, new, done, counters["evaluated"])


__all__ = ["SCHEMA", "EvaluationFailed", "SweepError", "SweepLog", "SweepPoint", "SweepWarning", "read_points",
           "read_records", "read_results", "sweep_iter"]
