"""One-off evaluations: :func:`evaluate_iter` / :func:`evaluate` build an :class:`~qtradeoff.core.engine.Engine`
for a single configuration. To evaluate many configurations of one model, build an Engine once and call its
``evaluate_iter`` (this module keeps nothing between calls).

Re-exports what an evaluation produces (:class:`Result`, :class:`Progress`, :class:`Cancelled`, the statistics),
which lives in :mod:`qtradeoff.core.measurement.result`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import EVAL_BATCH, Engine
from qtradeoff.core.measurement.result import (
    LATENCY_MODES,
    Cancelled,
    Progress,
    Result,
    sqnr_db,
    wilson_interval,
)


def evaluate_iter(loaded, data, config: CompressionConfig, *, should_stop: Callable[[], bool] = lambda: False,
                  **kwargs) -> Iterator[Progress | Result]:
    """Evaluate ``config`` on ``loaded`` (a LoadedModel) and ``data`` (an EvalData) with a fresh engine; see
    :meth:`Engine.evaluate_iter` for the options. Yields Progress, then one Result."""
    yield from Engine(loaded, data).evaluate_iter(config, should_stop=should_stop, **kwargs)


def evaluate(loaded, data, config: CompressionConfig, *, should_stop: Callable[[], bool] = lambda: False,
             latency: str = "both", **kwargs) -> Result:
    """Run :func:`evaluate_iter` to the end and return its Result; raises :class:`Cancelled` when stopped."""
    return Engine(loaded, data).evaluate(config, should_stop=should_stop, latency=latency, **kwargs)


__all__ = ["EVAL_BATCH", "LATENCY_MODES", "Cancelled", "Engine", "Progress", "Result", "evaluate", "evaluate_iter",
           "sqnr_db", "wilson_interval"]
