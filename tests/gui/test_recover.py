"""Recover (fine-tune) from the results table: a worker job with progress and Cancel, the recovered point lands on
the plot tagged "recovered", and exporting the picked recovered point passes its weights."""

from __future__ import annotations

import pytest

from qtradeoff.core.config import CompressionConfig

INT2 = CompressionConfig().with_defaults(weight={"precision": "int2"})


def _int2_point(window, qtbot) -> int:
    with qtbot.waitSignal(window.service.result_ready, timeout=60000):
        window.apply_config(INT2, "int2")
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=60000)
    index = window.plot.store.find(INT2.key())
    assert index is not None
    return index


def _recovered(result, meta) -> bool:
    return meta.get("tag") == "recovered"


def test_recover_a_point_adds_a_recovered_point(make_window, qtbot):
    window = make_window()
    source = _int2_point(window, qtbot)
    before = window.plot.store.results[source].accuracy
    window.recovery.settings = {"steps": 12, "batch_size": 64}
    menu = window.results.context_menu(source)
    action = next(a for a in menu.actions() if a.text().startswith("Recover"))
    assert action.isEnabled()
    with qtbot.waitSignal(window.service.result_ready, timeout=120000, check_params_cb=_recovered) as caught:
        action.trigger()
    menu.deleteLater()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=60000)
    result = caught.args[0]
    store = window.plot.store
    assert len(store) == source + 2  # a new point beside the original one, not a replacement
    assert store.meta[-1]["tag"] == "recovered" and store.results[source].accuracy == before
    assert result.provenance["recovered"]["steps"] == 12 and result.accuracy > before
    assert "recovered" in window.results.model.index(len(store) - 1, 3).data()
    # the baseline and a recovered point cannot be recovered again
    for row in (0, len(store) - 1):
        menu = window.results.context_menu(row)
        assert not next(a for a in menu.actions() if a.text().startswith("Recover")).isEnabled()
        menu.deleteLater()

    # picking the recovered point makes an export carry its weights; picking the original does not
    calls = []
    window.service.export = lambda config, fmt, path, weights=None: calls.append(weights)
    window.plot.point_clicked.emit(len(store) - 1)
    window.export_model("out.safetensors", "packed")
    window.plot.point_clicked.emit(source)
    window.export_model("out.safetensors", "packed")
    assert calls[0] == result.provenance["recovered"]["path"] and calls[1] is None


def test_cancel_stops_a_recovery(make_window, qtbot):
    window = make_window()
    source = _int2_point(window, qtbot)
    window.recovery.settings = {"steps": 100000, "time_limit_s": None}
    with qtbot.waitSignal(window.service.progress, timeout=60000,
                          check_params_cb=lambda done, total, stage: stage == "fine-tune"):
        window.recovery.recover_point(source)
    with qtbot.waitSignal(window.service.job_finished, timeout=60000) as finished:
        window.cancel()
    assert finished.args == ["recover", False]
    assert all(meta.get("tag") != "recovered" for meta in window.plot.store.meta)
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=60000)


def test_recovering_fp32_is_refused_without_a_job(make_window, qtbot):
    window = make_window()
    window.recovery.recover_point(0)  # the baseline
    assert "baseline" in window.job.label.text()


@pytest.mark.slow
def test_recover_in_the_worker_process(tmp_path):
    from qtradeoff.gui.remote import ProcessBackend

    backend = ProcessBackend(search_process=False)
    try:
        backend.load_sample("digits_mlp")
        items = list(backend.recover_iter(INT2, eval_size=60, should_stop=lambda: False, settings={"steps": 4}))
    finally:
        backend.close()
    result = items[-1]
    assert backend.is_result(result) and result.provenance["recovered"]["steps"] == 4
    assert any(getattr(item, "stage", "") == "recover" for item in items[:-1])
