"""``qtradeoff sweep MODEL``: run a search strategy headless and write one JSON line per configuration.

Exit codes as documented in qtradeoff.core.errors: 0 done; 2 bad option; 3 bad model, data or results file
(including a results file another sweep is writing, a full disk or an I/O error: the file then keeps every
complete record); 4 the model needs ``--trust``; 130 interrupted by SIGINT (Ctrl+C), 143 by SIGTERM (128 + the
signal, as shells report it; everything measured so far is in the file; rerun with ``--resume``).
qtradeoff.cli's wrapper prints every expected failure as one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``qtradeoff sweep`` (for the ``SUBCOMMANDS`` registry of :mod:`qtradeoff.cli`)."""
    from qtradeoff.cli_args import add_model_options, non_negative_float, non_negative_int, positive_float, positive_int
    from qtradeoff.core.search import explore  # light: the strategies import torch only when they run

    parser.description = ("Search configurations of MODEL with a strategy and write one JSON line per evaluated "
                          "configuration (config + result) to --out; --resume continues an interrupted file.")
    parser.add_argument("model", help="model file, or the name of a bundled sample (digits_cnn, digits_mlp, ...)")
    add_model_options(parser)
    parser.add_argument("--data", help="evaluation data: 'digits', an ImageFolder directory, a tensor file "
                                       "(.pt/.npz/safetensors), a .npy array (inputs only), a .csv table, a folder of "
                                       "wav files per class or a dataset hook package.module:callable (needs --trust) "
                                       "(default: the sample's own data for a bundled sample)")
    parser.add_argument("--strategy", choices=explore.STRATEGIES, default="greedy")
    from qtradeoff.cli_io import add_io_options

    add_io_options(parser)
    parser.add_argument("--budget", type=positive_int, default=None, help="at most N configurations evaluated")
    parser.add_argument("--out", required=True, help="results file (JSON lines)")
    parser.add_argument("--resume", action="store_true", help="continue an existing results file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    parser.add_argument("--max-drop", type=non_negative_float, default=1.0,
                        help="greedy/smallest: largest accuracy drop vs fp32, in percentage points (default 1.0)")
    parser.add_argument("--max-bytes", type=positive_int, help="budget strategy: weight bytes the answer must fit in")
    parser.add_argument("--max-ms", type=positive_float, help="budget strategy: estimated batch-1 latency limit (ms)")
    parser.add_argument("--weight-by", choices=("memory", "latency"), default="memory",
                        help="greedy: order layers by the memory or the compute share they save (default memory)")
    parser.add_argument("--cache-mb", type=non_negative_int, default=512,
                        help="memory for cached activations of incremental evaluation, MiB (default 512)")
    parser.add_argument("--config", help="configuration JSON to start from: its defaults (e.g. activation "
                                         "precision), per-layer settings and locked layers (default: fp32)")
    parser.add_argument("--lock", action="append", default=[], metavar="SELECTOR",
                        help="a layer the search never changes: a name, re:<regex> or type:<Class> (repeatable; "
                             "added to the configuration's own locks)")
    parser.add_argument("--seed", type=int, default=0, help="random/evolutionary seed (default 0)")
    parser.add_argument("--eval-size", type=positive_int, help="use only the first N evaluation samples")
    parser.add_argument("--calib-size", type=positive_int, help="use only the first N calibration samples")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--workers", type=non_negative_int, default=None,
                        help="evaluate in N worker processes (0: one per core); default 1, in this process. Grid, "
                             "random and evolutionary candidates run in parallel, greedy/smallest/budget steps "
                             "one at a time")
    parser.add_argument("--backend", choices=("local", "pool", "ray"), default=None,
                        help="where configurations are evaluated: local (this process), pool (spawned worker "
                             "processes) or ray (needs pip install qtradeoff[distributed]); default pool when "
                             "--workers is not 1, else local")
    parser.add_argument("--address", help="--backend ray: the cluster to join (e.g. auto, ray://host:10001); "
                                          "default: start a local Ray instance for this sweep")
    parser.add_argument("--optuna-storage", metavar="JOURNAL",
                        help="also write the file's points as trials of a multi-objective Optuna study in this "
                             "journal file (open it with optuna-dashboard JOURNAL)")


