"""The evaluation engine: one model and its data, every cache, and ``evaluate(config)`` yielding a Result.

An :class:`Engine` is built from a loaded model and its data (or rebuilt anywhere from an :class:`EngineSpec`) and
owns every cache an evaluation can reuse: the compressor's (BatchNorm-folded weights, masks and processed weights
per layer and spec, calibrated activation ranges), the activation cut cache of incremental evaluation, the fp32
reference outputs per evaluation subset, the activation profile, and the real-kernel models. ``evaluate_iter``
resolves a configuration once into a :class:`~qtradeoff.core.compression.plan.Plan` that the simulation, memory
accounting, real kernels and roofline all read, yields :class:`Progress` and one :class:`Result`, and never
mutates shared state: caches are filled under short locks that are never held across a ``yield``, every
simulated model is a new module, and torch's global settings (threads, quantized engine) are restored after use.
One engine can serve several threads at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import qtradeoff
from qtradeoff.core import runtime
from qtradeoff.core.compression.compress import Compressor
from qtradeoff.core.compression.floor import scale_floor_warnings
from qtradeoff.core.compression.plan import Plan
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine import estimate as estimate_mod
from qtradeoff.core.engine.incremental import DEFAULT_CACHE_BYTES, IncrementalError, IncrementalEvaluator
from qtradeoff.core.loading import data as data_mod
from qtradeoff.core.loading import input_spec as input_spec_mod
from qtradeoff.core.loading import model_io, multi_input
from qtradeoff.core.loading import outputs as outputs_mod
from qtradeoff.core.measurement import latency_fit as fit_mod
from qtradeoff.core.measurement import memory as memory_mod
from qtradeoff.core.measurement import roofline as roofline_mod
from qtradeoff.core.measurement.interleaved import DROP_RULE, time_interleaved
from qtradeoff.core.measurement.latency import RATIO_CI_TARGET, LatencySettings, LatencyStats
from qtradeoff.core.measurement.realquant import (
    ENGINE,
    RealModel,
    RealModelCache,
    build_real_model,
    planned,
    quantized_engine,
)
from qtradeoff.core.measurement.result import (
    LATENCY_MODES,
    Cancelled,
    Progress,
    Result,
    sqnr_db,
    wilson_interval,
)
from qtradeoff.core.measurement.timing_threads import timing_threads
from qtradeoff.core.precision import is_integer

# Accuracy forwards run in chunks of this many samples: activations of a chunk stay cache-sized (a single
# 359-sample batch of digits_cnn runs 3x slower per sample), and should_stop is checked between chunks.
EVAL_BATCH = 64
# ...at most this many bytes of the widest layer's input + output per chunk: a resnet50 at 224x224 holds ~4 MB per
# sample there, so 64-sample chunks kept ~1 GB of activations live (and the real model's calibration at batch 256
# several GB); 16-sample chunks cost no speed on it. Small models keep EVAL_BATCH.
CHUNK_ACTIVATION_BYTES = 64 * 1024 * 1024
# Samples timed when the fp32 time per sample is wanted before any reference forward ran (a few chunks' worth of
# per-sample cost without paying for a whole split; batch 1 would overstate it on convolutional models).
PROBE_SAMPLES = 8


@dataclass(frozen=True)
class QuickScore:
    """Top-1 accuracy (None without labels) and top-1 agreement with the fp32 model, on the evaluation split."""

    accuracy: float | None
    agreement: float

    @property
    def metric(self) -> float:
        """The number constraints are checked on: accuracy when labelled, else agreement with fp32."""
        return self.accuracy if self.accuracy is not None else self.agreement


@dataclass(frozen=True)
class EngineSpec:
    """What rebuilds an engine in any process: the model file (or a bundled sample's name), the data, settings.

    ``data`` None (or ``"digits"``) means the bundled sample data, for the sample models. ``trust`` is the user's
    consent to run code from the model file, given once in the process that made the spec; ``architecture``
    names the builder of a weights-only file. This is also how the CLI reads its MODEL and ``--data`` arguments.
    """

    model: str
    data: str | None = None
    trust: bool = False
    architecture: str | None = None
    eval_size: int | None = None
    calib_size: int | None = None
    cache_bytes: int = DEFAULT_CACHE_BYTES
    arch_kwargs: Mapping[str, Any] | None = field(default=None, hash=False)  # the architecture's constructor's
    input_shape: tuple[int, ...] | None = None
    label_column: str | None = None  # a CSV's label column (default: one named label/target/y)
    output: str | None = None  # which model output is scored (qtradeoff.core.loading.outputs; default the first)
    input_spec: str | None = None  # --input text (qtradeoff.core.loading.input_spec); default what the file says
    # how --data is read (qtradeoff.core.loading.datasets.DataOptions fields: kind, image_size, mean, stream...)
    data_options: Mapping[str, Any] | None = field(default=None, hash=False)

    def load_model(self):
        """The LoadedModel the spec names: a file, or else a bundled sample; raises ModelLoadError/NeedsTrust."""
        if Path(self.model).exists():
            return model_io.load_model(self.model, trust=self.trust, architecture=self.architecture,
                                       arch_kwargs=self.arch_kwargs, input_shape=self.input_shape)
        if self.model in model_io.sample_names():
            return model_io.load_sample_model(self.model)
        raise model_io.ModelLoadError(f"model file {self.model} not found; give a path or a sample name "
                                      f"({', '.join(model_io.sample_names())})")

    def load(self):
        """``(LoadedModel, EvalData)`` as the spec names them, checked to fit each other; raises typed errors."""
        loaded = self.load_model()
        sizes = {key: value for key, value in (("eval_size", self.eval_size), ("calib_size", self.calib_size))
                 if value is not None}
        several = multi_input.load(self, loaded, sizes)  # a model taking several named inputs: packed rows
        if several is not None:
            loaded, data = outputs_mod.scored_output(*several, self.output)
            data_mod.check_compatible(loaded, data)
            return loaded, data
        spec = input_spec_mod.parse(self.input_spec) if self.input_spec else input_spec_mod.from_module(loaded.module)
        spec = multi_input.with_bounds([spec], loaded.module)[0] if spec is not None else None  # ids' bound
        if spec is not None and spec.static_batch and spec.batch >= 1:
            # an exported program fixed at its example's batch size: run it in slices of that size
            loaded = dataclasses.replace(loaded, module=input_spec_mod.fixed_batch_view(loaded.module, spec.batch))
        if self.data is None and loaded.preprocessing is None and spec is not None:
            data = input_spec_mod.synthetic_data(spec, **sizes)
        elif self.data is None or self.data == "digits" and loaded.preprocessing is not None:
            if loaded.preprocessing is None:
                raise data_mod.DataLoadError(f"{loaded.path} is not a bundled sample; pass --data with evaluation "
                                             "data (an ImageFolder directory, a tensor file or 'digits'), or --input "
                                             "to evaluate on synthetic inputs (e.g. x:float32[1,3,64,64])")
            data = model_io.sample_data_for(loaded, **sizes)
        else:
            from qtradeoff.core.loading import datasets  # image/audio folders, CSV, npy, hooks; streamed when large

            options = {**(self.data_options or {}), "label_column": self.label_column, **sizes}
            data = datasets.load(self.data, datasets.DataOptions.from_dict(options),
                                 preprocessing=loaded.preprocessing, trust=self.trust,
                                 defaults=datasets.model_defaults(loaded))
            if self.input_spec:
                data = input_spec_mod.fit_data(data, spec)
        loaded, data = outputs_mod.scored_output(loaded, data, self.output)
        data_mod.check_compatible(loaded, data)
        return loaded, data

    def build(self) -> Engine:
        loaded, data = self.load()
        return Engine(loaded, data, cache_bytes=self.cache_bytes)


class Engine:
    """Evaluations of one model on one dataset, sharing every cache (see the module docstring).

    ``loaded`` is a LoadedModel (its ``module`` is never mutated), ``data`` an EvalData. ``cache_bytes`` bounds
    the activation cut cache (0 disables it). This is also the *session* the search strategies and the
    sensitivity analysis take: ``layer_names``, ``layers``, ``score``, ``evaluate``, ``evaluate_full``.
    """

    def __init__(self, loaded, data, *, cache_bytes: int = DEFAULT_CACHE_BYTES, compressor: Compressor | None = None,
                 reference_module: torch.nn.Module | None = None):
        self.loaded = loaded
        self.data = data
        self.module = loaded.module
        # the fp32 model agreement and SQNR compare with: the base itself, or the original of a recovered base
        self.reference_module = loaded.module if reference_module is None else reference_module
        self.compressor = compressor if compressor is not None else Compressor(loaded.module, data.calib_inputs)
        self.layers = list(self.compressor.layers)
        self.layer_names = tuple(info.name for info in self.layers)
        self.evaluator = IncrementalEvaluator(self.compressor.apply, self.layer_names, cache_bytes=cache_bytes)
        self.real_models = RealModelCache()
        self._state = memory_mod.unique_state(loaded.module)  # tensors by name, shared ones once
        self._eval_fingerprint = data.fingerprint
        self._lock = threading.Lock()
        self._references: dict[int, torch.Tensor] = {}  # evaluation subset size -> fp32 outputs
        self._activations: memory_mod.ActivationProfile | None = None
        self._simulated: OrderedDict[str, torch.nn.Module] = OrderedDict()  # config key -> simulated model
        self._baseline: QuickScore | None = None
        # fp32 forward time of the base per sample, and whether it came from a probe (not yet a reference forward)
        self._seconds_per_sample: tuple[float, bool] | None = None
        self._chunk: int | None = None
        self._fits: dict[int, fit_mod.LatencyFit] = {}  # thread count -> this model's latency anchors
        self._anchor_costs: dict[str, tuple[list[roofline_mod.LayerCost], dict]] = {}

    # -- what the engine knows about the model ---------------------------------------------------------------
    @property
    def note(self) -> str:
        """How incremental evaluation runs on this model (or why it cannot)."""
        return self.evaluator.note

    @property
    def eval_samples(self) -> int:
        return len(self.data.eval_inputs)

    def plan(self, config: CompressionConfig) -> Plan:
        """``config`` resolved for every compressible layer, with its pruning masks (see compression.plan)."""
        return self.compressor.plan(config)

    @property
    def eval_chunk(self) -> int:
        """Samples per forward chunk: EVAL_BATCH, fewer where the widest layer's activations of a chunk would
        exceed CHUNK_ACTIVATION_BYTES (the bound on live activation memory of real-size models)."""
        if self._chunk is None:
            sizes = self._activation_profile().sizes
            widest = max((i + o for i, o in sizes.values()), default=0) * 4
            chunk = EVAL_BATCH if widest == 0 else max(1, min(EVAL_BATCH, CHUNK_ACTIVATION_BYTES // widest))
            self.compressor.calib_batch = min(self.compressor.calib_batch, chunk)
            self._chunk = chunk
        return self._chunk

    def subset(self, eval_size: int | None) -> int:
        """The number of evaluation samples ``eval_size`` asks for (None or 0: all)."""
        if not eval_size or eval_size >= self.eval_samples:
            return self.eval_samples
        if eval_size < 0:
            raise ValueError(f"evaluation size {eval_size} is negative; give a number of samples (or none for all)")
        return int(eval_size)

    def subset_fingerprint(self, samples: int) -> str:
        """Identifies the first ``samples`` evaluation samples (with the calibration split) in caches and files."""
        if samples == self.eval_samples:
            return self._eval_fingerprint
        return hashlib.sha256(f"{self._eval_fingerprint}:first:{samples}".encode()).hexdigest()

    # -- fast scores through the cut cache (search, sensitivity) ---------------------------------------------
    def logits(self, config: CompressionConfig, *, store: bool = True) -> torch.Tensor:
        """The simulated model's outputs on the whole evaluation split under ``config``."""
        plan = self.plan(config)
        module = self.simulated(plan)
        # in the engine's bounded chunks, under the keys evaluate_iter uses: a search's scores and its full
        # evaluations share every cut
        inputs, chunk = self.data.eval_inputs, self.eval_chunk
        outputs = []
        for start in range(0, len(inputs), chunk):
            end = min(start + chunk, len(inputs))
            outputs.append(self.evaluator.forward_chunk(config, inputs[start:end],
                                                        f"{self._eval_fingerprint}[{start}:{end}]", module=module,
                                                        store=store, settings=plan.settings))
        if len(outputs) == 1:
            return outputs[0]
        if not all(isinstance(output, torch.Tensor) for output in outputs):
            raise IncrementalError("the model returns more than one tensor; incremental evaluation needs logits")
        return torch.cat(outputs)

    def reference_logits(self, samples: int | None = None) -> torch.Tensor:
        """Outputs of the untouched base model on the first ``samples`` evaluation samples (default: all)."""
        samples = self.eval_samples if samples is None else samples
        with self._lock:
            found = self._references.get(samples)
            if found is None:  # the first samples of a longer reference are this one (forwards are per sample)
                longer = [n for n in self._references if n > samples]
                if longer:
                    found = self._references[min(longer)][:samples]
        if found is not None:
            return found
        inputs = self.data.eval_inputs[:samples]
        chunk = self.eval_chunk
        started = time.perf_counter()
        with torch.inference_mode(), runtime.running():
            outputs = [self.reference_module(inputs[i:i + chunk]).float() for i in range(0, len(inputs), chunk)]
        elapsed = time.perf_counter() - started
        reference = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        with self._lock:
            if samples >= PROBE_SAMPLES or self._seconds_per_sample is None:
                self._seconds_per_sample = (elapsed / max(samples, 1), False)
            self._references.setdefault(samples, reference)
            while len(self._references) > 4:
                self._references.pop(next(iter(self._references)))
            return self._references.get(samples, reference)

    def score_logits(self, logits: torch.Tensor) -> QuickScore:
        predicted = logits.argmax(dim=-1)
        count = max(int(predicted.numel()), 1)
        agreement = int((predicted == self.reference_logits().argmax(dim=-1)).sum()) / count
        accuracy = None
        if self.data.eval_labels is not None:
            accuracy = int((predicted == self.data.eval_labels).sum()) / count
        return QuickScore(accuracy, agreement)

    def score(self, config: CompressionConfig, *, store: bool = True) -> QuickScore:
        """Accuracy/agreement of ``config`` through the incremental path (no memory or latency accounting)."""
        return self.score_logits(self.logits(config, store=store))

    def score_variants(self, layer: str, configs: list[CompressionConfig]) -> list[QuickScore]:
        """Scores of configurations that differ from each other only at ``layer`` (a sensitivity analysis's trials
        of one layer): the graph after it runs once for all of them when that is safe (see
        ``IncrementalEvaluator.forward_variants``), else each one through :meth:`score` without storing."""
        plans = [self.plan(config) for config in configs]
        modules = [self.compressor.simulate(plan) for plan in plans]  # one-off models: not kept in ``simulated``
        logits = self.evaluator.forward_variants(layer, configs, modules, self.data.eval_inputs,
                                                 fingerprint=self._eval_fingerprint,
                                                 settings=[plan.settings for plan in plans])
        if logits is None:
            return [self.score(config, store=False) for config in configs]
        return [self.score_logits(output) for output in logits]

    @property
    def baseline(self) -> QuickScore:
        """The score of the fp32 configuration (the base model as the simulator runs it)."""
        if self._baseline is None:
            self._baseline = self.score(CompressionConfig())
        return self._baseline

    def drop_points(self, score: QuickScore) -> float:
        """How many percentage points ``score`` loses against fp32 (negative when it gains)."""
        return 100.0 * (self.baseline.metric - score.metric)

    # -- estimates before an evaluation (see qtradeoff.core.engine.estimate) --------------------------------
    def seconds_per_sample(self) -> tuple[float, bool]:
        """``(seconds, probed)``: the base model's fp32 forward time per sample, measured on the reference forward
        when it ran, else now on a probe of PROBE_SAMPLES samples (``probed`` True; about 1 s on a resnet50)."""
        with self._lock:
            known = self._seconds_per_sample
        if known is not None:
            return known
        probe = self.data.eval_inputs[:PROBE_SAMPLES]
        elapsed = math.inf
        with torch.inference_mode(), runtime.running():
            # the first call at a batch shape pays one-off allocations and kernel selection (x600 on digits_cnn);
            # the best of the next two is the steady time
            for call in range(3):
                started = time.perf_counter()
                self.module(probe)
                if call:
                    elapsed = min(elapsed, time.perf_counter() - started)
        seconds = elapsed / max(len(probe), 1)
        with self._lock:
            if self._seconds_per_sample is None:
                self._seconds_per_sample = (seconds, True)
            return self._seconds_per_sample

    def estimate_seconds(self, config: CompressionConfig | None = None, eval_size: int | None = None, *,
                         latency: str = "estimated", latency_settings: LatencySettings | None = None
                         ) -> estimate_mod.TimeEstimate:
        """Estimated wall time of ``evaluate_iter(config, eval_size=..., latency=...)`` now (caches included); an
        estimate from the measured fp32 time per sample (see :mod:`~qtradeoff.core.engine.estimate`)."""
        config = config if config is not None else CompressionConfig()
        seconds, probed = self.seconds_per_sample()
        work = self._work(self.plan(config), self.subset(eval_size), latency, latency_settings)
        return estimate_mod.estimate_seconds(work, seconds, probed=probed)

    def propose_eval_size(self, target_seconds: float, config: CompressionConfig | None = None, *,
                          latency: str = "estimated", latency_settings: LatencySettings | None = None,
                          minimum: int = estimate_mod.MIN_EVAL_SAMPLES) -> int:
        """The most evaluation samples whose estimated evaluation time stays within ``target_seconds``, between
        ``min(minimum, split size)`` and the split size (non-decreasing in the target)."""
        config = config if config is not None else CompressionConfig()
        seconds, probed = self.seconds_per_sample()
        plan = self.plan(config)

        def estimate_for(samples: int) -> estimate_mod.TimeEstimate:
            work = self._work(plan, samples, latency, latency_settings)
            return estimate_mod.estimate_seconds(work, seconds, probed=probed)

        return estimate_mod.propose_samples(estimate_for, target_seconds, self.eval_samples, minimum=minimum)

    def memory_estimate(self, eval_size: int | None = None, *, eval_batch: int | None = None
                        ) -> estimate_mod.MemoryEstimate:
        """Estimated peak bytes of an evaluation of ``eval_size`` samples (an estimate; see MemoryEstimate)."""
        samples = self.subset(eval_size)
        model_bytes = sum(t.numel() * t.element_size() for t in self._state.values())
        data_bytes = sum(t.numel() * t.element_size() for t in (self.data.calib_inputs, self.data.eval_inputs))
        sizes = self._activation_profile().sizes
        widest = max((i + o for i, o in sizes.values()), default=math.prod(self.data.input_shape))
        chunk = min(eval_batch or self.eval_chunk, samples)
        # the two largest buffers of one layer's call, times 3: tensors held for skip connections and blocks the
        # allocator keeps (resnet50 at 224x224 peaks near 3x this in practice); float32 everywhere
        activation_bytes = 3 * widest * 4 * chunk
        cut_bytes = min(self.evaluator.cache.max_bytes, 2 * widest * 4 * samples)
        weight_cache = min(self.compressor.weight_cache_limit, model_bytes)
        return estimate_mod.MemoryEstimate(model_bytes, data_bytes, activation_bytes, cut_bytes, weight_cache,
                                           estimate_mod.available_memory())

    def subset_hints(self, target_seconds: float = 60.0, config: CompressionConfig | None = None, *,
                     latency: str = "estimated") -> dict:
        """Plain values for a UI beside its evaluation-subset control (every figure an estimate): the fp32
        seconds per sample, the proposed subset for ``target_seconds`` and its estimated time, the estimated time
        of the whole split, and the memory estimate with its warning (``""`` when none)."""
        config = config if config is not None else CompressionConfig()
        proposed = self.propose_eval_size(target_seconds, config, latency=latency)
        at_proposed = self.estimate_seconds(config, proposed, latency=latency)
        whole = self.estimate_seconds(config, self.eval_samples, latency=latency)
        memory = self.memory_estimate(proposed)
        return {"estimated": True, "fp32_seconds_per_sample": at_proposed.seconds_per_sample,
                "probed": at_proposed.probed, "target_seconds": float(target_seconds), "proposed_eval_size": proposed,
                "eval_samples": self.eval_samples, "proposed_seconds": at_proposed.seconds,
                "all_samples_seconds": whole.seconds, "memory_bytes": memory.total_bytes,
                "available_bytes": memory.available_bytes, "memory_warning": memory.warning()}

    def _work(self, plan: Plan, samples: int, latency: str,
              latency_settings: LatencySettings | None) -> estimate_mod.EvaluationWork:
        if latency not in LATENCY_MODES:
            raise ValueError(f"latency must be one of {', '.join(LATENCY_MODES)}, got {latency!r}")
        settings = latency_settings or LatencySettings()
        with self._lock:
            reference_cached = any(n >= samples for n in self._references)
            profile_known = self._activations is not None
        casts = any(self.compressor.casts_activations(layer) for layer in plan)
        integer_activations = any(not layer.settings.skip and is_integer(layer.settings.activation.precision)
                                  for layer in plan)
        measured = latency in ("both", "measured")
        real_precisions = {p for p, _ in planned(plan).values()}
        threads = settings.resolved_threads()
        return estimate_mod.EvaluationWork(
            samples=samples, reference_cached=reference_cached,
            reuses_reference=self.compressor.changes_nothing(plan), casts_activations=casts,
            needs_calibration=integer_activations and not self.compressor.calibrated,
            calib_samples=len(self.data.calib_inputs),
            measured_batches=tuple(settings.batch_sizes) if measured else (),
            real_model_cached=(plan.config.key() in self.real_models) or (real_precisions <= {"fp32"}
                                                                            and not plan.pruned),
            real_model_calibrates=bool(real_precisions - {"fp32"}),
            measured_min_run_time=settings.min_run_time, measured_min_repeats=settings.min_repeats,
            measured_warmup=settings.warmup, roofline=latency in ("both", "estimated"),
            roofline_calibrated=roofline_mod.cache_path(threads).is_file(), profile_known=profile_known)

    # -- full evaluations ------------------------------------------------------------------------------------
    def evaluate(self, config: CompressionConfig, *, should_stop: Callable[[], bool] = lambda: False,
                 latency: str = "estimated", **kwargs) -> Result:
        """Run :meth:`evaluate_iter` to the end and return its Result; raises :class:`Cancelled` when stopped.

        ``latency`` defaults to the fast roofline estimate here (searches call this many times); the Result
        marks estimated figures as such.
        """
        for item in self.evaluate_iter(config, should_stop=should_stop, latency=latency, **kwargs):
            if isinstance(item, Result):
                return item
        raise Cancelled("evaluation cancelled before it finished")

    def evaluate_full(self, config: CompressionConfig, **kwargs) -> Result:
        """:meth:`evaluate` without the cut cache: the reference the incremental path must match."""
        return self.evaluate(config, incremental=False, **kwargs)

    def evaluate_iter(self, config: CompressionConfig, *, should_stop: Callable[[], bool] = lambda: False,
                      latency: str = "both", batch_sizes: tuple[int, ...] = (1, 32),
                      latency_settings: LatencySettings | None = None, eval_size: int | None = None,
                      incremental: bool = True, eval_batch: int | None = None, seed: int = 0,
                      subset_note: dict | None = None) -> Iterator[Progress | Result]:
        """Evaluate ``config``; yields Progress (when the rounded percentage changes), then one Result.

        ``latency``: ``both``, ``measured``, ``estimated`` or ``none``. ``latency_settings`` overrides timing knobs
        (its ``batch_sizes`` wins over ``batch_sizes``). ``eval_size`` evaluates the first N samples only.
        ``incremental`` serves the simulated forward from the cut cache (identical numbers); ``eval_batch`` is the
        chunk size of the accuracy forwards (default :attr:`eval_chunk`; should_stop is checked between chunks).
        Returns without a Result when ``should_stop()`` becomes true (checked between batches). ``seed`` is
        recorded only: nothing here draws random numbers. ``subset_note`` (plain JSON values, e.g. how
        ``eval_size`` was chosen) goes into the Result's ``provenance["eval_subset"]`` beside the sample counts.
        """
        if latency not in LATENCY_MODES:
            raise ValueError(f"latency must be one of {', '.join(LATENCY_MODES)}, got {latency!r}")
        settings = latency_settings or LatencySettings(batch_sizes=tuple(batch_sizes))
        started = datetime.now(UTC)
        samples = self.subset(eval_size)
        if samples == 0:
            raise ValueError(f"{self.data.name} has no evaluation samples; choose a larger evaluation split")
        inputs = self.data.eval_inputs[:samples]
        labels = None if self.data.eval_labels is None else self.data.eval_labels[:samples]
        eval_batch = eval_batch or self.eval_chunk
        chunks = [(i, min(i + eval_batch, samples)) for i in range(0, samples, eval_batch)]
        measured_units = len(settings.batch_sizes) + 1 if latency in ("both", "measured") else 0
        estimated_units = 1 if latency in ("both", "estimated") else 0
        progress = _ProgressSteps(2 + len(chunks) + 1 + measured_units + estimated_units)

        if should_stop():
            return
        reference = self.reference_logits(samples)
        if (p := progress.step("reference")) is not None:
            yield p
        plan = self.plan(config)
        layer_settings = plan.settings
        # A plan that rewrites no weight and casts no activation runs the base model's arithmetic: its outputs
        # are the reference's, bit for bit, so a second forward (the whole cost of an fp32 point on a resnet50)
        # would only repeat them.
        reuses_reference = self.compressor.changes_nothing(plan) and self.reference_module is self.module
        simulated = None if reuses_reference else self.simulated(plan)
        if (p := progress.step("compress")) is not None:
            yield p
        outputs = [reference] if reuses_reference else []
        for start, end in chunks:
            if should_stop():
                return
            if not reuses_reference:
                chunk = inputs[start:end]
                if incremental:
                    out = self.evaluator.forward_chunk(config, chunk, f"{self._eval_fingerprint}[{start}:{end}]",
                                                       module=simulated, settings=layer_settings)
                else:
                    with torch.inference_mode(), runtime.running():
                        out = simulated(chunk)
                outputs.append(out.float())
            if (p := progress.step("accuracy")) is not None:
                yield p
        output = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        fidelity = _fidelity(reference, output, labels)
        weights = memory_mod.weight_memory(self._state, plan)
        peak = self._activation_profile().peak_bytes(layer_settings)
        if (p := progress.step("memory")) is not None:
            yield p

        measured: list[LatencyStats] = []
        executed: dict[str, str] = {}
        note = ""
        protocol = None
        # Estimates are made at the thread count asked for (torch's own by default), whatever a timing is pinned
        # to on a busy machine: every point's estimate then describes the same threads and stays comparable.
        estimate_threads = settings.resolved_threads()
        if measured_units:
            if should_stop():
                return
            # one fixed thread count for this timing (fewer than asked when other work holds a core)
            pinned = timing_threads(settings.threads)
            settings = dataclasses.replace(settings, threads=pinned.threads)
            real = self.real_model(plan)
            executed, note = dict(real.executed_precisions), real.note
            note = "; ".join(filter(None, [note, _half_precision_note(executed, settings.resolved_threads())]))
            if (p := progress.step("latency (measured)")) is not None:
                yield p
            # fp32 and the configuration in alternating blocks: the ratio is taken round by round
            compared = {"config": real.module} if real.module is self.module else {"fp32": self.module,
                                                                                 "config": real.module}
            fit = self.latency_fit(pinned.threads)
            anchors = self._anchors(fit, plan, settings.batch_sizes, compared)
            compared.update({name: module for name, (_, module) in anchors.items() if name not in compared})
            protocol = {"protocol": "interleaved", **pinned.to_dict(), "models": list(compared),
                        "warmup": settings.warmup, "min_run_time_s": settings.min_run_time,
                        "min_rounds": settings.min_repeats, "budget_s": settings.budget_seconds(),
                        "ci_target": RATIO_CI_TARGET, "drop_rule": DROP_RULE, "rounds": {}, "dropped": {},
                        "stopped": {}, "ratio_ci": {}, "block_calls": {}, "fp32_ms": {}}
            timings = time_interleaved(compared, inputs, settings, should_stop=should_stop)
            try:
                while True:
                    # the int8 kernels run on the engine they were packed for
                    with quantized_engine(), runtime.running():
                        timing = next(timings, None)
                    if timing is None:
                        break
                    measured.append(timing.stats_with_ratio("config"))
                    protocol["rounds"][str(timing.batch)] = timing.rounds
                    protocol["dropped"][str(timing.batch)] = timing.dropped
                    protocol["stopped"][str(timing.batch)] = timing.stopped
                    if "config" in timing.ratios:
                        protocol["ratio_ci"][str(timing.batch)] = round(timing.ratios["config"].ci, 4)
                    protocol["block_calls"][str(timing.batch)] = dict(timing.block_calls)
                    if "fp32" in timing.stats:
                        protocol["fp32_ms"][str(timing.batch)] = timing.stats["fp32"].median_ms
                    for name, (family, _) in anchors.items():
                        if family == "fp32":
                            stats = timing.stats.get(name)
                            if stats is not None:
                                fit.record("fp32", timing.batch, stats.median_ms, noisy=stats.noisy)
                        elif name in timing.ratios:
                            fit.record(family, timing.batch, timing.ratios[name].median)
                    if (p := progress.step("latency (measured)")) is not None:
                        yield p
            finally:
                timings.close()  # restores torch's thread count even when the caller stops early
            if anchors:
                fit_mod.save_fit(fit)
                protocol["anchors"] = {name: family for name, (family, _) in anchors.items()}
            if should_stop():
                return
        estimated: list[LatencyStats] = []
        roofline_info = None
        if estimated_units:
            if should_stop():
                return
            threads = estimate_threads
            roofline = roofline_mod.calibrate(threads)
            costs = self._layer_costs(weights)
            used: set[str] = set()
            fitted = self._fitted_factors(layer_settings, roofline, threads, settings.batch_sizes)
            unfitted = {}
            for batch in settings.batch_sizes:
                ms, assumptions = roofline_mod.estimate_ms(costs, layer_settings, roofline, batch,
                                                           fitted["factors"].get(batch))
                used.update(assumptions)
                estimated.append(LatencyStats(batch, ms, 0.0, 0))
                unfitted[str(batch)] = roofline_mod.estimate_ms(costs, layer_settings, roofline, batch)[0]
            calibration = roofline.describe() + (f"; {fitted['text']}" if fitted["text"] else "")
            roofline_info = {"estimated": True, "calibration": calibration,
                             "fit": {"fitted": bool(fitted["factors"]), "text": fitted["text"],
                                     "factors": {str(b): f for b, f in fitted["factors"].items()},
                                     "borrowed_fp32_factor": fitted["borrowed"], "unfitted_ms": unfitted},
                             "calibrated_at": roofline.calibrated_at, "peak_macs_per_s": roofline.peak_macs,
                             "bandwidth_bytes_per_s": roofline.bandwidth, "overhead_s": roofline.overhead_s,
                             "kernels": {p: {k: list(v) for k, v in kinds.items()}
                                         for p, kinds in roofline.kernels.items()},
                             "assumptions": {k: roofline_mod.ASSUMPTIONS[k] for k in sorted(used)}}
            if (p := progress.step("latency (estimated)")) is not None:
                yield p

        provenance = self._provenance(settings, seed, started, latency, samples, roofline_info)
        provenance["incremental"] = {"used": bool(incremental and self.evaluator.traceable and not reuses_reference),
                                     "note": self.note}
        provenance["reused_reference"] = reuses_reference
        if protocol is not None:
            provenance["latency_protocol"] = protocol
            provenance["int8_boundaries"] = list(real.boundaries)
        provenance["eval_subset"] = {"samples": samples, "of": self.eval_samples, **dict(subset_note or {})}
        # what may make this result's figures mislead, beside what the loaded model itself warns about
        provenance["warnings"] = [*provenance.get("warnings", ()), *fidelity_warnings(reference, labels is not None),
                                  *scale_floor_warnings(self.compressor, plan)]
        provenance["fidelity"] = outputs_mod.regression_metrics(reference, output)
        provenance["fp32_layers"] = self._fp32_layers(plan)
        fixed = getattr(self.module, "static_batch", None)
        if fixed and fixed > 1:
            provenance["warnings"].append(f"the exported program is fixed at batch {fixed}: it ran in slices of "
                                          f"{fixed} (the last padded), so latency at smaller batches times {fixed}")
        if getattr(self.data, "synthetic", False):
            provenance["warnings"].insert(0, "fidelity on synthetic inputs: drawn from the input specification "
                                             f"{self.data.input_spec['text']}, not real data; no accuracy")
        selection = getattr(self.module, "output_selection", None)
        if selection is not None:
            provenance["output"] = selection.to_dict()
        yield Result(
            config=config, config_key=config.key(), labelled=fidelity["accuracy"] is not None, eval_samples=samples,
            weight_bytes=weights.weight_bytes, fp32_weight_bytes=weights.fp32_weight_bytes,
            peak_activation_bytes=peak, latency_measured=tuple(measured), executed_precisions=executed,
            measured_note=note, latency_estimated=tuple(estimated), provenance=provenance, **fidelity,
        )

    def simulated(self, plan: Plan) -> torch.nn.Module:
        """The simulated model of ``plan`` (a few recent ones are kept: they never change once built)."""
        key = plan.config.key()
        with self._lock:
            found = self._simulated.get(key)
            if found is not None:
                self._simulated.move_to_end(key)
                return found
        module = self.compressor.simulate(plan)
        with self._lock:
            self._simulated[key] = module
            while len(self._simulated) > 4:
                self._simulated.popitem(last=False)
        return module

    # -- real kernels ----------------------------------------------------------------------------------------
    def real_model(self, plan: Plan) -> RealModel:
        """The model PyTorch really runs for ``plan`` (cached: conversion costs about a second)."""
        precisions = planned(plan)
        if all(p == "fp32" for p, _ in precisions.values()) and not plan.pruned:
            notes = sorted({why for _, why in precisions.values()} - {""})
            return RealModel(self.module, {n: p for n, (p, _) in precisions.items()}, "; ".join(notes), True)

        def build() -> RealModel:
            try:
                # real-size inputs calibrate in the engine's bounded chunks; small models keep torch.ao's
                # batches of 256 (histogram observers depend on the batching: their numbers stay as they were)
                calib_batch = 256 if self.eval_chunk >= EVAL_BATCH else self.eval_chunk
                rounded = {layer.name: found for layer in plan if (found := self.compressor.real_weight(layer))}
                return build_real_model(self.module, plan, self.data.calib_inputs, calib_batch=calib_batch,
                                        rounded=rounded)
            except Exception as error:  # any model we cannot rebuild still has one real execution: itself, in fp32
                reason = " ".join(str(error).split())[:160] or type(error).__name__
                return RealModel(self.module, {n: "fp32" for n in precisions},
                                 f"could not build the real-kernel model ({type(error).__name__}: {reason}); "
                                 "measured the model as loaded, fp32 eager", False)

        return self.real_models.get(plan.config.key(), build)

    # -- the latency estimate fitted to this model (see measurement/latency_fit.py) ------------------------------
    def latency_fit(self, threads: int) -> fit_mod.LatencyFit:
        """This model's latency anchors at ``threads`` (from memory, else the cache folder; maybe still empty)."""
        with self._lock:
            fit = self._fits.get(threads)
        if fit is None:
            loaded = self.loaded
            identity = "|".join((getattr(loaded, "sha256", "") or f"unsaved-{id(self.module)}",
                                 type(self.module).__name__, str(len(self._state))))
            shape = tuple(self.data.eval_inputs.shape[1:]) if torch.is_tensor(self.data.eval_inputs) else ()
            fit = fit_mod.load_fit(fit_mod.fit_key(identity, shape, threads, ENGINE, roofline_mod.cpu_model()),
                                   threads)
            with self._lock:
                fit = self._fits.setdefault(threads, fit)
        return fit

    @staticmethod
    def _anchor_config(family: str) -> CompressionConfig:
        if family == "fp32":
            return CompressionConfig()
        return CompressionConfig().with_defaults(weight={"precision": family}, activation={"precision": family})

    def _anchors(self, fit: fit_mod.LatencyFit, plan: Plan, batches, compared: dict
                 ) -> dict[str, tuple[str, torch.nn.Module]]:
        """Timing name -> (family, module) of the anchors this timing records: the fp32 model (every measured
        evaluation times it), the configuration itself when it is a uniform anchor, and the anchors ``fit`` still
        lacks among int8 and the reduced floats this configuration computes in (added to the timing)."""
        fp32 = next(name for name, module in compared.items() if module is self.module)
        anchors = {fp32: ("fp32", self.module)}
        families = ["int8", *sorted({roofline_mod.compute_family(s)[0] for s in plan.settings.values()}
                                    & {"bf16", "fp16"})]
        for family in families:
            if plan.config.key() == self._anchor_config(family).key() and compared.get("config", self.module) \
                    is not self.module:
                anchors["config"] = (family, compared["config"])
                continue
            if fit.has(family, batches):
                continue
            real = self.real_model(self.plan(self._anchor_config(family)))
            if not real.converted or family not in {p.split("-")[0] for p in real.executed_precisions.values()}:
                fit.unavailable[family] = real.note or f"no layer of this model runs on {family} kernels here"
                continue
            name = next((key for key, other in compared.items() if other is real.module), f"anchor:{family}")
            anchors[name] = (family, real.module)
        return anchors

    def _fitted_factors(self, layer_settings, roofline: roofline_mod.Roofline, threads: int, batches) -> dict:
        """Per batch, the family factors that fit the estimate to this model's anchors, and how to say so."""
        fit, fit_threads = self.latency_fit(threads), threads
        if not fit.measured_ms.get("fp32"):
            # measured at another thread count (a timing pins fewer threads on a busy machine): its factors say
            # what this model adds to the kernel table at that count, applied to this count's estimate
            for other in range(1, max(threads, os.cpu_count() or 1) + 1):
                found = self.latency_fit(other) if other != threads else fit
                if found.measured_ms.get("fp32"):
                    fit, fit_threads = found, other
                    break
            else:
                return {"factors": {}, "borrowed": [], "text": "not fitted to this model yet: its latency has not "
                        "been measured (an evaluation with measured latency fits it)"}
        fit_roofline = roofline if fit_threads == threads else roofline_mod.calibrate(fit_threads)
        used = {roofline_mod.compute_family(s)[0] for s in layer_settings.values()} | {"fp32"}
        factors, borrowed = {}, set()
        for batch in batches:
            raw = {}
            for family in used:
                if family not in self._anchor_costs:
                    plan = self.plan(self._anchor_config(family))
                    self._anchor_costs[family] = (self._layer_costs(memory_mod.weight_memory(self._state, plan)),
                                                  plan.settings)
                costs, settings = self._anchor_costs[family]
                raw[family] = roofline_mod.estimate_ms(costs, settings, fit_roofline, batch)[0]
            factors[batch], missing = fit.factors(raw, batch)
            borrowed.update(missing)
        if not all(factors.values()):
            return {"factors": {}, "borrowed": [], "text": "not fitted to this model at every batch size"}
        text = fit.describe(batches)
        if fit_threads != threads:
            text += f"; factors fitted at {fit_threads} thread(s), applied to the {threads}-thread estimate"
        if borrowed:
            text += f"; {', '.join(sorted(borrowed))} scaled as fp32 (no anchor measured for this model)"
        return {"factors": factors, "borrowed": sorted(borrowed), "text": text}

    # -- internals -------------------------------------------------------------------------------------------
    def _fp32_layers(self, plan: Plan) -> list[dict]:
        """Layers (or parts of them) that stay fp32 under ``plan``, each with the reason: what the inventory cannot
        compress, and Embeddings, which are weight-only (their inputs are integer ids)."""
        kept = [{"name": info.name, "reason": info.reason} for info in self.compressor.inventory
                if not info.compressible]
        kept += [{"name": layer.name, "reason": "activations stay fp32: an Embedding is weight-only (its inputs are "
                  "integer ids)"} for layer in plan
                 if layer.kind == "Embedding" and not layer.settings.skip
                 and is_integer(layer.settings.activation.precision)]
        return kept

    def _activation_profile(self) -> memory_mod.ActivationProfile:
        if self._activations is None:
            profile = memory_mod.activation_profile(self.module, self.data.eval_inputs[:1], self.layers)
            with self._lock:
                if self._activations is None:
                    self._activations = profile
        return self._activations

    def _layer_costs(self, weights: memory_mod.WeightMemory) -> list[roofline_mod.LayerCost]:
        per_layer: dict[str, int] = {}
        for tensor in weights.tensors:
            layer = tensor.name.rsplit(".", 1)[0]
            per_layer[layer] = per_layer.get(layer, 0) + tensor.total_bytes
        sizes = self._activation_profile().sizes
        costs = []
        for info in self.layers:
            numel_in, numel_out = sizes.get(info.name, (0, math.prod(info.output_shape)))
            costs.append(roofline_mod.LayerCost(info.name, int(info.macs), per_layer.get(info.name, 0), numel_in,
                                                numel_out, info.kind, int(info.groups or 1)))
        return costs

    def _provenance(self, settings: LatencySettings, seed: int, started: datetime, latency: str, samples: int,
                    roofline_info: dict | None) -> dict:
        loaded, data = self.loaded, self.data
        return {
            "qtradeoff": qtradeoff.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu": roofline_mod.cpu_model(),
            "threads": settings.resolved_threads(),
            "quantized_engine": ENGINE,
            "batch_sizes": list(settings.batch_sizes),
            "latency": latency,
            "latency_min_run_time_s": settings.min_run_time,
            "latency_warmup": settings.warmup,
            "eval_samples": samples,
            "calib_samples": len(data.calib_inputs),
            "seed": seed,
            "model": {"name": getattr(loaded, "name", ""), "sha256": getattr(loaded, "sha256", ""),
                      "format": getattr(loaded, "format", "")},
            "data": {"name": data.name, "fingerprint": self.subset_fingerprint(samples),
                     "synthetic": bool(getattr(data, "synthetic", False)),
                     "input": getattr(data, "input_spec", None)},
            "simulation_notes": list(self.compressor.notes),
            "warnings": list(getattr(loaded, "warnings", ())),  # e.g. NaN weights: every Result says so
            "roofline": roofline_info,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_seconds": round(time.time() - started.timestamp(), 3),
        }


class _ProgressSteps:
    """Counts evaluation steps; a Progress only when the rounded percentage changes (Orange3's habit)."""

    def __init__(self, total: int):
        self.total, self.done, self._percent = total, 0, -1

    def step(self, stage: str) -> Progress | None:
        self.done += 1
        percent = round(100 * self.done / self.total)
        if percent == self._percent:
            return None
        self._percent = percent
        return Progress(self.done, self.total, stage)


def _half_precision_note(executed: dict[str, str], threads: int) -> str:
    """Say whether bf16/fp16 layers ran on native kernels here, from the roofline matmul calibration."""
    halves = sorted({p for p in executed.values() if p in ("bf16", "fp16")})
    if not halves:
        return ""
    peaks = roofline_mod.calibrate(threads).peak_macs
    parts = []
    for precision in halves:
        speed = peaks[precision] / peaks["fp32"]
        kind = "native" if speed >= 1.0 else "emulated or unoptimised"
        parts.append(f"{precision} layers ran on this CPU's {precision} kernels ({kind}: matmul {speed:.2f}x fp32)")
    return "; ".join(parts)


# Below this many samples one sample moves accuracy by more than 2 points: the figure is a coarse one.
FEW_SAMPLES = 50
# fp32 outputs whose spread over the samples is below this fraction of their magnitude (or exactly zero) are
# "constant": every input gives the same answer, so agreement and SQNR compare nothing.
CONSTANT_SPREAD = 1e-6
TINY_OUTPUT = 1e-6  # largest |fp32 output| below which activation grids' scale floors can zero everything


def fidelity_warnings(reference: torch.Tensor, labelled: bool) -> list[str]:
    """Why the fidelity figures of an evaluation against ``reference`` (fp32 outputs) may mislead."""
    warnings = []
    n = len(reference)
    flat = reference.reshape(n, -1).double() if n else reference.double()
    if n >= 2:
        spread = float(flat.std(dim=0).max())
        scale = float(flat.abs().max())
        if spread <= CONSTANT_SPREAD * max(scale, 1e-30) or scale == 0.0:
            warnings.append(
                f"the fp32 model's outputs are {'all zero' if scale == 0.0 else 'the same for every sample'} "
                f"(largest spread over samples {spread:.3g}), so agreement and SQNR compare nothing; check the "
                "model's weights and the preprocessing")
        elif scale < TINY_OUTPUT:
            warnings.append(f"the fp32 model's outputs are tiny (largest magnitude {scale:.3g}): an integer grid's "
                            "smallest scale can round them to zero; judge this model by its weights' SQNR")
    if not labelled:
        warnings.append("no labels: top-1 agreement assumes the output is class scores; for an embedding or a "
                        "regression output read SQNR instead")
    if 0 < n < FEW_SAMPLES:
        warnings.append(f"only {n} evaluation samples: one sample is {100 / n:.1f} points of accuracy; use more "
                        "samples before trusting small differences")
    return warnings


def _fidelity(reference: torch.Tensor, output: torch.Tensor, labels: torch.Tensor | None) -> dict:
    n = len(output)
    if not outputs_mod.is_class_scores(reference):
        # not class scores: "agreement" compares where each sample's largest value is; no accuracy without classes
        reference, output, labels = reference.reshape(n, -1), output.reshape(n, -1), None
    predicted = output.argmax(1)
    agree = int((predicted == reference.argmax(1)).sum())
    out = {"agreement": agree / n if n else 0.0, "agreement_ci95": wilson_interval(agree, n),
           "sqnr_db": sqnr_db(reference, output), "accuracy": None, "accuracy_ci95": None, "top5": None,
           "top5_ci95": None}
    if labels is not None:
        labels = labels.to(predicted.device)
        correct = int((predicted == labels).sum())
        out["accuracy"], out["accuracy_ci95"] = correct / n, wilson_interval(correct, n)
        classes = output.shape[1] if output.dim() == 2 else 0
        if classes >= 5:
            top5 = int((output.topk(5, dim=1).indices == labels[:, None]).any(dim=1).sum())
            out["top5"], out["top5_ci95"] = top5 / n, wilson_interval(top5, n)
    return out
