"""Per-layer sensitivity: how much accuracy (or fidelity) each layer loses when it alone is quantized or pruned.

:func:`sensitivity_iter` is the engine (a generator with ``should_stop``, yielding progress and per-layer
results; one layer's trials are scored together through ``session.score_variants`` when the session has it,
which runs the graph after the layer once for all of them); reports are cached on disk per (model sha256, data
fingerprint, settings) as JSON under ``~/.cache/qtradeoff/sensitivity/``. Drops are in percentage points of
accuracy when the data is labelled, else of top-1 agreement with the fp32 model.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qtradeoff import __version__
from qtradeoff.core import paths
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.measurement.result import Cancelled

DEFAULT_BITS: tuple[int, ...] = (8, 6, 4, 3, 2)
DEFAULT_SPARSITIES: tuple[float, ...] = (0.25, 0.5, 0.75)
SCHEMA = "qtradeoff.sensitivity/2"


def default_cache_dir() -> Path:
    """``sensitivity/`` under the project's cache folder (see :func:`qtradeoff.core.paths.cache_dir`)."""
    return paths.cache_dir() / "sensitivity"


@dataclass(frozen=True)
class SensitivitySettings:
    """What each layer is tried at: integer weight bit-widths (per-channel symmetric) and magnitude sparsities."""

    bits: tuple[int, ...] = DEFAULT_BITS
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES
    granularity: str = "per_channel"
    symmetric: bool = True

    def __post_init__(self):
        for bits in self.bits:
            if not 2 <= int(bits) <= 16:
                raise ValueError(f"bit-width {bits} is outside 2..16; sensitivity tries integer weight grids")
        for sparsity in self.sparsities:
            if not 0.0 < float(sparsity) < 1.0:
                raise ValueError(f"sparsity {sparsity} is outside (0, 1); give fractions of weights to zero")

    def to_dict(self) -> dict:
        return {"bits": list(self.bits), "sparsities": list(self.sparsities), "granularity": self.granularity,
                "symmetric": self.symmetric}

    @classmethod
    def from_dict(cls, d: dict) -> SensitivitySettings:
        return cls(bits=tuple(int(b) for b in d["bits"]), sparsities=tuple(float(s) for s in d["sparsities"]),
                   granularity=d.get("granularity", "per_channel"), symmetric=bool(d.get("symmetric", True)))


def quantized_layer(config: CompressionConfig, layer: str, bits: int, settings: SensitivitySettings
                    ) -> CompressionConfig:
    """``config`` with only ``layer``'s weights set to ``int{bits}``."""
    return config.with_layer(layer, weight={"precision": f"int{bits}", "granularity": settings.granularity,
                                            "symmetric": settings.symmetric})


def pruned_layer(config: CompressionConfig, layer: str, sparsity: float) -> CompressionConfig:
    """``config`` with only ``layer`` magnitude-pruned to ``sparsity``."""
    return config.with_layer(layer, prune={"method": "magnitude", "sparsity": float(sparsity)})


