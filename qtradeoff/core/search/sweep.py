"""Headless sweeps: run a search strategy and append one JSON line per evaluated configuration, resumably.

Each line is a self-contained record ``{"schema", "key", "role", "strategy", "model_sha256",
"data_fingerprint", "config", "result"}`` written and flushed as soon as the configuration is measured, so an
interrupted file loses at most a partial last line. Resuming reads the file (tolerating that truncated line),
replays the deterministic strategy with already-measured configurations served from the file, and appends only
new ones. :func:`read_results` turns a file back into Results for plotting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qtradeoff.core.errors import InputError
from qtradeoff.core.measurement.result import Result
from qtradeoff.core.search import explore

SCHEMA = "qtradeoff.sweep/1"
_VERIFIED = "verified:"  # key prefix of a solver's final, non-incremental re-measurement


class SweepError(InputError):
    """A results file cannot be written or resumed; the message names the file and what to do."""


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a running sweep; ``new`` is False when it was read back from the file (resume)."""

    config: object
    result: object
    role: str
    new: bool
    done: int  # points so far (resumed ones included)
    evaluated: int  # configurations actually measured in this run


def read_records(path: str | Path) -> list[dict]:
    """The records of a results file; a truncated or unparsable *last* line is ignored (an interrupted write)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")  # a cut multi-byte character stays local
    except FileNotFoundError:
        return []
    except OSError as error:
        raise SweepError(f"{path} cannot be read ({error}); check the path and permissions") from None
    lines = text.split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "result" not in record:
                raise ValueError("not a sweep record")
        except ValueError:
            if index == last:
                break  # the line an interrupted run was writing
            raise SweepError(f"{path}:{index + 1} is not a qtradeoff sweep record; "
                             "is this a results file written by `qtradeoff sweep`?") from None
        records.append(record)
    return records


def read_results(path: str | Path) -> list:
    """Every Result in a results file, in the order they were written (what the GUI plots)."""
    out = []
    for number, record in enumerate(read_records(path), start=1):
        try:
            out.append(Result.from_dict(record["result"]))
        except (KeyError, TypeError, ValueError) as error:
            raise SweepError(f"{path}: record {number} has an invalid result ({error}); "
                             "the file was written by another version or edited") from None
    return out


def read_points(path: str | Path) -> list[tuple[object, object]]:
    """``(config, Result)`` pairs of a results file: seeds for :func:`~qtradeoff.core.search.explore.evolutionary`."""
    return [(result.config, result) for result in read_results(path)]


class _Appender:
    """Appends whole lines, flushed one by one; cuts off a partial last line left by an interrupted run."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a+b")  # noqa: SIM115 - kept open for the sweep's lifetime
            self._file.seek(0, os.SEEK_END)
            size = self._file.tell()
            if size:
                self._file.seek(0)
                data = self._file.read()
                end = data.rfind(b"\n") + 1
                if end != size:
                    self._file.truncate(end)
            self._file.seek(0, os.SEEK_END)
        except OSError as error:
            raise SweepError(f"{path} cannot be written ({error.strerror or error}); choose another --out") from None

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record).encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def sweep_iter(session, strategy: str, out: str | Path, *, resume: bool = False, overwrite: bool = False,
               budget: int | None = None, seed: int = 0, should_stop: Callable[[], bool] = lambda: False,
               evaluate: Callable | None = None, verify: Callable | None = None, **options
               ) -> Iterator[SweepPoint]:
    """Run ``strategy`` (see :func:`explore.run`) on ``session`` and record every point in ``out``.

    ``resume`` continues an existing file (its configurations are not measured again); without it an existing
    non-empty file is an error unless ``overwrite``. ``evaluate``/``verify`` default to the session's
    incremental and full evaluations with estimated latency. ``options`` go to the strategy (``max_drop``,
    ``locked``, ``max_bytes``...).
    """
    out = Path(out)
    if out.exists() and out.stat().st_size and not resume:
        if not overwrite:
            raise SweepError(f"{out} already holds results; pass --resume to continue it or --overwrite to start "
                             "over")
        out.unlink()
    model_sha = getattr(session.loaded, "sha256", "") or ""
    known: dict[str, object] = {}
    for record in read_records(out) if resume else ():
        if model_sha and record.get("model_sha256") not in (None, "", model_sha):
            raise SweepError(f"{out} was written for another model (sha256 {record['model_sha256'][:12]}…); "
                             "resume it with the same model or choose another --out")
        if record.get("data_fingerprint") not in (None, "", session.data.fingerprint):
            raise SweepError(f"{out} was written with other data; resume it with the same --data or choose "
                             "another --out")
        known[record["key"]] = record
    base_evaluate = evaluate or (lambda config: session.evaluate(config, latency="estimated"))
    base_verify = verify or (lambda config: session.evaluate_full(config, latency="estimated"))

    fresh: set[str] = set()
    counters = {"evaluated": 0}

    def served(prefix: str, measure: Callable):
        def run(config):
            key = prefix + config.key()
            record = known.get(key)
            if record is not None:
                return Result.from_dict(record["result"])
            counters["evaluated"] += 1
            result = measure(config)
            fresh.add(key)
            return result

        return run

    options = dict(options)
    options.update(budget=budget, seed=seed, should_stop=should_stop, evaluate=served("", base_evaluate),
                   verify=served(_VERIFIED, base_verify))
    writer = _Appender(out)
    done = 0
    try:
        for config, result in explore.run(strategy, session, **options):
            role = explore.role_of(result)
            key = (_VERIFIED if role == "final" else "") + config.key()
            new = key in fresh
            if new:
                fresh.discard(key)
                record = {"schema": SCHEMA, "key": key, "role": role, "strategy": strategy, "seed": seed,
                          "model_sha256": model_sha, "data_fingerprint": session.data.fingerprint,
                          "config": config.to_dict(), "result": result.to_dict()}
                writer.write(record)
                known[key] = record
            done += 1
            yield SweepPoint(config, result, role, new, done, counters["evaluated"])
    finally:
        writer.close()


__all__ = ["SCHEMA", "SweepError", "SweepPoint", "read_points", "read_records", "read_results", "sweep_iter"]
