"""GUI test fixtures: leak checks (threads, timers, windows), temporary QSettings, a fake backend for worker tests,
and a factory for main windows on the real core.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from shiboken6 import isValid  # noqa: E402

from qtradeoff.core.config import CompressionConfig, bits_of  # noqa: E402
from qtradeoff.gui.backend import THRESHOLDS, ModelSummary, SearchPoint, SearchScores, SearchStep  # noqa: E402
from qtradeoff.gui.worker import running_threads  # noqa: E402


def _active_timers() -> list[QTimer]:
    timers = []
    for obj in gc.get_objects():
        if issubclass(type(obj), QTimer):  # type(), not isinstance: some objects warn on __class__
            try:
                if isValid(obj) and obj.isActive():
                    timers.append(obj)
            except RuntimeError:
                pass
    return timers


@pytest.fixture(autouse=True)
def qt_leak_check(qapp):
    """Fail a test that leaves a worker QThread running, a QTimer active or a top-level window open."""
    yield
    QApplication.processEvents()
    problems = []
    threads = running_threads()
    if threads:
        problems.append(f"{len(threads)} worker QThread(s) still running")
    timers = _active_timers()
    if timers:
        problems.append(f"{len(timers)} QTimer(s) still active: {[t.parent() for t in timers]}")
    windows = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    if windows:
        problems.append(f"top-level widget(s) still open: {windows}")
    for thread in threads:  # don't let one leaky test poison the rest of the session
        thread.quit()
        thread.wait(5000)
    for timer in timers:
        timer.stop()
    for window in windows:
        window.close()
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def settings(tmp_path):
    """A throwaway INI file so tests never touch the user's real settings."""
    return QSettings(str(tmp_path / "qtradeoff-test.ini"), QSettings.IniFormat)


# -- a fake backend (fast, deterministic) for worker and window-logic tests --------------------------------------
@dataclass(frozen=True)
class FakeLayer:
    name: str
    kind: str
    params: int
    macs: int
    weight_shape: tuple = ()
    output_shape: tuple = ()
    groups: int = 1
    compressible: bool = True


@dataclass(frozen=True)
class FakeProgress:
    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class FakeResult:
    config: Any
    config_key: str
    accuracy: float
    accuracy_ci95: tuple
    weight_bytes: int
    fp32_weight_bytes: int
    eval_samples: int
    latency: float
    measured: bool
    labelled: bool = True
    agreement: float = 1.0
    agreement_ci95: tuple = (1.0, 1.0)
    sqnr_db: float = 40.0
    peak_activation_bytes: int = 4096
    provenance: dict = field(default_factory=dict)
    # what an exported configuration's metrics also read (no latency stats: the fake has one number)
    top5: float | None = None
    top5_ci95: tuple | None = None
    latency_measured: tuple = ()
    latency_estimated: tuple = ()
    measured_note: str = ""

    def latency_ms(self, batch=1, measured=True):
        if measured:
            return self.latency if self.measured else None
        return self.latency * 1.1


class FakeNeedsTrust(Exception):
    def __init__(self, message, globals=None, format=None):  # noqa: A002
        super().__init__(message)
        self.globals = globals or []
        self.format = format


class FakeCancelled(Exception):
    pass


