"""Recovery fine-tune from the window: the results table's "Recover (fine-tune)…" on a point runs as a worker job
(progress and Cancel in the status bar), the recovered point lands on the plot tagged "recovered", and File →
Export compressed model uses a recovered point's weights while its configuration is the edited one.

The weights stay in the worker (a file in the cache folder, named by the Result's ``provenance["recovered"]``);
this module only holds which file belongs to the point the user picked.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Slot

from qtradeoff.gui.plot import point_key


def recovered_info(result: Any) -> dict | None:
    """The ``provenance["recovered"]`` of a recovered point's Result, else None."""
    info = (getattr(result, "provenance", None) or {}).get("recovered")
    return info if isinstance(info, dict) else None


class RecoveryActions(QObject):
    """Wires recovery into a MainWindow (see the module docstring)."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self._weights: tuple[str, str] | None = None  # (point key, recovered-weights path) of the picked point
        self.settings: dict = {}  # RecoverySettings fields to override (the core's defaults otherwise)
        window.results.recover_requested.connect(self.recover_point)
        window.plot.point_clicked.connect(self._picked)
        window.results.apply_requested.connect(self._picked)
        window.service.result_ready.connect(self._on_result)

    def can_recover(self, index: int) -> bool:
        store = self.window.plot.store
        if not 0 <= index < len(store):
            return False
        return store.meta[index].get("tag") != "baseline" and recovered_info(store.results[index]) is None

    @Slot(int)
    def recover_point(self, index: int) -> None:
        """Fine-tune point ``index``'s configuration on the calibration split, as a worker job."""
        window = self.window
        if not self.can_recover(index):
            window.job.set_text("Recovery needs a compressed point that is not recovered already (not the fp32 "
                                "baseline).")
            return
        result = window.plot.store.results[index]
        window.job.set_text(f"Fine-tuning configuration #{index + 1} on the calibration split (the evaluation "
                            "split is never trained on)…", transient=True)
        window.service.recover(result.config, eval_size=int(result.eval_samples), source=index,
                               settings=self.settings)

    @Slot(object, object)
    def _on_result(self, result: Any, meta: dict) -> None:
        if meta.get("tag") != "recovered":
            return
        source = meta.get("source")
        store = self.window.plot.store
        before = ""
        if isinstance(source, int) and 0 <= source < len(store):
            old = store.results[source]
            before = f" from {100 * (old.accuracy if old.accuracy is not None else old.agreement):.2f} %"
        value = result.accuracy if result.accuracy is not None else result.agreement
        info = recovered_info(result) or {}
        self.window.job.set_text(f"Recovered point #{len(store)}: {100 * value:.2f} %{before} after "
                                 f"{info.get('steps')} steps on the {info.get('split')} split.")

    @Slot(int)
    def _picked(self, index: int) -> None:
        store = self.window.plot.store
        info = recovered_info(store.results[index]) if 0 <= index < len(store) else None
        self._weights = (point_key(store.results[index].config), str(info.get("path") or "")) if info else None

    def export_weights(self) -> str | None:
        """The recovered-weights file an export of the edited configuration uses (the picked recovered point's,
        while its configuration is still the edited one), else None."""
        if self._weights is None or not self._weights[1]:
            return None
        key, path = self._weights
        return path if point_key(self.window.state.config) == key else None


def attach_recovery(window: Any) -> RecoveryActions:
    window.recovery = RecoveryActions(window)
    return window.recovery
