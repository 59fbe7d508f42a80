"""From a plot to a decision, in the window (fake backend, fast): a search moves the plot and the edits to its
evaluation set, its answer is marked, listed and applied in one undoable step, and the plot saves as an image."""

from __future__ import annotations


def _search(window, qtbot, strategy="grid", budget=3):
    panel = window.explore_panel
    panel.set_strategy(strategy)
    panel.budget.setValue(budget)
    with qtbot.waitSignal(panel.running_changed, timeout=10000, check_params_cb=lambda running: not running):
        assert panel.start()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=10000)
    return panel


def test_a_search_moves_the_plot_and_the_edits_to_its_evaluation_set(make_window, fake_backend, qtbot):
    window = make_window(fake_backend)
    plot, store = window.plot, window.plot.store
    assert window.eval_size == 100 and store.eval_sets[plot.shown_set()].samples == 100
    _search(window, qtbot)
    assert window.eval_size == 359  # the edits are measured on the search's samples now
    assert store.eval_sets[plot.shown_set()].samples == 359
    baselines = [r.eval_samples for r, meta in zip(store.results, store.meta, strict=True)
                 if meta.get("tag") == "baseline"]
    assert sorted(baselines) == [100, 359]  # the fp32 baseline of the search's set was asked for
    plot.redraw()
    rows = set(plot.frontier_indices("latency")) | set(plot.frontier_indices("memory"))
    assert rows and all(store.results[i].eval_samples == 359 for i in rows)
    assert not plot.set_switch.isHidden()
