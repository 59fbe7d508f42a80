"""The GUI's only door into the core: loads models and data, evaluates configurations, runs searches, summarises a
model as plain data. Runs in the service's threads (the worker evaluates, the search thread searches, both on the
one Engine) or, in the app, inside the worker processes of :class:`~qtradeoff.gui.remote.ProcessBackend`; the GUI
thread only ever sees the plain :class:`ModelSummary`, search events and core ``Result``s.

Tests can substitute a fake with the same methods (dependency injection into :class:`~qtradeoff.gui.worker.Worker`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qtradeoff.core.errors import InputError

# Relative pruning thresholds (in units of each layer's weight std) the threshold slider can take.
THRESHOLD_STEP = 0.05
THRESHOLD_STEPS = 60
THRESHOLDS: tuple[float, ...] = tuple(round(i * THRESHOLD_STEP, 4) for i in range(THRESHOLD_STEPS + 1))
# An edit's evaluation should land within a few seconds for the edit loop to feel live: the subset the app
# proposes aims at this.
SUBSET_TARGET_SECONDS = 5.0


# In the message of a model whose input the window must ask for (the input dialog opens on it).
INPUT_UNKNOWN = "give its input (File → Set model input…)"


@dataclass(frozen=True)
class ModelSummary:
    """What the GUI needs to show and edit a model, without the model itself."""

    name: str
    path: str
    format: str
    trusted: bool
    sha256: str
    file_bytes: int
    params: int
    fp32_weight_bytes: int
    layers: tuple[Any, ...]  # core LayerInfo, in execution order
    thresholds: tuple[float, ...] = THRESHOLDS
    sparsity_curve: tuple[float, ...] = ()  # overall sparsity (params-weighted) at each threshold
    layer_sparsity_curve: dict[str, tuple[float, ...]] = field(default_factory=dict)
    data_name: str = ""
    eval_samples_total: int = 0
    calib_samples: int = 0
    labelled: bool = True
    num_classes: int | None = None
    load_seconds: float = 0.0
    # the data options the model's metadata or manifest implies (image size, channels, mean/std): the data
    # dialog's defaults (qtradeoff.core.loading.datasets.model_defaults)
    data_defaults: dict = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers if getattr(layer, "compressible", True)]


@dataclass(frozen=True)
class SearchStep:
    """A running search is ``done`` of ``total`` in ``stage`` ("sensitivity" trials or "search" evaluations)."""

    done: int
    total: int
    stage: str


@dataclass(frozen=True)
class SearchPoint:
    """One configuration a search evaluated, the ``done``-th of at most ``total`` so far."""

    config: Any
    result: Any
    done: int
    total: int


@dataclass(frozen=True)
class SearchScores:
    """Per-layer sensitivity: accuracy drop as a fraction (0.012 = 1.2 points), what the layer table draws."""

    drops: dict[str, float]


class Backend(Protocol):
    NeedsTrust: type[Exception]
    Cancelled: type[Exception]
    expected_errors: tuple[type[Exception], ...]

    def has_model(self) -> bool: ...
    def load_sample(self, name: str) -> ModelSummary: ...
    def load_model(self, path: str, *, trust: bool = False) -> ModelSummary: ...
    def load_data(self, path: str) -> dict: ...
    def baseline_config(self) -> Any: ...
    def evaluate_iter(self, config: Any, *, eval_size: int | None, latency: str,
                      should_stop: Callable[[], bool]) -> Iterator[Any]: ...
    def is_result(self, item: Any) -> bool: ...
    def search_iter(self, strategy: str, options: dict, *,
                    should_stop: Callable[[], bool]) -> Iterator[SearchStep | SearchPoint | SearchScores]: ...


class CoreBackend:
    """The real backend: qtradeoff.core. Holds the loaded model, its data and their Engine (worker thread)."""

    def __init__(self) -> None:
        from qtradeoff.core import config
        from qtradeoff.core.engine import measure
        from qtradeoff.core.loading import data, model_io

        self._config = config
        self._data_mod = data
        self._measure = measure
        self._model_io = model_io
        self.NeedsTrust = model_io.NeedsTrust
        self.Cancelled = measure.Cancelled
        from qtradeoff.core import export as export_mod  # light: the registry; formats import torch when used

        errors: list[type[Exception]] = [model_io.ModelLoadError, config.ConfigError, export_mod.ExportError,
                                         InputError]
        if hasattr(data, "DataLoadError"):
            errors.append(data.DataLoadError)
        from qtradeoff.core.recovery.qat import RecoveryError

        errors.append(RecoveryError)
        self.expected_errors = tuple(errors)
        self.loaded = None
        self.data = None
        self._engine = None  # built on the first evaluation of a (model, data) pair
        # The worker and the search thread both ask for the engine: it must be built once, not once per thread.
        self._engine_lock = threading.Lock()
        self._shape_guessed = False  # the layer table's MACs/shapes came from a guessed input shape
        self._layers: tuple[Any, ...] = ()
        self._graph: Any = None
        self._refreshed: ModelSummary | None = None

    # -- loading -------------------------------------------------------------------------------------------------
    def has_model(self) -> bool:
        return self.loaded is not None

    def load_sample(self, name: str) -> ModelSummary:
        loaded = self._model_io.load_sample_model(name)
        data = self._model_io.sample_data_for(loaded)
        return self._install(loaded, data)

    def load_model(self, path: str, *, trust: bool = False, input_text: str | None = None) -> ModelSummary:
        """``input_text``: the model's input in the ``--input`` syntax, for files that do not say it."""
        from qtradeoff.core.loading import input_spec

        loaded = self._model_io.load_model(path, trust=trust)
        if input_text:
            spec = input_spec.parse(input_text)
            loaded = dataclasses.replace(loaded, input_shape=tuple(spec.sample_shape))
        else:
            spec = input_spec.from_module(loaded.module)  # what the file says its input is (exported programs)
        if spec is not None and spec.static_batch:
            loaded = dataclasses.replace(loaded, module=input_spec.fixed_batch_view(loaded.module, spec.batch))
        if loaded.preprocessing is None:
            # A bundled sample opened as a file: its manifest entry says how to feed it the digits data.
            entry_for = getattr(self._model_io, "_manifest_entry_for", None)
            entry = entry_for(loaded.sha256) if entry_for is not None else None
            if entry and entry.get("preprocessing"):
                loaded.preprocessing = dict(entry["preprocessing"])
        data = self.data
        if data is not None and not self._compatible(loaded, data):
            data = None
        if data is None or loaded.preprocessing:
            try:
                data = self._model_io.sample_data_for(loaded)
            except Exception:  # noqa: BLE001 - no bundled data fits this model: the user drops a dataset
                data = data if data is not None and self._compatible(loaded, data) else None
        if data is None and spec is not None:  # fidelity on synthetic inputs until the user drops a dataset
            data = input_spec.synthetic_data(spec)
        return self._install(loaded, data)

    def load_data(self, path: str, *, options: dict | None = None, trust: bool = False) -> dict:
        """Data read as the data dialog's ``options`` say (DataOptions fields; defaults from the model's
        metadata); ``trust`` is the user's consent to import a dataset hook."""
        if self.loaded is None:
            raise self._model_io.ModelLoadError("Load a model before dropping a dataset on the window.")
        from qtradeoff.core.loading import datasets

        # a digits-layout .npz is fed as the sample model is (its preprocessing)
        data = datasets.load(path, options, preprocessing=getattr(self.loaded, "preprocessing", None), trust=trust,
                             defaults=datasets.model_defaults(self.loaded))
        from qtradeoff.core.loading import outputs

        loaded, data = outputs.scored_output(self.loaded, data, None)  # labels dropped for a non-class output
        if loaded is not self.loaded:
            self._set_data(self.data, loaded)
        if not self._compatible(self.loaded, data, raise_errors=True):
            raise self._data_mod.DataLoadError(f"{path} does not fit the loaded model's input shape.")
        if self._shape_guessed:  # the data now says what the input is: redo the layer inventory with it
            self._refreshed = self._install(self.loaded, data)
        else:
            self._set_data(data)
        return self._data_info()

    def take_refreshed(self) -> ModelSummary | None:
        """The model summary rebuilt by the last data load (its shapes were guessed before), once; else None."""
        summary, self._refreshed = self._refreshed, None
        return summary

    def _compatible(self, loaded: Any, data: Any, *, raise_errors: bool = False) -> bool:
        check = getattr(self._data_mod, "check_compatible", None)
        if check is None:
            return loaded.input_shape is None or tuple(loaded.input_shape) == tuple(data.input_shape)
        try:
            check(loaded, data)
            return True
        except Exception:
            if raise_errors:
                raise
            return False

    def _install(self, loaded: Any, data: Any) -> ModelSummary:
        from qtradeoff.core.loading import inventory, outputs

        if data is not None:  # a model returning a tuple/dict is scored on its first tensor output
            loaded, data = outputs.scored_output(loaded, data, None)

        shape = loaded.input_shape or (data.input_shape if data is not None else None)
        self._shape_guessed = shape is None
        if shape is None:
            shape = inventory.guess_input_shape(loaded.module)
        if shape is None:
            raise self._model_io.ModelLoadError(
                f"{Path(loaded.path).name}: its input shape is unknown and no loaded data fits it; "
                f"{INPUT_UNKNOWN} or open a dataset first, then the model.")
        try:
            layers = tuple(inventory.inventory(loaded.module, shape))
        except Exception as error:  # noqa: BLE001 - the user's model may reject the shape we tried
            raise self._model_io.ModelLoadError(
                f"{Path(loaded.path).name} does not run on inputs of shape {tuple(shape)} "
                f"({str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__}); "
                f"{INPUT_UNKNOWN} or open a dataset that fits it first, then the model.") from None
        self._set_data(data, loaded)
        self._layers, self._graph = layers, None  # the graph view's DAG is traced when first asked for
        curve, per_layer = self._sparsity_curves(loaded.module, layers)
        params = sum(p.numel() for p in loaded.module.parameters())
        params = params or sum(layer.params for layer in layers)
        fp32_bytes = params * 4
        info = self._data_info()
        return ModelSummary(
            name=loaded.name, path=str(loaded.path), format=loaded.format, trusted=bool(loaded.trusted),
            sha256=loaded.sha256, file_bytes=int(loaded.file_bytes), params=int(params),
            fp32_weight_bytes=int(fp32_bytes), layers=layers, sparsity_curve=curve, layer_sparsity_curve=per_layer,
            data_name=info.get("name", ""), eval_samples_total=info.get("eval_samples", 0),
            calib_samples=info.get("calib_samples", 0), labelled=info.get("labelled", True),
            num_classes=loaded.num_classes, load_seconds=float(getattr(loaded, "load_seconds", 0.0)),
            data_defaults=_data_defaults(loaded),
        )

    def _set_data(self, data: Any, loaded: Any = None) -> None:
        """New data (and model): the engine of the old pair is dropped, both at once for the other thread."""
        with self._engine_lock:
            if loaded is not None:
                self.loaded = loaded
            self.data = data
            self._engine = None

    def _data_info(self) -> dict:
        if self.data is None:
            return {}
        name = f"fidelity on {self.data.name}" if getattr(self.data, "synthetic", False) else self.data.name
        return {"name": name, "eval_samples": int(self.data.eval_inputs.shape[0]),
                "calib_samples": int(self.data.calib_inputs.shape[0]), "labelled": bool(self.data.labelled),
                "num_classes": self.data.num_classes}

    def _sparsity_curves(self, module: Any, layers: tuple[Any, ...]) -> tuple[tuple[float, ...], dict]:
        """Overall and per-layer sparsity that each slider threshold produces, on the weights compression prunes
        (BatchNorm folded): what the slider's label says is what the plan applies and memory counts."""
        from qtradeoff.core.compression.compress import Compressor

        # with data, the engine's own compressor: the folded weights are computed once and shared
        compressor = self.engine().compressor if self.data is not None else Compressor(module, layers=list(layers))
        per_layer = compressor.threshold_sparsity(THRESHOLDS)
        weights = {info.name: sum(compressor.weight(info.name, n).numel() for n in info.weight_names)
                   for info in compressor.layers}
        total = sum(weights.values()) or 1
        curve = tuple(sum(per_layer[n][i] * weights[n] for n in per_layer) / total for i in range(len(THRESHOLDS)))
        return curve, per_layer

    # -- evaluation ----------------------------------------------------------------------------------------------
    def baseline_config(self) -> Any:
        return self._config.CompressionConfig()

    def engine(self) -> Any:
        """The Engine of the loaded model and data (built once per pair; it keeps every cache)."""
        if self.loaded is None:
            raise self._model_io.ModelLoadError("No model is loaded: open or drop a model file first.")
        if self.data is None:
            raise self._model_io.ModelLoadError(
                "No evaluation data fits this model: drop a dataset folder or tensor file on the window.")
        with self._engine_lock:
            if self._engine is None:
                from qtradeoff.core.engine.engine import Engine

                self._engine = Engine(self.loaded, self.data)
            return self._engine

    def evaluate_iter(self, config: Any, *, eval_size: int | None, latency: str,
                      should_stop: Callable[[], bool], runtimes: tuple[str, ...] = ()) -> Iterator[Any]:
        """The engine's evaluation; with ``runtimes`` (``"onnxruntime"``, ``"openvino"``) and measured latency, the
        Result also carries the configuration's and fp32's latency on those runtimes (exported as ONNX, timed
        interleaved). A runtime that cannot time this configuration leaves a warning, not a lost point."""
        engine = self.engine()
        for item in engine.evaluate_iter(config, eval_size=eval_size, latency=latency, should_stop=should_stop):
            if not (self.is_result(item) and runtimes and item.latency_measured):
                yield item
                continue
            yield self._measure.Progress(0, 1, "latency on " + ", ".join(runtimes))
            yield self._with_runtimes(engine, config, item, runtimes)

    def _with_runtimes(self, engine: Any, config: Any, result: Any, runtimes: tuple[str, ...]) -> Any:
        import dataclasses

        from qtradeoff.core.errors import QtradeoffError
        from qtradeoff.core.export.onnx_format import with_runtime_latency

        batches = tuple(s.batch for s in result.latency_measured)
        threads = result.provenance.get("threads")
        try:
            return with_runtime_latency(engine, config, result, runtimes, batches=batches, threads=threads)
        except (QtradeoffError, RuntimeError, ImportError) as exc:  # an export or runtime refusal: keep torch's
            warning = f"not timed on {', '.join(runtimes)}: {' '.join(str(exc).split())[:200]}"
            provenance = {**result.provenance, "warnings": [*(result.provenance.get("warnings") or ()), warning]}
            return dataclasses.replace(result, provenance=provenance)

    def is_result(self, item: Any) -> bool:
        return isinstance(item, self._measure.Result)

    def export_iter(self, config: Any, fmt: str, path: str, *, should_stop: Callable[[], bool],
                    weights: str | None = None) -> Iterator[Any]:
        """Write ``config`` as a ``fmt`` model file at ``path`` and verify it (Progress, then the report as a
        plain dict with its table under ``"summary"``); see :func:`qtradeoff.core.export.export_iter`. With
        ``weights`` (a recovered-weights file) the exported model carries those weights."""
        from qtradeoff.core.export import export_iter
        from qtradeoff.core.export.verify import ExportReport, format_report

        engine = self.engine()
        if weights:
            from qtradeoff.core.recovery.recovered_weights import with_recovered_weights

            engine, config = with_recovered_weights(engine, weights, config)
        for item in export_iter(engine, config, fmt, path, should_stop=should_stop):
            if isinstance(item, ExportReport):
                yield {**item.to_dict(), "summary": format_report(item)}
            else:
                yield item

    def recover_iter(self, config: Any, *, eval_size: int | None, should_stop: Callable[[], bool],
                     settings: dict | None = None) -> Iterator[Any]:
        """Fine-tune ``config`` (see :mod:`qtradeoff.core.recovery.qat`), keep the recovered weights in a file of
        the cache folder, then evaluate them: RecoveryProgress, evaluation Progress, then the Result (its
        ``provenance["recovered"]["path"]`` names the weights file, which export reads). ``settings``: fields of
        RecoverySettings to override (plain values)."""
        from qtradeoff.core.paths import cache_dir
        from qtradeoff.core.recovery.qat import RecoverySettings, recover_iter
        from qtradeoff.core.recovery.recovered_weights import RecoveredWeights, save_recovered, with_recovered_weights

        engine = self.engine()
        weights = None
        for item in recover_iter(engine, config, RecoverySettings(**dict(settings or {})), should_stop=should_stop):
            if isinstance(item, RecoveredWeights):
                weights = item
            else:
                yield item
        if weights is None:
            raise self.Cancelled("recovery cancelled")
        folder = cache_dir() / "recovered"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{Path(str(self.loaded.path)).stem}-{config.key()[:10]}-{stamp}-{time.time_ns() % 10**6}" \
                        ".safetensors"
        save_recovered(weights, path)
        recovered, config = with_recovered_weights(engine, path, config)
        yield from recovered.evaluate_iter(config, eval_size=eval_size, latency="estimated", should_stop=should_stop)

    def model_graph(self) -> Any:
        """The loaded model's graph for the graph view (:func:`qtradeoff.core.loading.graph.model_graph`: plain
        data; traced once per model, with one forward at batch 1 for the shapes)."""
        if self.loaded is None:
            raise self._model_io.ModelLoadError("No model is loaded: open or drop a model file first.")
        if self._graph is None:
            import torch

            from qtradeoff.core.loading.graph import model_graph

            example = self.data.eval_inputs[:1] if self.data is not None else None
            if example is None and self.loaded.input_shape:
                example = torch.zeros(1, *self.loaded.input_shape)
            self._graph = model_graph(self.loaded.module, self._layers, example)
        return self._graph

    def profile_iter(self, config: Any, *, should_stop: Callable[[], bool], batch: int = 1,
                     rounds: int | None = None) -> Iterator[Any]:
        """The per-layer latency profile of ``config`` against fp32 on real kernels (Progress, then the core's
        LayerProfile; see :func:`qtradeoff.core.engine.layer_profile.profile_layers`)."""
        from qtradeoff.core.engine.layer_profile import DEFAULT_ROUNDS, profile_layers

        yield from profile_layers(self.engine(), config, batch=batch, rounds=rounds or DEFAULT_ROUNDS,
                                  should_stop=should_stop)

    def subset_hints(self, target_seconds: float = SUBSET_TARGET_SECONDS) -> dict:
        """The engine's proposed evaluation subset for one edit near ``target_seconds``, with its time and memory
        estimates, as plain values (every figure an estimate; see ``Engine.subset_hints``)."""
        return self.engine().subset_hints(target_seconds)

    def search_iter(self, strategy: str, options: dict, *,
                    should_stop: Callable[[], bool]) -> Iterator[SearchStep | SearchPoint | SearchScores]:
        """:func:`qtradeoff.core.search.explore.stream` on the engine edits are evaluated with (it is thread-safe),
        as plain events. ``options`` are the stream's keyword options (``budget``, ``max_drop``, ``base_config``,
        ...); the locked layers are those of ``options["base_config"]``."""
        from qtradeoff.core.search import explore
        from qtradeoff.core.search.sensitivity import SensitivityReport

        engine = self.engine()
        last = 0.0
        for event in explore.stream(engine, strategy, should_stop=should_stop, **options):
            if isinstance(event, explore.Found):
                yield SearchPoint(event.config, event.result, event.done, event.total)
            elif isinstance(event, explore.SearchProgress):
                now = time.monotonic()  # sensitivity trials are fast: a few updates a second are enough
                if event.stage != "sensitivity" or now - last > 0.1 or event.done == event.total:
                    last = now
                    yield SearchStep(event.done, event.total, event.stage)
            elif isinstance(event, SensitivityReport):
                yield SearchScores({layer: drop / 100.0 for layer, drop in event.scores().items()})


def _data_defaults(loaded: Any) -> dict:
    from qtradeoff.core.loading import datasets

    return datasets.model_defaults(loaded)