class FakeBackend:
    """Mimics CoreBackend without torch: evaluations take ``steps`` progress ticks, waiting on ``gate`` if set."""

    NeedsTrust = FakeNeedsTrust
    Cancelled = FakeCancelled
    expected_errors = (ValueError,)
    LAYERS = (FakeLayer("conv1", "Conv2d", 300, 30000), FakeLayer("conv2", "Conv2d", 900, 90000),
              FakeLayer("fc", "Linear", 1280, 1280))

    def __init__(self, steps: int = 3):
        self.steps = steps
        self.gate: threading.Event | None = None  # when set, evaluations block until the gate opens or cancel
        self.started = threading.Event()
        self.evaluated: list[Any] = []
        self.runtimes_asked: list[tuple[str, tuple[str, ...]]] = []  # (latency, other runtimes) per evaluation
        self.trusted_paths: set[str] = set()
        # searches: every point after the first waits on ``search_gate`` if set (or a stop)
        self.search_gate: threading.Event | None = None
        self.search_started = threading.Event()
        self.search_done = threading.Event()  # set when a search generator has run out
        self.search_ignores_stop = False  # a search that runs on after a stop (what the service must not forward)
        self.searches: list[tuple[str, dict]] = []

    def _summary(self, name: str) -> ModelSummary:
        curve = tuple(min(0.9, t / 3) for t in THRESHOLDS)
        return ModelSummary(name=name, path=f"/fake/{name}.safetensors", format="safetensors", trusted=False,
                            sha256="0" * 64, file_bytes=10000, params=2480, fp32_weight_bytes=9920,
                            layers=self.LAYERS, sparsity_curve=curve,
                            layer_sparsity_curve={layer.name: curve for layer in self.LAYERS},
                            data_name="fake digits", eval_samples_total=359, calib_samples=179, labelled=True,
                            num_classes=10)

    def has_model(self):
        return True

    def load_sample(self, name):
        return self._summary(name)

    def load_model(self, path, *, trust=False):
        if "bad" in path:
            raise ValueError(f"{path} is not a model file; open a safetensors, TorchScript or PyTorch file.")
        if "pickle" in path and not trust:
            raise FakeNeedsTrust("needs trust", globals=["evil.module.Thing"], format="pickle")
        return self._summary(path.rsplit("/", 1)[-1])

    def load_data(self, path):
        if "bad" in path:
            raise ValueError(f"{path} holds no tensors named inputs/labels.")
        return {"name": path, "eval_samples": 200, "calib_samples": 50, "labelled": True}

    def baseline_config(self):
        return CompressionConfig()

    def evaluate_iter(self, config, *, eval_size, latency, should_stop, runtimes=()):
        self.started.set()
        self.runtimes_asked.append((latency, tuple(runtimes)))
        for step in range(self.steps):
            if self.gate is not None:
                while not self.gate.wait(0.01):
                    if should_stop():
                        raise FakeCancelled()
            if should_stop():
                raise FakeCancelled()
            yield FakeProgress(step + 1, self.steps, "fake")
        self.evaluated.append(config)
        yield self._result(config, eval_size, latency)

    @staticmethod
    def _result(config, eval_size, latency):
        bits = bits_of(config.weight.precision)
        accuracy = 0.98 - (0.3 if bits <= 3 else 0.05 if bits <= 4 else 0.0) - 0.01 * len(config.overrides())
        weight_bytes = int(9920 * bits / 32)
        return FakeResult(config=config, config_key=config.key(), accuracy=accuracy,
                          accuracy_ci95=(accuracy - 0.02, min(1.0, accuracy + 0.02)), weight_bytes=weight_bytes,
                          fp32_weight_bytes=9920, eval_samples=eval_size or 359, latency=0.1 + bits / 100,
                          measured=latency == "measured")

    def is_result(self, item):
        return isinstance(item, FakeResult)

    def search_iter(self, strategy, options, *, should_stop):
        """A uniform-bits walk (int8, int6, ...) keeping the layers ``base_config`` locks, ``budget`` points."""
        self.searches.append((strategy, dict(options)))
        self.search_started.set()
        if strategy not in ("grid", "greedy", "sensitivity"):
            raise ValueError(f"unknown strategy {strategy!r}")
        base = options.get("base_config") or CompressionConfig()
        if strategy == "sensitivity":
            yield SearchStep(1, 1, "sensitivity")
            yield SearchScores({layer.name: 0.01 * (i + 1) for i, layer in enumerate(self.LAYERS)})
            return
        budget = min(int(options.get("budget", 3)), 5)
        yield SearchStep(0, budget, "search")
        stopped = (lambda: False) if self.search_ignores_stop else should_stop
        for step, bits in enumerate((8, 6, 4, 3, 2)[:budget]):
            if step and self.search_gate is not None:
                while not self.search_gate.wait(0.01):
                    if stopped():
                        return
            if stopped():
                return
            config = base.with_defaults(weight={"precision": f"int{bits}"})
            for layer in self.LAYERS:
                if base.is_locked(layer.name, layer.kind):
                    precision = base.resolve(layer.name, layer.kind).weight.precision
                    config = config.with_layer(layer.name, weight={"precision": precision})
            yield SearchPoint(config, self._result(config, None, "estimated"), step + 1, budget)
        self.search_done.set()


@pytest.fixture
def fake_backend():
    return FakeBackend()


@pytest.fixture
def make_window(qtbot, settings):
    """Factory: a shown MainWindow (real core unless ``backend`` is given); closed before the leak check runs."""
    from qtradeoff.gui.main_window import MainWindow
    from qtradeoff.gui.worker import EvaluationService

    windows = []

    def make(backend=None, *, load=True, wait=True, eval_size=None, baseline_latency="estimated"):
        service = EvaluationService(backend=backend)
        window = MainWindow(service=service, settings=settings)
        window.baseline_latency = baseline_latency  # timing on real kernels only where a test needs it
        window.files.ask_data_options = False  # dropped data loads at once (the data dialog's tests turn it on)
        if eval_size is not None:
            window.eval_size = eval_size
        qtbot.addWidget(window)
        windows.append(window)
        window.show()
        if load:
            window.load_sample()
            if wait:
                qtbot.waitUntil(lambda: window.baseline is not None, timeout=60000)
                qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=60000)
        return window

    yield make
    for window in windows:
        window.close()