def _base_config(args, layers):
    """The configuration searches start from: ``--config`` (or fp32) with ``--lock`` selectors added, checked
    against the model's layers."""
    from qtradeoff.cli_args import config_argument
    from qtradeoff.core.config import CompressionConfig, ConfigError
    from qtradeoff.core.errors import UsageError

    base = config_argument(args, layers)
    if not args.lock:
        return base
    locked = base.with_locked((*base.locked, *args.lock))
    try:
        return CompressionConfig.from_dict(locked.to_dict(), layers=layers)
    except ConfigError as error:
        raise UsageError(f"--lock: {error.problem}") from None


def run(args: argparse.Namespace) -> int:
    """Run the sweep described by ``args``; returns the exit code (failures are raised, for qtradeoff.cli's
    wrapper to report)."""
    from qtradeoff.core.errors import UsageError
    from qtradeoff.core.search.explore import planned_evaluations
    from qtradeoff.core.search.sweep import SweepLog, sweep_iter

    if args.strategy == "budget" and args.max_bytes is None and args.max_ms is None:
        raise UsageError("--strategy budget needs --max-bytes and/or --max-ms")
    from qtradeoff.cli_args import engine_spec, precheck_config
    from qtradeoff.core.engine.engine import Engine

    kind = _backend_kind(args)
    if kind == "ray":
        from qtradeoff.core.engine.backends import import_ray

        import_ray()  # missing Ray fails in a moment, before the model loads
    if args.optuna_storage is not None:
        from qtradeoff.core.search.optuna_bridge import _import_optuna

        _import_optuna()
    precheck_config(args)
    # The results file is locked before the model loads, so a second sweep on it is refused at once.
    with SweepLog.open(args.out, resume=args.resume, overwrite=args.overwrite, warn=_warn) as log:
        spec = dataclasses.replace(engine_spec(args), cache_bytes=args.cache_mb * 1024 * 1024)
        loaded, data = spec.load()
        session = Engine(loaded, data, cache_bytes=spec.cache_bytes)
        base = _base_config(args, session.layers)
        total = planned_evaluations(args.strategy, session, budget=args.budget, base_config=base)
        progress = {"done": 0}
        with _open_backend(kind, spec, args) as backend, _StopOnSignal() as stop:
            points = sweep_iter(session, args.strategy, log, budget=args.budget, seed=args.seed,
                                should_stop=stop.requested, max_drop=args.max_drop, max_bytes=args.max_bytes,
                                max_ms=args.max_ms, base_config=base, weight_by=args.weight_by, backend=backend,
                                on_failure=_failed)
            try:
                final = _drive(points, total, args.quiet, progress)
            except KeyboardInterrupt:  # a second signal, or Ctrl+C where no handler could be installed
                raise _interrupted(stop.signum or signal.SIGINT, progress["done"], total, log) from None
            if stop.signum is not None:
                raise _interrupted(stop.signum, progress["done"], total, log)
    if session.note and not session.evaluator.traceable:
        print(f"note: {session.note}", file=sys.stderr)
    if final is not None:
        print(_describe(final), file=sys.stderr)
    elif progress.get("start") is not None:
        _cannot_start(progress["start"], args)
    if args.optuna_storage is not None:
        _export_optuna(args)
    return 0


def _backend_kind(args) -> str:
    from qtradeoff.core.errors import UsageError

    kind = args.backend or ("local" if args.workers in (None, 1) else "pool")
    if kind == "local" and args.workers not in (None, 1):
        raise UsageError(f"--workers {args.workers} needs --backend pool or ray (local runs in this process)")
    if args.address is not None and kind != "ray":
        raise UsageError("--address needs --backend ray")
    return kind


def _open_backend(kind: str, spec, args):
    """The sweep's backend: None for local (the sweep evaluates on its own engine, as it always did)."""
    import contextlib

    from qtradeoff.core.engine.backends import ProcessPool, RayBackend

    if kind == "pool":
        return ProcessPool(spec, args.workers or None)
    if kind == "ray":
        return RayBackend(spec, address=args.address, workers=args.workers or None)
    return contextlib.nullcontext(None)


