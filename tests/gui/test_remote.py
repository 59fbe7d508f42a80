"""The worker-process backend on the real core: closing mid-evaluation, a killed child, trust and searches across
the process boundary. Each test starts real children (seconds of imports each), so there are few of them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.backend import SearchPoint
from qtradeoff.gui.layer_table import PRECISION_ORDER
from qtradeoff.gui.worker import running_threads

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def process_window(make_window):
    from qtradeoff.gui.remote import ProcessBackend

    backend = ProcessBackend()
    window = make_window(backend, eval_size=100)
    return window, backend


def _start_measured_evaluation(qtbot, window) -> None:
    window.controls.measure_latency.setChecked(True)  # a long job: timing on real kernels
    window.controls.weight_precision.slider.setValue(PRECISION_ORDER.index("int8"))
    qtbot.waitUntil(lambda: window.progress.isVisible(), timeout=20000)


def test_a_killed_child_is_one_message_then_closing_mid_evaluation_takes_under_a_second(process_window, qtbot,
                                                                                         capsys):
    window, backend = process_window
    assert window.baseline is not None and window.summary.name == "digits_cnn"
    assert backend.child_modules() == []  # the child never imported Qt
    assert len(backend.pids()) == 2 and all(_alive(pid) for pid in backend.pids())

    # a child killed in the middle of an evaluation: one sentence, the window and its model stay
    _start_measured_evaluation(qtbot, window)
    victim = backend.pids()[0]
    os.kill(victim, signal.SIGKILL)
    qtbot.waitUntil(lambda: "stopped unexpectedly" in window.messages.label.text(), timeout=20000)
    message = window.messages.label.text()
    assert "stopped unexpectedly (signal 9) while evaluating" in message and "\n" not in message
    assert window.summary.name == "digits_cnn" and window.baseline is not None
    assert not _alive(victim) and backend.pids()[-1] != victim  # respawned already
    # the edit queued behind the killed one runs on the respawned child, which reloads the model first
    qtbot.waitUntil(lambda: not window.progress.isVisible() and not window.service.has_pending(), timeout=90000)
    window.controls.measure_latency.setChecked(False)
    config = CompressionConfig(model=window.state.config.model).with_defaults(weight={"precision": "int4"})
    window.apply_config(config, "after the crash")
    qtbot.waitUntil(lambda: window.plot.store.find(config.key()) is not None, timeout=60000)

    # closing during a measured evaluation: immediate, and no child process or QThread is left
    pids = backend.pids()
    window.controls.measure_latency.setChecked(True)  # times the current configuration on real kernels
    qtbot.waitUntil(lambda: window.progress.isVisible(), timeout=20000)
    started = time.perf_counter()
    window.close()
    closing = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[close during a measured evaluation, worker processes] window closed in {closing * 1000:.0f} ms")
    assert closing < 1.0
    assert multiprocessing.active_children() == []
    assert not any(_alive(pid) for pid in pids)
    assert running_threads() == []


def test_trust_prompt_and_search_cross_the_process_boundary(tmp_path):
    from qtradeoff.core.loading.data import SAMPLE_DIR
    from qtradeoff.gui.remote import ProcessBackend

    path = SAMPLE_DIR / "digits_cnn.torchscript.pt"  # TorchScript runs code from the file: it needs trust
    backend = ProcessBackend()
    try:
        backend.load_sample("digits_cnn")
        with pytest.raises(backend.NeedsTrust) as prompt:
            backend.load_model(str(path))
        assert prompt.value.format == "torchscript" and "TorchScript" in str(prompt.value)
        summary = backend.load_model(str(path), trust=True)
        assert summary.trusted and summary.format == "torchscript" and summary.data_name
        # The search child starts empty and replays the trusted load before its first search.
        events = list(backend.search_iter("random", {"budget": 2, "seed": 0, "base_config": CompressionConfig()},
                                          should_stop=lambda: False))
        points = [event for event in events if isinstance(event, SearchPoint)]
        assert points and all(backend.is_result(point.result) for point in points)
        assert backend._search.recipe == backend._recipe
        assert backend._recipe[-1] == ("load_model", (str(path),), {"trust": True})
        with pytest.raises(backend.expected_errors):
            backend.load_model(str(tmp_path / "missing.pt"))
        assert backend.has_model()
    finally:
        pids = backend.pids()
        backend.close()
    assert not any(_alive(pid) for pid in pids)


def test_the_app_defaults_to_worker_processes_and_the_environment_can_keep_the_thread(monkeypatch):
    from qtradeoff.gui.backend import CoreBackend
    from qtradeoff.gui.remote import ProcessBackend, default_backend

    monkeypatch.setenv("QTRADEOFF_BACKEND", "thread")
    assert isinstance(default_backend(), CoreBackend)
    monkeypatch.delenv("QTRADEOFF_BACKEND")
    backend = default_backend()
    try:
        assert isinstance(backend, ProcessBackend) and len(backend.pids()) == 2
    finally:
        pids = backend.pids()
        started = time.perf_counter()
        backend.close()  # children still importing torch: terminated after the grace
        closing = time.perf_counter() - started
    assert closing < 1.0 and not any(_alive(pid) for pid in pids)
