"""While a window is open, cyclic garbage is collected by a timer on the GUI thread, never by a worker thread."""

from __future__ import annotations

import gc
import threading

from qtradeoff.gui import collector


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_open_window_moves_collection_to_the_gui_thread(make_window, fake_backend, qtbot):
    assert gc.isenabled()
    window = make_window(fake_backend)
    assert not gc.isenabled()  # automatic collection would run in whichever thread allocates
    collected_on: list[str] = []

    class Watched(_Cycle):
        def __del__(self) -> None:
            collected_on.append(threading.current_thread().name)

    def worker() -> None:
        Watched()  # garbage made on a worker thread; its allocations must not run the collector there
        for _ in range(50_000):
            _Cycle()

    thread = threading.Thread(target=worker, name="worker")
    thread.start()
    thread.join()
    assert collected_on == []
    qtbot.waitUntil(lambda: bool(collected_on), timeout=5 * collector.INTERVAL_MS)
    assert collected_on == [threading.main_thread().name]
    window.close()
    assert gc.isenabled()


def test_automatic_collection_returns_after_the_last_window(make_window, fake_backend):
    first, second = make_window(fake_backend), make_window(fake_backend)
    first.close()
    assert not gc.isenabled()
    second.close()
    assert gc.isenabled()


def test_start_up_objects_are_frozen_while_a_window_is_open(make_window, fake_backend, qtbot):
    """A full collection then walks only what was made after start-up (it walked ~200k objects, ~200 ms)."""
    window = make_window(fake_backend)
    qtbot.waitUntil(lambda: gc.get_freeze_count() > 0, timeout=5 * collector.INTERVAL_MS)
    assert gc.get_freeze_count() > 1000  # the modules and widgets of start-up
    window.close()
    assert gc.get_freeze_count() == 0 and gc.isenabled()  # unfrozen with the last window: nothing kept for good