def _failed(config, reason: str) -> None:
    _warn(f"configuration {config.key()} could not be evaluated ({reason}); recorded as failed, --resume tries it "
          "again")


def _export_optuna(args) -> None:
    from pathlib import Path

    from qtradeoff.core.search.optuna_bridge import export_records
    from qtradeoff.core.search.sweep import read_records

    records = read_records(args.out, on_corrupt=lambda line, problem: None)
    added = export_records(records, args.optuna_storage, study_name=Path(args.out).stem)
    print(f"optuna: added {added} trials to study {Path(args.out).stem!r} in {args.optuna_storage} "
          f"(optuna-dashboard {args.optuna_storage})", file=sys.stderr)


def _warn(message: str) -> None:
    from qtradeoff.cli import one_line

    print(f"qtradeoff sweep: warning: {one_line(message)}", file=sys.stderr)


class _StopOnSignal:
    """SIGINT and SIGTERM ask the sweep to stop after the configuration being measured (its record is written
    whole); a second one stops at once (KeyboardInterrupt; a half-written record is cut off).

    Installed explicitly, even over an inherited "ignore": a shell starts background jobs with SIGINT ignored,
    and ``kill -INT`` of a background sweep must not be lost. Only the main thread can install handlers; from
    another one the sweep runs without them (Ctrl+C then arrives as KeyboardInterrupt, if at all)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _interrupted(signum: int, done: int, total: int, log):
    from qtradeoff.core.errors import CancelledError

    name = signal.Signals(signum).name
    error = CancelledError(f"interrupted by {name} after {done} of {total} configurations; {log.path} keeps "
                           f"{log.kept} records, resume with --resume")
    error.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM: what a shell reports for the signal
    return error


def _drive(points, total: int, quiet: bool, progress: dict):
    """Consume the sweep with a tqdm bar on stderr; returns the solver's final point, if any."""
    from tqdm import tqdm

    final = None
    progress["start"] = None
    # no bar when stderr is not a terminal (a log, CI): its carriage-return frames would garble the error lines
    with tqdm(total=total, unit="config", file=sys.stderr, disable=quiet or not sys.stderr.isatty(),
              dynamic_ncols=True) as bar:
        for point in points:
            progress["done"] = point.done
            bar.set_postfix(measured=point.evaluated, resumed=max(point.done - point.evaluated, 0), refresh=False)
            bar.update(1)
            if point.role == "final":
                final = point
            elif point.role == "start":
                progress["start"] = point
        if bar.n < bar.total:
            bar.total = bar.n  # the strategy finished early (converged or ran out of candidates)
            bar.refresh()
    return final


def _cannot_start(start, args) -> None:
    """A descent whose starting point already breaks --max-drop yields no answer: say so in one line, exit 1."""
    from qtradeoff.core.errors import QtradeoffError

    search = start.result.provenance.get("search", {})
    if search.get("feasible", True):
        return
    samples = max(1, int(start.result.eval_samples))
    raise QtradeoffError(
        f"the sweep cannot start: its starting configuration ({describe_start(start.config)}) already drops "
        f"{search.get('drop', 0.0):.2f} points, more than --max-drop {args.max_drop:g}, and on {samples} samples "
        f"one sample is {100 / samples:.2f} points; loosen --max-drop, evaluate more samples (--eval-size) or "
        "lock the sensitive layers at higher precision (--lock)")


def describe_start(config) -> str:
    """The start of a descent in words: its layers' weight precisions (overrides) and the activations."""
    weights = sorted({str(o.weight["precision"]) for o in config.overrides().values() if "precision" in o.weight}
                     or {config.weight.precision})
    return f"weights {'/'.join(weights)}, activations {config.activation.precision}"


def _describe(point) -> str:
    result = point.result
    search = result.provenance.get("search", {})
    accuracy = result.accuracy if result.accuracy is not None else result.agreement
    label = "accuracy" if result.accuracy is not None else "agreement"
    feasible = search.get("feasible", True)
    return (f"final: {label} {accuracy:.4f} (drop {search.get('drop', 0.0):.2f} points), weight bytes "
            f"{result.weight_bytes} ({result.compression_ratio:.1f}x smaller than fp32)"
            + ("" if feasible else " — the constraint could not be met; this is the closest found"))
