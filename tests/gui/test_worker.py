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


# -- searches: a request to the service, run on its search thread ------------------------------------------------
def _search_signals(service):
    seen = {"found": [], "progress": [], "sensitivity": [], "finished": [], "failed": []}
    service.search_found.connect(lambda config, result, done, total: seen["found"].append((config, result)))
    service.search_progress.connect(lambda done, total, stage: seen["progress"].append((done, total, stage)))
    service.search_sensitivity.connect(seen["sensitivity"].append)
    service.search_finished.connect(seen["finished"].append)
    service.search_failed.connect(seen["failed"].append)
    return seen


def test_search_streams_points_and_keeps_the_base_configs_locked_layers(qtbot, fake_backend):
    service = EvaluationService(backend=fake_backend)
    seen = _search_signals(service)
    base = CompressionConfig().with_locked(["conv2"])
    try:
        with qtbot.waitSignal(service.search_finished, timeout=10000) as blocker:
            assert service.start_search("grid", {"budget": 3, "base_config": base})
        assert blocker.args == [True] and not service.search_running()
        assert [config.weight.precision for config, _ in seen["found"]] == ["int8", "int6", "int4"]
        assert all(config.resolve("conv2", "Conv2d").weight.precision == "fp32" for config, _ in seen["found"])
        assert seen["progress"][0] == (0, 3, "search")
        assert fake_backend.searches == [("grid", {"budget": 3, "base_config": base})]
        with qtbot.waitSignal(service.search_finished, timeout=10000):
            service.start_search("sensitivity", {})
        assert seen["sensitivity"] == [{"conv1": 0.01, "conv2": 0.02, "fc": 0.03}]
    finally:
        service.shutdown()
    assert not running_threads()


def test_latest_search_wins_and_the_superseded_one_says_nothing(qtbot, fake_backend):
    fake_backend.search_gate = threading.Event()  # never opened: the first search stops only when superseded
    service = EvaluationService(backend=fake_backend)
    seen = _search_signals(service)
    try:
        service.start_search("grid", {"budget": 5, "base_config": CompressionConfig().with_locked(["fc"])})
        qtbot.waitUntil(lambda: len(seen["found"]) == 1, timeout=10000)  # the first point, then it waits
        fake_backend.search_gate = None  # the second search runs straight through
        with qtbot.waitSignal(service.search_finished, timeout=10000) as blocker:
            service.start_search("grid", {"budget": 2})
        assert blocker.args == [True] and seen["finished"] == [True]  # one finish: the superseded one is dropped
        assert len(fake_backend.searches) == 2
        assert [config.locked for config, _ in seen["found"]] == [("fc",), (), ()]
    finally:
        service.shutdown()
    assert not running_threads()


def test_stop_keeps_what_was_found_and_edits_are_evaluated_meanwhile(qtbot, fake_backend):
    fake_backend.search_gate = threading.Event()
    service = EvaluationService(backend=fake_backend)
    seen = _search_signals(service)
    results = []
    service.result_ready.connect(lambda result, meta: results.append(result))
    try:
        service.start_search("grid", {"budget": 5})
        qtbot.waitUntil(lambda: len(seen["found"]) == 1, timeout=10000)
        assert service.search_running()
        edit = CompressionConfig().with_defaults(weight={"precision": "int4"})
        with qtbot.waitSignal(service.result_ready, timeout=10000):  # the search is still waiting on its gate
            service.evaluate(edit, eval_size=100)
        assert results[0].config == edit and service.search_running()
        with qtbot.waitSignal(service.search_finished, timeout=10000) as blocker:
            service.stop_search()  # set directly from the GUI thread
        assert blocker.args == [False] and len(seen["found"]) == 1 and not seen["failed"]
    finally:
        service.shutdown()
    assert not running_threads()


def test_a_model_load_abandons_the_running_search(qtbot, fake_backend):
    from PySide6.QtWidgets import QApplication

    fake_backend.search_gate = threading.Event()
    fake_backend.search_ignores_stop = True  # it goes on after the load: none of its points may come through
    service = EvaluationService(backend=fake_backend)
    seen = _search_signals(service)
    try:
        service.start_search("grid", {"budget": 5})
        qtbot.waitUntil(lambda: len(seen["found"]) == 1, timeout=10000)
        with qtbot.waitSignal(service.model_loaded, timeout=10000):
            service.load_sample("digits_cnn")
            assert seen["finished"] == [False] and not service.search_running()  # at once, not after the search
        fake_backend.search_gate.set()
        assert fake_backend.search_done.wait(10)  # its four other points are emitted (queued) by now
        QApplication.processEvents()
        assert len(seen["found"]) == 1 and seen["finished"] == [False]
    finally:
        service.shutdown()
    assert not running_threads()


def test_a_failing_search_reports_its_message(qtbot, fake_backend):
    service = EvaluationService(backend=fake_backend)
    seen = _search_signals(service)
    try:
        with qtbot.waitSignal(service.search_finished, timeout=10000) as blocker:
            service.start_search("nonsense", {})
        assert blocker.args == [False]
        assert seen["failed"] == ["The search stopped with an error: unknown strategy 'nonsense'"]
    finally:
        service.shutdown()


def test_shutdown_during_a_search_stops_its_thread(qtbot, fake_backend):
    fake_backend.search_gate = threading.Event()  # never opened
    service = EvaluationService(backend=fake_backend)
    service.start_search("grid", {"budget": 5})
    assert fake_backend.search_started.wait(10)
    service.shutdown()
    assert not running_threads()
    assert not service.start_search("grid", {})  # refused after shutdown, no crash
