"""Sessions (issue 18): saving and reopening restores every point and the current configuration; a changed
model, a damaged file or a clean close behave as the user expects. Real core (the sample), in-thread backend."""

from __future__ import annotations

import json
from pathlib import Path

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.session import read_session, session_bytes
from qtradeoff.gui.plot import point_key


def _wait_idle(qtbot, window, timeout=60000):
    qtbot.waitUntil(lambda: not window.progress.isVisible() and not window.service.has_pending(), timeout=timeout)


def _points(window):
    store = window.plot.store
    return sorted((point_key(r.config), r.eval_samples, round(r.agreement, 6), m.get("label", ""))
                  for r, m in zip(store.results, store.meta, strict=True))


def test_save_and_reopen_restores_every_point_and_the_configuration(make_window, qtbot, tmp_path):
    window = make_window(eval_size=40)
    base = CompressionConfig(model=window.state.config.model)
    for weight in ("int8", "int4"):
        config = base.with_defaults(weight={"precision": weight})
        window.apply_config(config, "test")
        qtbot.waitUntil(lambda config=config: window.plot.store.find(config.key()) is not None, timeout=60000)
    window.plot.store.meta[-1]["label"] = "the int4 one"
    window.plot.set_answer(len(window.plot.store) - 1)  # as a search marks its answer
    window.plot.store.meta[-1]["strategy"] = "greedy"
    _wait_idle(qtbot, window)
    saved = _points(window)
    current = window.state.config.key()
    assert len(saved) == 3
    path = tmp_path / "explore"
    assert window.sessions.save(path)  # the suffix is added
    assert read_session(tmp_path / "explore.qtsession").eval_size == 40
    window.close()

    again = make_window(load=False)
    assert again.open_path(tmp_path / "explore.qtsession") == "session"
    qtbot.waitUntil(lambda: "Restored the session" in again.job.label.text(), timeout=60000)
    _wait_idle(qtbot, again)
    assert _points(again) == saved
    answer = again.plot.answer  # the answer mark survives the reopen (issue 18), applicable again
    assert answer is not None and point_key(again.plot.store.results[answer].config) == point_key(config)
    assert again.plot.store.meta[answer].get("strategy") == "greedy"
    assert again.explore_panel.answer is again.plot.store.results[answer]
    assert again.state.config.key() == current and again.eval_size == 40
    assert again.current_result() is not None  # the restored point of the current configuration, not re-run
    again.undo_stack.undo()  # opening the session was one undoable step
    assert again.state.config.key() != current


def test_a_changed_model_restores_nothing_and_says_why(make_window, qtbot, tmp_path):
    window = make_window(eval_size=20)
    session = window.sessions.current()
    doc = json.loads(session_bytes(session))
    doc["model"]["sha256"] = "f" * 64
    path = tmp_path / "old.qtsession"
    path.write_text(json.dumps(doc))
    window.sessions.open(path)
    qtbot.waitUntil(lambda: "changed since the session was saved" in window.messages.text(), timeout=60000)
    _wait_idle(qtbot, window)
    assert window.sessions.pending() is None and len(window.plot.store) == 1  # the fresh baseline only


def test_damaged_session_changes_nothing(make_window, qtbot, tmp_path):
    window = make_window(eval_size=20)
    before = (_points(window), window.state.config.key())
    path = tmp_path / "cut.qtsession"
    path.write_bytes(session_bytes(window.sessions.current())[:300])
    assert not window.sessions.open(path)
    assert "cut.qtsession" in window.messages.text() and "Nothing was changed" in window.messages.text()
    assert (_points(window), window.state.config.key()) == before


def test_autosave_is_written_and_removed_by_a_clean_close(make_window, qtbot, tmp_path, settings):
    from qtradeoff.gui.main_window import MainWindow
    from qtradeoff.gui.worker import EvaluationService

    autosave = tmp_path / "auto" / "autosave.qtsession"
    window = MainWindow(service=EvaluationService(), settings=settings, autosave_path=autosave)
    qtbot.addWidget(window)
    window.show()
    window.eval_size = 20
    window.load_sample()
    qtbot.waitUntil(lambda: window.baseline is not None, timeout=60000)
    assert window.sessions.autosave() and autosave.is_file()
    assert not window.sessions.autosave()  # nothing changed since
    assert len(read_session(autosave).points) == 1
    window.close()
    assert not Path(autosave).exists()


def test_a_session_reads_its_data_again_with_the_options_it_was_read_with(make_window, qtbot, tmp_path):
    import numpy as np

    from qtradeoff.core.loading.data import DIGITS_FILE, preprocess_digits

    window = make_window(load=False, eval_size=60)
    window.load_sample("digits_mlp")
    qtbot.waitUntil(lambda: window.baseline is not None, timeout=60000)
    _wait_idle(qtbot, window)
    with np.load(DIGITS_FILE) as archive:
        index = archive["test_idx"][:120]
        images, labels = archive["images"][index], archive["labels"][index]
    features = preprocess_digits(images, {"size": 8, "flatten": True}).numpy()
    table = tmp_path / "digits.csv"  # the label column has a name the loader does not guess
    table.write_text(",".join(f"p{i}" for i in range(64)) + ",digit\n" + "".join(
        ",".join(f"{v:.4f}" for v in row) + f",{label}\n" for row, label in zip(features, labels, strict=True)))
    with qtbot.waitSignal(window.service.data_loaded, timeout=60000):
        window.load_data(table, options={"kind": "csv", "label_column": "digit", "calib_size": 30})
    qtbot.waitUntil(lambda: window.baseline is not None, timeout=60000)
    _wait_idle(qtbot, window)
    assert window.summary.labelled and window.baseline.accuracy > 0.85
    assert window.sessions.save(tmp_path / "csv")
    saved = read_session(tmp_path / "csv.qtsession")
    assert saved.data_options["label_column"] == "digit" and saved.data_path == str(table.resolve())
    saved_points = _points(window)
    window.close()

    again = make_window(load=False)
    again.open_path(tmp_path / "csv.qtsession")
    qtbot.waitUntil(lambda: "Restored the session" in again.job.label.text(), timeout=60000)
    _wait_idle(qtbot, again)
    assert again.data_options["label_column"] == "digit" and again.summary.labelled
    assert again.baseline is not None and again.baseline.accuracy > 0.85
    # every saved point is back, and nothing more: no extra fp32 baseline on the model's own data before the
    # session's data loads (there once was)
    assert set(saved_points) == set(_points(again)) and len(again.plot.store) == len(saved_points)
