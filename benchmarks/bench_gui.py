"""Benchmark of the GUI thread's stalls while the model work runs, every figure measured in this run.

A 10 ms QTimer on the GUI thread records the gap between its ticks; a gap is how long the GUI thread could not
run (a perfect loop shows ~10 ms). Printed: the longest and the 99th-percentile gap, and ``busy``: the GUI thread's
own CPU time in its worst gap (time.thread_time), which tells the GUI's own work from time it spent waiting for the
GIL or for a core (the machine may be shared), and ``gc``: the longest garbage collection of this process during
the scenario (gc.callbacks; it stops the GUI thread, and both windows live in this process, so the in-thread
window's torch objects are collected in the worker-process window's scenarios too), in three scenarios, for the
in-thread backend (CoreBackend in the worker QThreads, sharing the GIL with the GUI) and the worker-process backend
(ProcessBackend: the model work in spawned children) side by side, the two run one after the other per scenario:

- ``edits``: 20 configurations applied one by one on digits_cnn (100-sample evaluations, estimated latency), each
  waited for, as a user moving sliders;
- ``greedy``: an Explore greedy search with ``--budget`` evaluations (for the process backend this includes the
  search child loading the model on its first search);
- ``drop``: opening a model file (``--drop``, by default the bundled mobilenet_v3_small_digits.pt, a pickled
  torchvision module), to the end of its baseline evaluation (measured + estimated latency, as the app does).

Each backend's window runs in a process of its own, the two one after the other (``--together``: both windows in
this one process, as before; then the in-thread window's torch objects make the other window's garbage collections
long). Target: worker-process longest gap <= 50 ms. Run offscreen and under the shared lock:
  QT_QPA_PLATFORM=offscreen flock /tmp/bench.lock .venv/bin/python benchmarks/bench_gui.py [--budget 8]
      [--drop FILE] [--rounds 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Qt is imported inside main(): the worker children re-import this file as their __main__ and must not load Qt.
ROOT = Path(__file__).resolve().parents[1]
PROBE_MS = 10


class Probe:
    """Gaps between the ticks of a 10 ms QTimer on the GUI thread, while ``running``."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.gaps: list[float] = []
        self.busy: list[float] = []  # the GUI thread's own CPU time within each gap
        self.gc_ms = 0.0  # the longest garbage collection of the GUI process meanwhile (it stops the GUI thread)
        self._gc_started = 0.0
        self._last = 0.0
        self._last_cpu = 0.0
        self._timer = QTimer()
        self._timer.setInterval(PROBE_MS)
        self._timer.timeout.connect(self._tick)

    def _gc(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_ms = max(self.gc_ms, (time.perf_counter() - self._gc_started) * 1000)

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.gaps.append((now - self._last) * 1000)
        self.busy.append((cpu - self._last_cpu) * 1000)
        self._last, self._last_cpu = now, cpu

    def __enter__(self) -> Probe:
        import gc

        self.gaps, self.busy, self.gc_ms = [], [], 0.0
        self._last, self._last_cpu = time.perf_counter(), time.thread_time()
        gc.callbacks.append(self._gc)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        self._timer.stop()
        gc.callbacks.remove(self._gc)


def wait_until(condition, timeout: float, what: str) -> None:
    """Run the GUI event loop until ``condition()`` (checked every 5 ms by a timer of the same loop)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.monotonic() + timeout
    check = QTimer()
    check.setInterval(5)

    def poll() -> None:
        if condition() or time.monotonic() > deadline:
            loop.quit()

    check.timeout.connect(poll)
    check.start()
    loop.exec()
    check.stop()
    if not condition():
        raise SystemExit(f"bench_gui: timed out after {timeout:.0f} s waiting for {what}.")


def idle(window) -> bool:
    return (not window.progress.isVisible() and not window.service.has_pending()
            and not window.service.search_running())


def scenario_edits(window) -> int:
    from qtradeoff.core.config import CompressionConfig

    base = CompressionConfig(model=window.state.config.model)
    configs = [base.with_defaults(weight={"precision": w}, activation={"precision": a})
               for w in ("int8", "int6", "int4", "int3", "fp16") for a in ("fp32", "int8", "bf16", "int6")]
    for config in configs:
        window.apply_config(config, "bench")
        wait_until(lambda c=config: window.plot.store.find(c.key()) is not None, 300, "an edit's point")
    wait_until(lambda: idle(window), 300, "the window to be idle")
    return len(configs)


def scenario_greedy(window, budget: int) -> int:
    panel = window.explore_panel
    panel.strategy.setCurrentIndex(panel.strategy.findData("greedy"))
    panel.budget.setValue(budget)
    if not panel.start():
        raise SystemExit(f"bench_gui: the greedy search did not start ({panel.last_message}).")
    wait_until(lambda: not window.service.search_running(), 1200, "the greedy search")
    wait_until(lambda: idle(window), 300, "the window to be idle")
    return panel.points_found


def scenario_drop(window, path: Path) -> int:
    window.baseline = None
    window.open_path(path)
    wait_until(lambda: window.summary is not None and Path(window.summary.path) == path and window.baseline
               is not None, 900, f"{path.name} to load and its baseline")
    wait_until(lambda: idle(window), 300, "the window to be idle")
    return len(window.summary.layers)


def stalls(gaps: list[float]) -> tuple[float, float]:
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return max(ordered), p99


def run_windows(names: list[str], args: argparse.Namespace) -> tuple[dict, dict, str]:
    """One window per backend in ``names``, in this process; every scenario on each. Returns (figures, closing ms,
    a line on the start-up)."""
    from PySide6.QtCore import QSettings

    from qtradeoff.gui.app import make_app
    from qtradeoff.gui.backend import CoreBackend
    from qtradeoff.gui.main_window import MainWindow
    from qtradeoff.gui.remote import ProcessBackend
    from qtradeoff.gui.worker import EvaluationService

    app = make_app([sys.argv[0]])
    scratch = tempfile.TemporaryDirectory()
    settings = QSettings(str(Path(scratch.name) / "bench.ini"), QSettings.IniFormat)
    windows = {}
    started = time.perf_counter()
    for name in names:
        backend = CoreBackend() if name == "thread" else ProcessBackend()
        window = MainWindow(service=EvaluationService(backend=backend), settings=settings)
        window.baseline_latency = "estimated"  # the start-up load is not measured; the drop times the baseline
        window.show()
        window.load_sample()
        windows[name] = window
    for window in windows.values():
        wait_until(lambda w=window: w.baseline is not None and idle(w), 600, "the sample to load")
    if "thread" in windows:  # the in-thread window runs torch in this process; the app's GUI process never imports it
        import torch

        threads = f"torch threads {torch.get_num_threads()}"
    else:
        threads = "no torch in this process (as in the app)"
    ready = (f"{len(windows)} window(s) per process on digits_cnn ready in {time.perf_counter() - started:.1f} s; "
             f"{threads}, {os.cpu_count()} cores, probe {PROBE_MS} ms")

    figures: dict[str, dict[str, list]] = {}
    scenarios = [("edits", scenario_edits), ("greedy", lambda w: scenario_greedy(w, args.budget))]
    for round_index in range(args.rounds):
        # interleaved: the two backends alternate which runs first, so a change in machine load hits both
        order = list(windows.items()) if round_index % 2 == 0 else list(reversed(windows.items()))
        for scenario, run in scenarios:
            for name, window in order:
                with Probe() as probe:
                    begun = time.perf_counter()
                    count = run(window)
                    seconds = time.perf_counter() - begun
                figures.setdefault(scenario, {}).setdefault(name, []).append(
                    (*stalls(probe.gaps), seconds, count, max(probe.busy), probe.gc_ms))
    for name, window in windows.items():  # last: the windows then hold another model
        window.baseline_latency = "both"
        with Probe() as probe:
            begun = time.perf_counter()
            count = scenario_drop(window, args.drop.resolve())
            seconds = time.perf_counter() - begun
        figures.setdefault("drop", {}).setdefault(name, []).append(
            (*stalls(probe.gaps), seconds, count, max(probe.busy), probe.gc_ms))

    closing = {}
    for name, window in windows.items():
        begun = time.perf_counter()
        window.close()
        closing[name] = (time.perf_counter() - begun) * 1000
    app.processEvents()
    return figures, closing, ready


def run_separately(args: argparse.Namespace) -> tuple[dict, dict, str]:
    """Each backend's window in a process of its own (as the app runs: its GUI process never holds the in-thread
    backend's models, whose garbage collections would stop the other window's GUI thread), the two processes one
    after the other, alternating which goes first round by round."""
    figures: dict[str, dict[str, list]] = {}
    closing: dict[str, float] = {}
    ready = ""
    for round_index in range(args.rounds):
        order = ["thread", "process"] if round_index % 2 == 0 else ["process", "thread"]
        for name in order:
            command = [sys.executable, str(Path(__file__).resolve()), "--together", "--backends", name, "--rounds",
                       "1", "--budget", str(args.budget), "--drop", str(args.drop), "--json"]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                raise SystemExit(f"bench_gui: the {name} window's process failed:\n{done.stderr[-2000:]}")
            data = json.loads(lines[-1])
            for scenario, by_backend in data["figures"].items():
                for backend, runs in by_backend.items():
                    figures.setdefault(scenario, {}).setdefault(backend, []).extend(runs)
            closing[name] = max(closing.get(name, 0.0), data["closing_ms"][name])
            ready = data["ready"].replace("window(s) per process", "window per process")
    return figures, closing, ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=8, help="evaluations of the greedy search")
    parser.add_argument("--drop", type=Path, default=ROOT / "sample_models" / "mobilenet_v3_small_digits.pt")
    parser.add_argument("--rounds", type=int, default=1, help="times each scenario runs per backend")
    parser.add_argument("--together", action="store_true",
                        help="both windows in this one process (the in-thread window's objects then cost the other "
                             "window garbage collections); default: one process per backend")
    parser.add_argument("--backends", default="thread,process", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="one JSON line with every figure")
    args = parser.parse_args()
    if not args.drop.is_file():
        print(f"bench_gui: {args.drop} is not a file.", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    names = [name for name in args.backends.split(",") if name]
    if args.together:
        figures, closing, ready = run_windows(names, args)
    else:
        figures, closing, ready = run_separately(args)
    if args.json and len(names) == 1:  # a child of run_separately: its figures only
        print(json.dumps({"figures": figures, "closing_ms": closing, "ready": ready}))
        return 0
    print(f"bench_gui: {ready}")

    units = {"edits": "evaluations", "greedy": "points", "drop": "layers"}
    print(f"{'scenario':<8} {'backend':<8} {'longest ms':>10} {'p99 ms':>8} {'busy ms':>8} {'gc ms':>6} "
          f"{'seconds':>8}  work")
    for scenario, by_backend in figures.items():
        for name, runs in by_backend.items():
            longest = max(run[0] for run in runs)
            p99 = statistics.median(run[1] for run in runs)
            seconds = statistics.median(run[2] for run in runs)
            busy = max(run[4] for run in runs)
            collected = max(run[5] for run in runs)
            print(f"{scenario:<8} {name:<8} {longest:>10.0f} {p99:>8.0f} {busy:>8.0f} {collected:>6.0f} "
                  f"{seconds:>8.1f}  {runs[-1][3]} {units[scenario]}"
                  + (f" ({args.drop.name})" if scenario == "drop" else ""))
        thread_longest = max(run[0] for run in by_backend["thread"])
        process_longest = max(run[0] for run in by_backend["process"])
        print(f"{'':<8} longest gap process/thread = {process_longest / thread_longest:.2f}")
    print(f"closing the window: thread {closing['thread']:.0f} ms, process {closing['process']:.0f} ms (idle)")
    worst = max(max(run[0] for run in by_backend["process"]) for by_backend in figures.values())
    print(f"target: worker-process longest gap <= 50 ms: {'met' if worst <= 50 else 'NOT met'} ({worst:.0f} ms)")
    if args.json:
        print(json.dumps({"figures": figures, "closing_ms": closing, "budget": args.budget,
                          "drop": str(args.drop), "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
