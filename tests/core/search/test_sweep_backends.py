"""Sweeps through evaluation backends: the same records whatever evaluates them, resume across backends, failed
configurations recorded with their reason, the Optuna bridge, and the CLI's --workers/--backend options."""

from __future__ import annotations

import json
import sys

import pytest

from qtradeoff import cli
from qtradeoff.core.engine.backends import InProcess, ProcessPool
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.search.sweep import read_records, read_results, sweep_iter

SPEC = EngineSpec("digits_cnn", eval_size=64, calib_size=32)


@pytest.fixture(scope="module")
def session():
    return SPEC.build()


def comparable(record: dict) -> dict:
    """A sweep record without what legitimately differs between runs: latency and the result's provenance
    (timestamps, thread count) — except its search tag, which must be the same."""
    record = json.loads(json.dumps(record))
    result = record["result"]
    search = result["provenance"].get("search")
    for key in ("latency_measured", "latency_estimated", "provenance"):
        result.pop(key)
    result["search"] = search
    return record


@pytest.fixture(scope="module")
def local_grid(session, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "grid.jsonl"
    points = list(sweep_iter(session, "grid", out, budget=8))
    assert len(points) == 8
    return [comparable(record) for record in read_records(out)]


@pytest.mark.slow
def test_a_grid_on_the_pool_writes_the_in_process_records_and_resumes_across_backends(session, local_grid, tmp_path):
    out = tmp_path / "grid.jsonl"
    with ProcessPool(SPEC, 2) as pool:
        first = list(sweep_iter(session, "grid", out, budget=4, backend=pool))
        assert [point.evaluated for point in first][-1] == 4
        # resumed in this process: the four in the file are served from it, two more measured here
        middle = list(sweep_iter(session, "grid", out, budget=6, resume=True))
        assert middle[-1].evaluated == 2 and [point.new for point in middle] == [False] * 4 + [True] * 2
        last = list(sweep_iter(session, "grid", out, budget=8, resume=True, backend=pool))
        assert last[-1].evaluated == 2
    assert [comparable(record) for record in read_records(out)] == local_grid


class _FailsOne:
    """An engine whose evaluation of one configuration raises (what a backend reports as a failed outcome)."""

    def __init__(self, engine, key: str):
        self.engine, self.key, self.calls = engine, key, []

    def evaluate(self, config, **kwargs):
        self.calls.append(config.key())
        if config.key() == self.key:
            raise RuntimeError("the kernel crashed")
        return self.engine.evaluate(config, **kwargs)


def test_a_failed_configuration_is_recorded_with_its_reason_skipped_by_readers_and_retried_on_resume(
        session, local_grid, tmp_path):
    out = tmp_path / "grid.jsonl"
    failing_key = local_grid[2]["key"]
    failures = []
    flaky = _FailsOne(session, failing_key)
    points = list(sweep_iter(session, "grid", out, budget=4, backend=InProcess(flaky),
                             on_failure=lambda config, reason: failures.append((config.key(), reason))))
    assert [point.config.key() for point in points] == [record["key"] for record in local_grid[:4] if
                                                       record["key"] != failing_key]
    assert failures == [(failing_key, "RuntimeError: the kernel crashed")]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    failed = [line for line in lines if line.get("role") == "failed"]
    assert len(lines) == 4 and len(failed) == 1
    assert failed[0]["key"] == failing_key and failed[0]["failed"] == "RuntimeError: the kernel crashed"
    assert "result" not in failed[0] and failed[0]["config"] == local_grid[2]["config"]
    assert len(read_results(out)) == 3  # readers skip it (no error: the file is not corrupt)

    healthy = _FailsOne(session, "no such key")
    resumed = list(sweep_iter(session, "grid", out, budget=4, resume=True, backend=InProcess(healthy)))
    assert healthy.calls == [failing_key]  # only the failed one is measured again
    assert [comparable(record) for record in read_records(out)] == [
        local_grid[0], local_grid[1], local_grid[3], local_grid[2]]  # file order: the retry comes last
    assert [point.config.key() for point in resumed] == [record["key"] for record in local_grid[:4]]


def test_the_optuna_bridge_writes_a_multi_objective_study_optuna_reads_back(session, tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from qtradeoff.core.search.optuna_bridge import DIRECTIONS, export_records, objectives

    out = tmp_path / "grid.jsonl"
    list(sweep_iter(session, "grid", out, budget=5))
    journal = tmp_path / "optuna.log"
    records = read_records(out)
    assert export_records(records, journal, study_name="grid") == 5
    assert export_records(records, journal, study_name="grid") == 0  # each record once, even exported again

    study = optuna.load_study(study_name="grid", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [direction.name.lower() for direction in study.directions] == list(DIRECTIONS)
    trials = study.get_trials()
    assert len(trials) == 5 and all(trial.state.name == "COMPLETE" for trial in trials)
    results = read_results(out)
    assert [trial.values for trial in trials] == [objectives(result) for result in results]
    assert [trial.user_attrs["key"] for trial in trials] == [record["key"] for record in records]
    assert all(trial.user_attrs["latency_estimated"] for trial in trials)
    assert study.best_trials  # a Pareto front optuna-dashboard can draw


def _sweep_argv(out, *extra) -> list[str]:
    return ["sweep", "digits_cnn", "--strategy", "grid", "--budget", "4", "--eval-size", "64", "--calib-size", "32",
            "--out", str(out), "--quiet", *extra]


@pytest.mark.slow
def test_cli_sweep_with_two_workers_writes_the_in_process_lines(tmp_path):
    local, pool = tmp_path / "local.jsonl", tmp_path / "pool.jsonl"
    assert cli.main(_sweep_argv(local)) == 0
    assert cli.main(_sweep_argv(pool, "--workers", "2")) == 0
    assert [comparable(record) for record in read_records(pool)] == [comparable(record) for record in
                                                                     read_records(local)]
    assert len(read_records(pool)) == 4


def test_cli_backend_options_that_cannot_work_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.jsonl"
    assert cli.main(_sweep_argv(out, "--address", "auto")) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
    assert cli.main(_sweep_argv(out, "--workers", "3", "--backend", "local")) == 2
    assert "--backend pool or ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert cli.main(_sweep_argv(out, "--backend", "ray")) == 2
    err = capsys.readouterr().err
    assert "pip install qtradeoff[distributed]" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert cli.main(_sweep_argv(out, "--optuna-storage", str(tmp_path / "j.log"))) == 2
    assert "pip install qtradeoff[distributed]" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def test_a_random_search_through_a_backend_writes_the_records_of_one_evaluated_here(session, tmp_path):
    here, there = tmp_path / "here.jsonl", tmp_path / "there.jsonl"
    list(sweep_iter(session, "random", here, budget=12, seed=4))
    points = list(sweep_iter(session, "random", there, budget=12, seed=4, backend=InProcess(session)))
    assert len(points) == 12 and points[-1].evaluated == 12
    assert [comparable(record) for record in read_records(there)] == [comparable(record) for record in
                                                                      read_records(here)]
