"""Evaluation backends: the process pool and Ray give the in-process metrics (latency aside), a SIGKILLed worker
costs nothing but a retry, and a configuration that kills its worker twice is reported as failed."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.backends import ATTEMPTS, InProcess, ProcessPool, RayBackend
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.search import explore

# Small splits keep each evaluation in the tens of milliseconds; the workers build the same engine from the spec.
SPEC = EngineSpec("digits_cnn", eval_size=64, calib_size=32)


def twenty_configs() -> list[CompressionConfig]:
    """5 weight precisions x 4 sparsities, with int8 activations on half of them (20 distinct configurations)."""
    configs = []
    for index, precision in enumerate(("fp32", "int8", "int6", "int4", "int3")):
        for sparsity in (0.0, 0.25, 0.5, 0.75):
            config = CompressionConfig().with_defaults(weight={"precision": precision})
            if sparsity:
                config = config.with_defaults(prune={"method": "magnitude", "sparsity": sparsity})
            if (index + int(sparsity * 4)) % 2:
                config = config.with_defaults(activation={"precision": "int8"})
            configs.append(config)
    assert len({config.key() for config in configs}) == 20
    return configs


def metrics(result) -> dict:
    """Everything a Result says except latency and provenance (timestamps, threads, the roofline's calibration)."""
    record = result.to_dict()
    for key in ("latency_measured", "latency_estimated", "provenance"):
        record.pop(key)
    return record


@pytest.fixture(scope="module")
def engine():
    return SPEC.build()


@pytest.fixture(scope="module")
def reference(engine):
    with InProcess(engine) as local:
        outcomes = list(local.map(twenty_configs()))
    assert [outcome.index for outcome in outcomes] == list(range(20)) and all(outcome.ok for outcome in outcomes)
    return {outcome.config.key(): metrics(outcome.result) for outcome in outcomes}


def check_same(outcomes, reference) -> None:
    assert sorted(outcome.index for outcome in outcomes) == list(range(len(reference)))  # each once, none lost
    assert all(outcome.ok for outcome in outcomes), [outcome.failure for outcome in outcomes]
    for outcome in outcomes:
        assert metrics(outcome.result) == reference[outcome.config.key()]
        assert outcome.result.latency_estimated  # estimated latency is there, just not compared


@pytest.mark.slow
def test_ray_on_a_local_instance_gives_the_in_process_metrics_even_when_an_actor_is_killed(reference):
    ray = pytest.importorskip("ray")
    with RayBackend(SPEC, workers=2) as backend:
        assert ray.is_initialized() and int(ray.cluster_resources()["CPU"]) == 2
        pids = set(backend.worker_pids())
        outcomes = []
        for outcome in backend.map(twenty_configs()):
            outcomes.append(outcome)
            if len(outcomes) == 1:  # an actor killed mid-sweep: replaced, its configurations retried
                os.kill(sorted(pids)[0], signal.SIGKILL)
        after = set(backend.worker_pids())
        from qtradeoff.core.search.sensitivity import SensitivitySettings, analyze

        settings = SensitivitySettings(bits=(4, 2), sparsities=(0.5,))
        layers = ["features.0.conv", "features.3.conv", "features.5.conv"]
        spread = analyze(SPEC.build(), settings=settings, layers=layers, backend=backend, use_cache=False)
        folders = ray.get([actor.directory.remote() for actor in backend._actors])
        assert all(os.path.isdir(folder) for folder in folders)
        killed_folder = os.path.dirname(folders[0])  # the backend's folder, with the killed actor's copy inside
        assert len(os.listdir(killed_folder)) == 3
    assert not any(os.path.exists(folder) for folder in (*folders, killed_folder))  # closing deleted the copies
    assert len(pids) == 2 and os.getpid() not in pids  # evaluated in two actor processes, not here
    assert sorted(pids)[0] not in after and len(after) == 2
    assert not ray.is_initialized()  # we started it, so closing shut it down
    check_same(outcomes, reference)
    here = analyze(SPEC.build(), settings=settings, layers=layers, use_cache=False)  # the layers spread over Ray
    assert spread.layers == here.layers and spread.baseline == here.baseline
    assert any(drop != 0.0 for item in here.layers for drop in item.quant_drop.values())


@pytest.mark.slow
def test_a_pool_of_two_workers_gives_the_in_process_metrics_even_when_one_is_killed_mid_sweep(reference):
    with ProcessPool(SPEC, 2) as pool:
        assert pool.threads == max(1, len(os.sched_getaffinity(0)) // 2)
        pool.wait_ready()  # both engines built, so both workers get a configuration at once
        before = set(pool.worker_pids())
        outcomes, killed = [], None
        for outcome in pool.map(twenty_configs()):
            outcomes.append(outcome)
            if killed is None:  # after the first result: the other worker is busy with a configuration
                busy = pool.worker_pids(busy=True)
                assert busy
                killed = busy[0]
                os.kill(killed, signal.SIGKILL)
        after = set(pool.worker_pids())
        # a measured timing runs alone: whenever a result arrives, no other worker is computing
        w8a8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
        timed, busy_at_results = [], []
        for outcome in pool.map([CompressionConfig(), w8a8, explore.uniform(CompressionConfig(), 4)],
                                latency="measured"):
            timed.append(outcome)
            busy_at_results.append(pool.worker_pids(busy=True))
    assert busy_at_results == [[], [], []]
    assert all(outcome.ok and outcome.result.latency_measured for outcome in timed)
    assert {outcome.result.provenance["threads"] for outcome in timed} == {pool.timing_threads}  # all the cores
    check_same(outcomes, reference)
    assert killed in before and killed not in after and len(after) == 2  # replaced by a fresh worker
    assert {outcome.result.provenance["threads"] for outcome in outcomes} == {pool.threads}  # recorded


@pytest.mark.slow
def test_a_configuration_that_kills_its_worker_twice_is_reported_failed(monkeypatch, reference):
    configs = twenty_configs()[:4]
    monkeypatch.setenv("QTRADEOFF_TEST_CRASH_KEY", configs[1].key())  # test-only hook read by the workers
    with ProcessPool(SPEC, 2) as pool:
        outcomes = list(pool.map(configs))
        still = list(pool.map(configs[2:3]))  # the pool keeps working after the deaths
    by_index = {outcome.index: outcome for outcome in outcomes}
    assert sorted(by_index) == [0, 1, 2, 3] and len(outcomes) == 4
    assert not by_index[1].ok
    assert by_index[1].failure == f"worker process died (SIGKILL, signal 9) {ATTEMPTS} times running it"
    for index in (0, 2, 3):
        assert metrics(by_index[index].result) == reference[configs[index].key()]
    assert still[0].ok


def test_in_process_reports_an_evaluation_error_as_a_failed_outcome():
    class Broken:
        def evaluate(self, config, **kwargs):
            raise ValueError("no kernel for this layer")

    outcomes = list(InProcess(Broken()).map([CompressionConfig(), explore.uniform(CompressionConfig(), 8)]))
    assert [(outcome.index, outcome.ok, outcome.failure) for outcome in outcomes] == [
        (0, False, "ValueError: no kernel for this layer"), (1, False, "ValueError: no kernel for this layer")]


def test_ray_ships_the_model_and_data_files_as_bytes_and_workers_rebuild_the_same_engine(tmp_path):
    from qtradeoff.core.engine.backends import _payload, _unpack
    from qtradeoff.core.loading.data import SAMPLE_DIR

    model = SAMPLE_DIR / "digits_cnn.safetensors"
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.bin").write_bytes(b"\x00\x01")
    spec = EngineSpec(str(model), str(folder), eval_size=32, calib_size=16)
    payload = _payload(spec)
    assert set(payload[1]) == {"model", "data"}  # both travel as bytes: no shared filesystem needed
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    rebuilt = _unpack(payload, str(elsewhere))
    assert Path(rebuilt.model).parent == elsewhere and Path(rebuilt.model).read_bytes() == model.read_bytes()
    assert (Path(rebuilt.data) / "a" / "x.bin").read_bytes() == b"\x00\x01"
    assert rebuilt.eval_size == 32 and rebuilt.calib_size == 16
    with_sample_data = dataclasses.replace(rebuilt, data=None)
    assert with_sample_data.load_model().sha256 == EngineSpec(str(model)).load_model().sha256


def test_in_process_runs_torch_on_the_threads_it_is_given_and_restores_them(engine, reference):
    import torch

    before = torch.get_num_threads()
    config = twenty_configs()[5]
    (outcome,) = InProcess(engine, threads=1).map([config])
    assert outcome.result.provenance["threads"] == 1 and torch.get_num_threads() == before
    assert metrics(outcome.result) == reference[config.key()]


@pytest.mark.slow
def test_a_job_waiting_behind_a_crashing_one_is_not_charged_for_its_deaths(monkeypatch, reference, tmp_path):
    """One worker, two jobs in flight: the second waits in the pipe each time the first kills the worker, so it
    is sent again without losing an attempt; and a sensitivity analysis spread over the pool is the one made here."""
    from qtradeoff.core.search.sensitivity import SensitivitySettings, analyze

    configs = twenty_configs()[:3]
    monkeypatch.setenv("QTRADEOFF_TEST_CRASH_KEY", configs[0].key())
    with ProcessPool(SPEC, 1, depth=2) as pool:
        outcomes = {outcome.index: outcome for outcome in pool.map(configs)}
        monkeypatch.delenv("QTRADEOFF_TEST_CRASH_KEY")
        settings = SensitivitySettings(bits=(4, 2), sparsities=(0.5,))
        layers = ["features.0.conv", "features.3.conv", "features.5.conv"]
        spread = analyze(SPEC.build(), settings=settings, layers=layers, backend=pool, use_cache=False)
    assert sorted(outcomes) == [0, 1, 2]
    assert outcomes[0].failure == f"worker process died (SIGKILL, signal 9) {ATTEMPTS} times running it"
    for index in (1, 2):
        assert outcomes[index].ok and metrics(outcomes[index].result) == reference[configs[index].key()]
    here = analyze(SPEC.build(), settings=settings, layers=layers, use_cache=False)
    assert [item.layer for item in spread.layers] == layers
    assert spread.layers == here.layers and spread.baseline == here.baseline
    assert any(drop != 0.0 for item in here.layers for drop in item.quant_drop.values())  # not vacuous
