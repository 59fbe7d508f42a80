"""The worker thread: coalescing of requests, cooperative cancellation, clean shutdown (fake backend, fast)."""

from __future__ import annotations

import threading

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.worker import EvaluationService, running_threads


def _service(qtbot, backend):
    service = EvaluationService(backend=backend)
    results, finished = [], []
    service.result_ready.connect(lambda result, meta: results.append((result, meta)))
    service.job_finished.connect(lambda kind, ok: finished.append((kind, ok)))
    return service, results, finished


def test_newest_pending_request_replaces_older(qtbot, fake_backend):
    fake_backend.gate = threading.Event()
    service, results, finished = _service(qtbot, fake_backend)
    try:
        first = CompressionConfig().with_defaults(weight={"precision": "int8"})
        service.evaluate(first, eval_size=100)
        assert fake_backend.started.wait(10)  # the first one is in flight, blocked on the gate
        for bits in (7, 6, 5, 4):
            service.evaluate(CompressionConfig().with_defaults(weight={"precision": f"int{bits}"}), eval_size=100)
        fake_backend.gate.set()
        qtbot.waitUntil(lambda: len(finished) == 2 and not service.has_pending(), timeout=10000)
        evaluated = [c.weight.precision for c in fake_backend.evaluated]
        assert evaluated == ["int8", "int4"]  # in-flight finished, only the newest pending one ran
        assert [r.config.weight.precision for r, _ in results] == ["int8", "int4"]
    finally:
        service.shutdown()
    assert not running_threads()


def test_cancel_stops_in_flight_evaluation(qtbot, fake_backend):
    fake_backend.gate = threading.Event()
    service, results, finished = _service(qtbot, fake_backend)
    try:
        service.evaluate(CompressionConfig(), eval_size=100)
        assert fake_backend.started.wait(10)
        service.evaluate(CompressionConfig().with_defaults(weight={"precision": "int8"}), eval_size=100)
        with qtbot.waitSignal(service.job_finished, timeout=10000) as blocker:
            assert service.cancel()  # set directly from this (GUI) thread: no queued signal needed
        assert blocker.args == ["eval", False]
        assert results == [] and not service.has_pending()
    finally:
        service.shutdown()


def test_shutdown_during_evaluation_stops_thread(qtbot, fake_backend):
    fake_backend.gate = threading.Event()  # never opened: only cancellation can end the job
    service, _results, _finished = _service(qtbot, fake_backend)
    service.evaluate(CompressionConfig(), eval_size=100)
    assert fake_backend.started.wait(10)
    service.shutdown()
    assert not running_threads()
    service.evaluate(CompressionConfig(), eval_size=100)  # ignored after shutdown, no crash


def test_load_cancels_evaluations(qtbot, fake_backend):
    fake_backend.gate = threading.Event()
    service, results, finished = _service(qtbot, fake_backend)
    loaded = []
    service.model_loaded.connect(loaded.append)
    try:
        service.evaluate(CompressionConfig(), eval_size=100)
        assert fake_backend.started.wait(10)
        service.evaluate(CompressionConfig().with_defaults(weight={"precision": "int8"}), eval_size=100)
        service.load_sample("digits_cnn")
        fake_backend.gate.set()
        qtbot.waitUntil(lambda: bool(loaded and results), timeout=10000)
        assert finished[0] == ("eval", False)
        assert [meta["tag"] for _, meta in results] == ["baseline"]
    finally:
        service.shutdown()


def test_baseline_request_is_not_coalesced_away_by_an_edit(qtbot, fake_backend):
    fake_backend.gate = threading.Event()
    service, results, finished = _service(qtbot, fake_backend)
    try:
        service.evaluate(CompressionConfig().with_defaults(weight={"precision": "int8"}), eval_size=100)
        assert fake_backend.started.wait(10)
        service.evaluate(CompressionConfig(), eval_size=200, tag="baseline")
        service.evaluate(CompressionConfig().with_defaults(weight={"precision": "int4"}), eval_size=200)
        fake_backend.gate.set()
        qtbot.waitUntil(lambda: len(finished) == 3 and not service.has_pending(), timeout=10000)
        assert [meta["tag"] for _, meta in results] == ["edit", "baseline", "edit"]
    finally:
        service.shutdown()