@dataclass(frozen=True)
class LayerSensitivity:
    """Drops (percentage points vs the base configuration) of one layer at each tried setting."""

    layer: str
    quant_drop: dict[int, float]  # bits -> drop in points
    prune_drop: dict[float, float]  # sparsity -> drop in points

    @property
    def score(self) -> float:
        """The layer's summary (the table's bar): its mean drop over every tried bit-width and sparsity.

        A single setting rarely tells layers apart (at 4 bits most layers of a small CNN lose nothing); the mean
        over the whole ladder ranks how quickly a layer breaks as it is squeezed.
        """
        drops = [*self.quant_drop.values(), *self.prune_drop.values()]
        return sum(drops) / len(drops) if drops else 0.0

    def drop_at_bits(self, bits: int) -> float:
        """Drop at ``bits``, interpolated from the nearest tried widths at or below it (pessimistic)."""
        if bits in self.quant_drop:
            return self.quant_drop[bits]
        lower = [b for b in self.quant_drop if b <= bits]
        if lower:
            return self.quant_drop[max(lower)]
        return 0.0

    def to_dict(self) -> dict:
        return {"layer": self.layer, "quant_drop": {str(k): v for k, v in self.quant_drop.items()},
                "prune_drop": {repr(float(k)): v for k, v in self.prune_drop.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> LayerSensitivity:
        return cls(layer=d["layer"], quant_drop={int(k): float(v) for k, v in d["quant_drop"].items()},
                   prune_drop={float(k): float(v) for k, v in d["prune_drop"].items()})


@dataclass(frozen=True)
class SensitivityReport:
    """Every layer's sensitivity for one model, dataset, base configuration and settings."""

    model_sha256: str
    data_fingerprint: str
    settings: SensitivitySettings
    metric: str  # "accuracy" | "agreement"
    baseline: float  # the base configuration's metric (fraction)
    layers: tuple[LayerSensitivity, ...]
    base_config_key: str = ""
    seconds: float = 0.0
    note: str = ""
    from_cache: bool = field(default=False, compare=False)

    def scores(self) -> dict[str, float]:
        """Layer name -> mean drop in points over every tried setting (what the per-layer table draws as a bar)."""
        return {item.layer: item.score for item in self.layers}

    def by_layer(self) -> dict[str, LayerSensitivity]:
        return {item.layer: item for item in self.layers}

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "model_sha256": self.model_sha256, "data_fingerprint": self.data_fingerprint,
                "settings": self.settings.to_dict(), "metric": self.metric, "baseline": self.baseline,
                "base_config_key": self.base_config_key, "seconds": self.seconds, "note": self.note,
                "layers": [item.to_dict() for item in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> SensitivityReport:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a sensitivity report (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        return cls(model_sha256=d["model_sha256"], data_fingerprint=d["data_fingerprint"],
                   settings=SensitivitySettings.from_dict(d["settings"]), metric=d["metric"],
                   baseline=float(d["baseline"]), layers=tuple(LayerSensitivity.from_dict(x) for x in d["layers"]),
                   base_config_key=d.get("base_config_key", ""), seconds=float(d.get("seconds", 0.0)),
                   note=d.get("note", ""))


@dataclass(frozen=True)
class SensitivityProgress:
    """``done`` of ``total`` configurations evaluated; ``layer`` is the one being analysed."""

    done: int
    total: int
    layer: str
    stage: str = "sensitivity"


def cache_key(model_sha256: str, data_fingerprint: str, settings: SensitivitySettings, layers: Sequence[str],
              base_config: CompressionConfig) -> str:
    """Identifies a report: same model bytes, same data, same settings, same layers and base configuration."""
    # The code version is part of the key: a report made by other compression code would be stale.
    doc = {"schema": SCHEMA, "qtradeoff": __version__, "torch": torch.__version__, "model": model_sha256,
           "data": data_fingerprint, "settings": settings.to_dict(),
           "layers": list(layers), "base": base_config.key()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _cache_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.json"


def load_cached(cache_dir: Path | None, key: str) -> SensitivityReport | None:
    """The cached report for ``key``, or None when absent or unreadable (a bad file is just recomputed)."""
    path = _cache_file(cache_dir or default_cache_dir(), key)
    try:
        report = SensitivityReport.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return SensitivityReport(**{**report.__dict__, "from_cache": True})


def _store(cache_dir: Path, key: str, report: SensitivityReport) -> None:
    path = _cache_file(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(report.to_dict(), indent=1))
        os.replace(temporary, path)  # atomic: a reader never sees half a report
    except OSError:
        pass  # a read-only cache only costs a recomputation next time


def sensitivity_iter(session, *, settings: SensitivitySettings = SensitivitySettings(),
                     layers: Sequence[str] | None = None, base_config: CompressionConfig | None = None,
                     should_stop: Callable[[], bool] = lambda: False, cache_dir: Path | str | None = None,
                     use_cache: bool = True, backend=None
                     ) -> Iterator[SensitivityProgress | LayerSensitivity | SensitivityReport]:
    """Analyse each layer of ``session`` (an :class:`~qtradeoff.core.engine.incremental.Engine`).

    Yields :class:`SensitivityProgress` before each configuration, a :class:`LayerSensitivity` when a layer is
    done and finally the :class:`SensitivityReport`. Stops quietly (no report) when ``should_stop()`` is true.

    ``backend``: a :class:`~qtradeoff.core.engine.backends.ProcessPool` or
    :class:`~qtradeoff.core.engine.backends.RayBackend` built from the same model and data (the caller opens and
    closes it): the base configuration and the layers' trials are spread over its workers, each part of a layer
    running through ``score_variants`` on the worker's own engine. The drops are the same as
    in this process (the same engine code on the same data), and the layers are yielded in order.
    """
    base_config = base_config if base_config is not None else CompressionConfig()
    layers = tuple(layers) if layers is not None else session.layer_names
    unknown = [name for name in layers if name not in session.layer_names]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a compressible layer of this model")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    model_sha = getattr(session.loaded, "sha256", "") or ""
    key = cache_key(model_sha, session.data.fingerprint, settings, layers, base_config)
    per_layer = len(settings.bits) + len(settings.sparsities)
    total = per_layer * len(layers)
    if use_cache and model_sha:
        cached = load_cached(cache_dir, key)
        if cached is not None:
            for item in cached.layers:
                yield item
            yield SensitivityProgress(total, total, "")
            yield cached
            return

    started = time.perf_counter()
    spread = _spread(backend, layers, base_config, settings, should_stop) if backend is not None else None
    base = session.score(base_config) if spread is None else next(spread, None)
    if base is None:  # stopped
        return
    labelled = base.accuracy is not None
    done = 0
    results = []
    batched = callable(getattr(session, "score_variants", None))
    trials = [("bits", bits) for bits in settings.bits] + [("sparsity", s) for s in settings.sparsities]
    for layer in layers:
        quant, prune = {}, {}
        configs = list(_trial_configs(layer, base_config, settings))
        if spread is not None:
            yield SensitivityProgress(done, total, layer)
            scores = next(spread, None)
            if scores is None:  # stopped
                return
        elif batched:
            # one layer's trials share everything after it: the engine runs that part once for all of them
            if should_stop():
                return
            yield SensitivityProgress(done, total, layer)
            scores = session.score_variants(layer, configs)
        else:
            scores = []
            for config in configs:
                if should_stop():
                    return
                yield SensitivityProgress(done + len(scores), total, layer)
                # a trial's downstream values are never shared by another trial: read the cache, add nothing
                scores.append(session.score(config, store=False))
        for (kind, value), score in zip(trials, scores, strict=True):
            (quant if kind == "bits" else prune)[value] = 100.0 * (base.metric - score.metric)
        done += len(trials)
        item = LayerSensitivity(layer, quant, prune)
        results.append(item)
        yield item
    yield SensitivityProgress(done, total, "")
    report = SensitivityReport(
        model_sha256=model_sha, data_fingerprint=session.data.fingerprint, settings=settings,
        metric="accuracy" if labelled else "agreement", baseline=base.metric, layers=tuple(results),
        base_config_key=base_config.key(), seconds=time.perf_counter() - started, note=session.note)
    if use_cache and model_sha:
        _store(cache_dir, key, report)
    yield report


def _trial_configs(layer: str, base_config: CompressionConfig, settings: SensitivitySettings) -> tuple:
    return (*(quantized_layer(base_config, layer, int(bits), settings) for bits in settings.bits),
            *(pruned_layer(base_config, layer, float(sparsity)) for sparsity in settings.sparsities))


def _spread(backend, layers, base_config, settings, should_stop) -> Iterator:
    """The base configuration's score, then each layer's trial scores in ``layers`` order, all computed on
    ``backend``'s workers (the base is the first job: this process would otherwise score it while the workers
    wait). Ends early when stopped.

    A layer's trials are cut into one part per worker (each part still runs the graph after the layer once for
    its trials): the first layers' trials run most of the graph and cost ~60 times the last one's, so whole
    layers as jobs leave one worker with the first layer while the other runs out of work. Parts go out one at
    a time per worker, the earliest (costliest) layers first, and are put back together here in order."""
    from qtradeoff.core.engine.backends import BackendError, LayerTrials, Score

    parts = max(1, int(getattr(backend, "workers", 1)))
    jobs, owners = [Score(base_config)], [-1]
    for position, layer in enumerate(layers):
        configs = _trial_configs(layer, base_config, settings)
        size = -(-len(configs) // parts)
        for start in range(0, len(configs), size):
            jobs.append(LayerTrials(layer, configs[start:start + size]))
            owners.append(position)
    pieces: dict[int, list] = {}
    remaining = [owners.count(position) for position in range(len(layers))]
    given, base_given = 0, False
    for index, job, payload, failure in backend.run(iter(jobs), should_stop=should_stop, depth=1):
        if payload is None:
            what = f"the sensitivity of {job.layer}" if owners[index] >= 0 else "the base configuration's score"
            raise BackendError(f"{what} could not be computed on a worker ({failure})")
        if owners[index] < 0:
            yield payload
            base_given = True
        else:
            pieces[index] = payload
            remaining[owners[index]] -= 1
        while base_given and given < len(layers) and remaining[given] == 0:  # the base first, then layers in order
            yield [score for part in sorted(i for i in pieces if owners[i] == given) for score in pieces[part]]
            for part in [i for i in pieces if owners[i] == given]:
                del pieces[part]
            given += 1


def analyze(session, **kwargs) -> SensitivityReport:
    """Drain :func:`sensitivity_iter`; raises ``Cancelled`` when ``should_stop`` interrupted it."""
    for item in sensitivity_iter(session, **kwargs):
        if isinstance(item, SensitivityReport):
            return item
    raise Cancelled("sensitivity analysis stopped before it finished")


__all__ = ["DEFAULT_BITS", "DEFAULT_SPARSITIES", "LayerSensitivity", "SensitivityProgress", "SensitivityReport",
           "SensitivitySettings", "analyze", "cache_key", "default_cache_dir", "load_cached", "pruned_layer",
           "quantized_layer", "sensitivity_iter"]
