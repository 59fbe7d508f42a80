"""The current-configuration panel says what a result warns about, beside what the measurement could not do."""

from __future__ import annotations

import dataclasses

from qtradeoff.gui.current_panel import CurrentPanel
from tests.gui.conftest import FakeResult


def _result(**provenance) -> FakeResult:
    return FakeResult(config=None, config_key="k", accuracy=0.9, accuracy_ci95=(0.85, 0.94), weight_bytes=10,
                      fp32_weight_bytes=40, eval_samples=100, latency=0.2, measured=False,
                      measured_note="pruned weights run dense", provenance=provenance)


def test_model_warnings_come_first_in_the_note(qtbot):
    panel = CurrentPanel()
    qtbot.addWidget(panel)
    panel.show(_result(warnings=["model.pt: 3 weights of fc.weight are NaN"]))
    note = panel.fields["note"].text()
    assert note.startswith("Warning: model.pt: 3 weights of fc.weight are NaN") and "pruned weights" in note
    panel.show(_result())
    assert panel.fields["note"].text() == "pruned weights run dense"


def test_a_noisy_measured_latency_says_so_and_a_steady_one_does_not(qtbot):
    from qtradeoff.core.measurement.latency import LatencyStats

    panel = CurrentPanel()
    qtbot.addWidget(panel)
    steady = LatencyStats(batch=1, median_ms=0.30, iqr_ms=0.02, repeats=9)
    noisy = LatencyStats(batch=1, median_ms=0.30, iqr_ms=0.20, repeats=9)
    for stats, flagged in ((steady, False), (noisy, True)):
        result = dataclasses.replace(_result(), latency_measured=(stats,))
        panel.show(result)
        text = panel.fields["latency"].text()
        assert "0.300 ms measured (IQR" in text and ("NOISY" in text) == flagged, text
        assert "estimated" in text


def test_a_latency_timed_beside_fp32_shows_its_ratio_and_disagreeing_ratios_mark_it_noisy(qtbot):
    from qtradeoff.core.measurement.latency import LatencyStats

    panel = CurrentPanel()
    qtbot.addWidget(panel)
    steady = LatencyStats(batch=1, median_ms=0.30, iqr_ms=0.02, repeats=9, fp32_ratio=0.45, ratio_spread=0.03)
    swinging = LatencyStats(batch=1, median_ms=0.30, iqr_ms=0.02, repeats=9, fp32_ratio=0.45, ratio_spread=0.40)
    for stats, flagged in ((steady, False), (swinging, True)):
        panel.show(dataclasses.replace(_result(), latency_measured=(stats,)))
        text = panel.fields["latency"].text()
        assert "0.45× fp32" in text and ("NOISY" in text) == flagged, text
    assert "40%" in text
