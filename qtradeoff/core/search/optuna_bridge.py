"""The bridge to Optuna: a sweep's records as finished trials of a multi-objective study in Optuna's journal file,
so that ``optuna-dashboard JOURNAL`` shows the sweep (Pareto front, history, each trial's configuration).

Objectives, in this order: accuracy (maximize; top-1 agreement with fp32 when the data has no labels), weight
bytes (minimize) and batch-1 latency in ms (minimize; measured when the record has a timing, else the roofline
estimate — ``latency_estimated`` in the trial's user attributes says which). The configuration travels as user
attributes (``key``, ``config`` JSON, ``role``) and its uniform weight precision and sparsity as parameters. A
record is added once: re-exporting a file (e.g. after ``--resume``) adds only the trials not yet in the study.
Optuna is optional (``pip install qtradeoff[distributed]``); nothing else imports this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from qtradeoff.core.errors import InputError, UsageError
from qtradeoff.core.measurement.result import Result

DIRECTIONS = ("maximize", "minimize", "minimize")
OBJECTIVES = ("accuracy", "weight_bytes", "latency_ms_batch1")


def _import_optuna():
    try:
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
    except ImportError:
        raise UsageError("--optuna-storage needs Optuna: pip install qtradeoff[distributed]") from None
    return optuna, JournalStorage, JournalFileBackend


def objectives(result: Result) -> list[float]:
    """A Result's values for the study's objectives (see the module docstring)."""
    metric = result.accuracy if result.accuracy is not None else result.agreement
    latency = result.latency_ms(1, measured=True)
    if latency is None:
        latency = result.latency_ms(1, measured=False)
    return [float(metric), float(result.weight_bytes), float(latency) if latency is not None else float("nan")]


def export_records(records: Iterable[dict], journal: str | Path, *, study_name: str) -> int:
    """Add each sweep record (as :func:`~qtradeoff.core.search.sweep.read_records` gives them) not yet in the study
    ``study_name`` of the journal file ``journal`` as a finished trial; returns how many were added."""
    optuna, JournalStorage, JournalFileBackend = _import_optuna()
    journal = Path(journal)
    if journal.is_dir():
        raise InputError(f"{journal} is a directory; name an Optuna journal file (e.g. {journal / 'optuna.log'})")
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=storage, study_name=study_name, directions=list(DIRECTIONS),
                                    load_if_exists=True)
    except OSError as error:
        raise InputError(f"{journal} cannot be written ({error.strerror or error}); choose another "
                         "--optuna-storage") from None
    with warnings.catch_warnings():
        # experimental since optuna 3.2, stable in behaviour; the dashboard labels the axes with these names
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    present = {trial.user_attrs.get("key") for trial in study.get_trials(deepcopy=False)}
    distributions = {"weight_precision": optuna.distributions.CategoricalDistribution(_PRECISIONS),
                     "sparsity": optuna.distributions.FloatDistribution(0.0, 1.0)}
    added = 0
    for record in records:
        key = record.get("key")
        if key in present or "result" not in record:
            continue
        result = Result.from_dict(record["result"])
        values = objectives(result)
        if any(value != value for value in values):  # NaN: optuna refuses it; a record without latency at all
            continue
        defaults = (record.get("config") or {}).get("defaults", {})
        precision = (defaults.get("weight") or {}).get("precision", "fp32")
        sparsity = (defaults.get("prune") or {}).get("sparsity") or 0.0
        params = {}
        if precision in _PRECISIONS:
            params["weight_precision"] = precision
        if isinstance(sparsity, int | float) and 0.0 <= sparsity <= 1.0:
            params["sparsity"] = float(sparsity)
        trial = optuna.trial.create_trial(
            values=values, params=params, distributions={name: distributions[name] for name in params},
            user_attrs={"key": key, "role": record.get("role", ""), "strategy": record.get("strategy", ""),
                        "config": record.get("config"), "latency_estimated": not result.latency_measured,
                        "eval_samples": result.eval_samples})
        study.add_trial(trial)
        present.add(key)
        added += 1
    return added


_PRECISIONS = ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", *(f"int{bits}" for bits in range(2, 17)))

__all__ = ["DIRECTIONS", "OBJECTIVES", "export_records", "objectives"]
