"""The status bar never keeps saying a job is running once it has ended (issue 18: stale "evaluating…" and
"Cancelling…" after a cancel)."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMainWindow

from qtradeoff.gui.job_status import JobStatus


@pytest.fixture
def status(qtbot):
    window = QMainWindow()
    qtbot.addWidget(window)
    pending = {"more": False}
    job = JobStatus(window.statusBar(), pending=lambda: pending["more"], error_showing=lambda: False)
    yield job, pending
    job.stop()


def test_cancelled_evaluation_says_so(status):
    job, _ = status
    job.started("eval", "evaluating")
    assert job.label.text() == "Evaluating…"
    job.set_text("Cancelling…", transient=True)
    job.finished("eval", False)
    assert job.label.text() == "Cancelled the evaluation."
    assert job.progress.isHidden() and not job.cancel_button.isEnabled()


def test_cancelled_load_says_the_model_is_kept(status):
    job, _ = status
    job.started("load", "loading big.pt")
    job.set_text("Cancelling…", transient=True)
    job.finished("load", False)
    assert job.label.text() == "Cancelled loading big.pt. The current model is kept."


def test_finished_job_without_a_message_leaves_ready(status):
    job, _ = status
    job.started("eval", "evaluating")
    job.finished("eval", True)
    assert job.label.text() == "Ready."


def test_a_message_set_during_the_job_stays(status):
    job, _ = status
    job.started("eval", "evaluating")
    job.set_text("Evaluated configuration #3.")
    job.finished("eval", True)
    assert job.label.text() == "Evaluated configuration #3."


def test_queued_jobs_keep_the_bar_busy(status):
    job, pending = status
    pending["more"] = True
    job.started("eval", "evaluating")
    job.finished("eval", True)
    assert job.label.text() == "Evaluating…" and job.cancel_button.isEnabled()
