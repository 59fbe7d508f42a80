"""Recovery fine-tune of one compressed configuration: a trainable twin of the simulated model, trained for a
bounded number of steps with distillation from the fp32 model, yielding progress and stoppable between steps.

The twin computes what the simulation computes: BatchNorm folded into its convolution, weights masked by the
plan's fixed pruning masks and fake-quantized with the straight-through estimator (Bengio et al. 2013; the
quantization-aware training of Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018), activations cast on the grids the configuration was calibrated
to. The loss is Hinton et al.'s distillation from the fp32 teacher's logits, plus cross-entropy where the
training split has labels. Training data is the calibration split (or another train split), never the
evaluation split. What it trains is returned as :class:`~qtradeoff.core.recovery.recovered_weights.RecoveredWeights`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_weights

from qtradeoff.core import runtime
from qtradeoff.core.compression.compress import (
    ActivationGrid,
    Compressor,
    FoldedNorm,
    InputObserver,
    OutputObserver,
    get_submodule,
)
from qtradeoff.core.compression.plan import LayerPlan, Plan
from qtradeoff.core.compression.quantize import RangeObserver, int_range, qparams_from_range
from qtradeoff.core.config import CompressionConfig, WeightSpec
from qtradeoff.core.errors import UsageError
from qtradeoff.core.measurement.result import Progress
from qtradeoff.core.precision import bits_of, is_integer
from qtradeoff.core.recovery.primitives import recovery_loss, ste_activation, ste_weight
from qtradeoff.core.recovery.recovered_weights import RecoveredWeights

# Layer types whose forward reads ``self.weight`` (so a parametrization reaches it); others are left as PTQ.
TRAINABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)


class RecoveryError(UsageError):
    """Recovery cannot run on this model or configuration (one sentence saying why)."""


@dataclass(frozen=True)
class RecoverySettings:
    """How long and how a recovery fine-tune trains. ``steps`` (optimizer steps) wins over ``epochs`` (passes over
    the training split); ``time_limit_s`` bounds the wall time (training stops early, and says so)."""

    epochs: int = 30
    steps: int | None = None
    lr: float = 3e-3
    batch_size: int = 32
    temperature: float = 2.0
    label_weight: float = 0.5
    time_limit_s: float | None = 60.0
    seed: int = 0
    # small batches of small models train fastest on one thread, and leave the other cores to the GUI/workers
    threads: int = 1
    # re-derive integer activation grids from the quantized model after every epoch but the last (QAT observers)
    recalibrate: bool = True

    def __post_init__(self):
        for name, value, low in (("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
                                 ("threads", self.threads, 1)):
            if int(value) < low:
                raise RecoveryError(f"recovery {name} must be at least {low}, got {value}")
        if self.steps is not None and int(self.steps) < 1:
            raise RecoveryError(f"recovery steps must be at least 1, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RecoveryError(f"recovery learning rate must be a positive number, got {self.lr}")
        if not self.temperature > 0:
            raise RecoveryError(f"distillation temperature must be above 0, got {self.temperature}")
        if not 0.0 <= self.label_weight <= 1.0:
            raise RecoveryError(f"label weight must be between 0 and 1, got {self.label_weight}")

    def total_steps(self, samples: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return int(self.epochs) * max(1, math.ceil(samples / self.batch_size))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RecoveryProgress(Progress):
    """One optimizer step done: the loss of its batch (``stage`` says "recover")."""

    loss: float = float("nan")


class _StoredWeight(nn.Module):
    """Parametrization: the latent weight as the simulation stores it (mask, then fake-quant with STE)."""

    def __init__(self, spec: WeightSpec, mask: torch.Tensor | None, out_axis: int, quantize: bool):
        super().__init__()
        self.spec, self.out_axis, self.quantize = spec, out_axis, quantize
        self.register_buffer("mask", mask)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return ste_weight(latent, self.spec, self.mask, out_axis=self.out_axis, quantize=self.quantize)


class _InputSTE:
    def __init__(self, grid: ActivationGrid):
        self.grid = grid

    def __call__(self, module, args):
        return tuple(ste_activation(a, self.grid) if isinstance(a, torch.Tensor) else a for a in args)


class _OutputSTE:
    def __init__(self, grid: ActivationGrid):
        self.grid = grid

    def __call__(self, module, args, output):
        return ste_activation(output, self.grid) if isinstance(output, torch.Tensor) else None


@dataclass
class Twin:
    """The trainable twin of a simulated model and what training reads back from it."""

    module: nn.Module
    parameters: list[nn.Parameter]
    trained: list[str]  # layer names whose weights train
    left: list[str]  # compressible layers left at their post-training values (their type is not trainable)
    norms: dict[str, str]  # layer -> BatchNorm folded into it in the twin
    casts: dict[str, dict[str, _InputSTE | _OutputSTE]]  # layer -> "input"/"output" -> its cast (grid inside)

    @property
    def grids(self) -> dict[str, dict[str, ActivationGrid]]:
        """The activation grids the twin casts to now."""
        return {name: {where: cast.grid for where, cast in casts.items()} for name, casts in self.casts.items()}


def check_recoverable(compressor: Compressor, plan: Plan) -> None:
    """Raise :class:`RecoveryError` when recovery cannot train ``plan``'s model."""
    if isinstance(compressor.base, torch.jit.ScriptModule) or getattr(compressor, "_deep_copy", False):
        raise RecoveryError("recovery fine-tune needs an eager PyTorch model whose layers are called as modules; "
                            "load the model's weights with its architecture (--architecture) instead of TorchScript")
    if compressor.changes_nothing(plan):
        raise RecoveryError("nothing to recover: the configuration leaves every layer at fp32 and unpruned")
    from qtradeoff.core.precision import is_integer, is_lut

    for layer in plan.layers:
        # the twin fake-quantizes to nearest on plain integer grids; these choices compute other weights
        weight = layer.settings.weight
        other = ("cross-layer equalization or SmoothQuant" if layer.transform
                 else f"{weight.precision} lookup-table weights" if is_lut(weight.precision)
                 else f"{weight.rounding} rounding" if getattr(weight, "rounding", "nearest") != "nearest"
                 # the twin's grids are min-max, recomputed as the weights train
                 else "an MSE weight range" if getattr(weight, "range", "minmax") != "minmax"
                 and is_integer(weight.precision) else None)
        if other is not None and not layer.settings.skip:
            raise RecoveryError(f"recovery fine-tunes nearest-rounded integer grids, not {other} (layer "
                                f"{layer.name}); recover the configuration without it")


def build_twin(compressor: Compressor, plan: Plan) -> Twin:
    """A private trainable copy of ``plan``'s simulated model (the base is never touched)."""
    compressor.simulate(plan)  # calibrates activation ranges when the plan needs them
    grids = {layer.name: compressor.activation_grids(layer) for layer in plan}
    base = compressor.base
    with torch.no_grad():
        module = copy.deepcopy(base)
    module.eval()  # BatchNorm statistics and dropout stay as deployed: only the weights train
    for param in module.parameters():
        param.requires_grad_(False)
    params: list[nn.Parameter] = []
    trained, left, norms, casts = [], [], {}, {}
    for layer in plan:
        target = get_submodule(module, layer.name)
        if not isinstance(target, TRAINABLE_TYPES) or layer.weight_names != ("weight",):
            left.append(layer.name)
            _freeze_processed(compressor, target, layer)
        else:
            trained.append(layer.name)
            params.extend(_make_trainable(compressor, module, target, layer, norms))
        installed = _install_casts(target, grids.get(layer.name, {}))
        if installed:
            casts[layer.name] = installed
    return Twin(module, params, trained, left, norms, casts)


def _make_trainable(compressor: Compressor, model: nn.Module, target: nn.Module, layer: LayerPlan,
                    norms: dict[str, str]) -> list[nn.Parameter]:
    norm = compressor.folded_norm(layer.name)
    with torch.no_grad():
        if norm is not None:  # fold here even for an fp32 layer: the recovered file stores folded weights
            bn = get_submodule(compressor.base, norm)
            weight, bias = fuse_conv_bn_weights(target.weight, target.bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias,
                                                transpose=isinstance(target, nn.modules.conv._ConvTransposeNd))
            get_submodule(model, norm).forward = FoldedNorm(None)
            norms[layer.name] = norm
        else:
            weight = target.weight
            bias = getattr(target, "bias", None)
    target.weight = nn.Parameter(weight.detach().clone().float())
    params = [target.weight]
    if isinstance(bias, torch.Tensor):
        target.bias = nn.Parameter(bias.detach().clone().float())
        params.append(target.bias)
    mask = layer.masks.get("weight")
    parametrize.register_parametrization(
        target, "weight", _StoredWeight(layer.settings.weight, mask, layer.out_axis, quantize=layer.rewrites),
        unsafe=True)
    return params


def _freeze_processed(compressor: Compressor, target: nn.Module, layer: LayerPlan) -> None:
    if not layer.rewrites:
        return
    from qtradeoff.core.compression.compress import process_weight

    with torch.no_grad():
        for name in layer.weight_names:
            processed = process_weight(compressor.weight(layer.name, name), layer.settings.weight,
                                       layer.masks.get(name), out_axis=layer.out_axis)
            setattr(target, name, nn.Parameter(processed, requires_grad=False))


def _install_casts(target: nn.Module, grids: dict[str, ActivationGrid]) -> dict[str, _InputSTE | _OutputSTE]:
    installed: dict[str, _InputSTE | _OutputSTE] = {}
    if "input" in grids:
        installed["input"] = _InputSTE(grids["input"])
        target.register_forward_pre_hook(installed["input"])
    if "output" in grids:
        installed["output"] = _OutputSTE(grids["output"])
        target.register_forward_hook(installed["output"])
    return installed


def recalibrate(twin: Twin, plan: Plan, inputs: torch.Tensor, batch: int = 64) -> int:
    """Re-derive every integer activation grid from the twin's own (quantized) activations on ``inputs``, with
    each layer's calibration method, as QAT's observers do during training: the fp32 ranges the configuration
    was calibrated with no longer fit once low-bit weights have moved. Returns how many grids changed."""
    observed: list[tuple[RangeObserver, Any, _InputSTE | _OutputSTE]] = []
    handles = []
    for name, casts in twin.casts.items():
        spec = plan[name].settings.activation
        target = get_submodule(twin.module, name)
        for where, cast in casts.items():
            if not is_integer(cast.grid.precision):
                continue
            observer = RangeObserver()
            observed.append((observer, spec, cast))
            # prepended: they see the activation before this layer's own cast
            if where == "input":
                handles.append(target.register_forward_pre_hook(InputObserver(observer), prepend=True))
            else:
                handles.append(target.register_forward_hook(OutputObserver(observer), prepend=True))
    if not observed:
        return 0
    try:
        with torch.no_grad(), runtime.running():
            for start in range(0, len(inputs), batch):
                twin.module(inputs[start:start + batch])
    finally:
        for handle in handles:
            handle.remove()
    changed = 0
    for observer, spec, cast in observed:
        if observer.hi < observer.lo:
            continue
        bits = bits_of(spec.precision)
        lo, hi = observer.range(spec.calibration, percentile=spec.percentile, bits=bits, symmetric=spec.symmetric)
        scale, zero_point = qparams_from_range(torch.tensor(lo), torch.tensor(hi), bits, spec.symmetric)
        qmin, qmax = int_range(bits, spec.symmetric)
        grid = ActivationGrid(spec.precision, float(scale), int(zero_point), qmin, qmax)
        changed += grid != cast.grid
        cast.grid = grid
    return changed


def teacher_logits(module: nn.Module, inputs: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """The fp32 model's outputs on ``inputs`` (the distillation targets)."""
    with torch.inference_mode(), runtime.running():
        return torch.cat([module(inputs[i:i + batch]).float() for i in range(0, len(inputs), batch)])


def training_loss(twin: Twin, inputs: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None,
                  settings: RecoverySettings, batch: int = 64) -> float:
    """The recovery loss of the twin over the whole training split (no gradient), sample-weighted."""
    total = 0.0
    with torch.no_grad(), runtime.running():
        for start in range(0, len(inputs), batch):
            end = min(start + batch, len(inputs))
            loss = recovery_loss(twin.module(inputs[start:end]), teacher[start:end],
                                 None if labels is None else labels[start:end], temperature=settings.temperature,
                                 label_weight=settings.label_weight)
            total += float(loss) * (end - start)
    return total / max(len(inputs), 1)


def extract(twin: Twin, compressor: Compressor, plan: Plan) -> tuple[dict[str, torch.Tensor],
                                                                     dict[str, torch.Tensor]]:
    """The trained tensors (``"<layer>.weight"`` masked, ``"<layer>.bias"``) and the masks they were trained
    with (``"<layer>.weight"``, bool), detached copies."""
    tensors, masks = {}, {}
    with torch.no_grad():
        for name in twin.trained:
            target = get_submodule(twin.module, name)
            latent = target.parametrizations.weight.original
            mask = plan[name].masks.get("weight")
            tensors[f"{name}.weight"] = (latent if mask is None else latent * mask).detach().clone().contiguous()
            if isinstance(getattr(target, "bias", None), torch.Tensor):
                tensors[f"{name}.bias"] = target.bias.detach().clone().contiguous()
            if mask is not None:
                masks[f"{name}.weight"] = mask.detach().bool().clone().contiguous()
    return tensors, masks


def recover_iter(engine, config: CompressionConfig, settings: RecoverySettings | None = None, *,
                 inputs: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 split: str = "calibration", should_stop: Callable[[], bool] = lambda: False
                 ) -> Iterator[RecoveryProgress | RecoveredWeights]:
    """Fine-tune ``config`` on ``engine``'s model; yields RecoveryProgress, then one RecoveredWeights.

    ``inputs``/``labels`` default to the engine's calibration split (``split`` names what they are in the
    file). Returns without a result when ``should_stop()`` becomes true (checked before every step).
    """
    settings = settings or RecoverySettings()
    compressor: Compressor = engine.compressor
    plan = compressor.plan(config)
    check_recoverable(compressor, plan)
    if inputs is None:
        inputs, labels = engine.data.calib_inputs, engine.data.calib_labels
    if inputs is None or len(inputs) == 0:
        raise RecoveryError("recovery needs training samples: the calibration split is empty; give a larger one")
    started = time.perf_counter()
    with _threads(settings.threads):
        teacher = teacher_logits(engine.module, inputs)
        twin = build_twin(compressor, plan)
    if not twin.parameters:
        raise RecoveryError("no layer of this model can be fine-tuned (only Linear, Conv and Embedding layers "
                            "train)")
    total = settings.total_steps(len(inputs))
    optimizer = torch.optim.Adam(twin.parameters, lr=settings.lr)
    # a short linear warm-up, then cosine decay: the first Adam steps at full rate can throw a configuration that
    # is already good (int4, int8) off its grid before they help
    warmup = max(1, min(20, total // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (
        1.0 + math.cos(math.pi * min(i, total) / total)))
    with _threads(settings.threads):
        initial_loss = training_loss(twin, inputs, teacher, labels, settings)
    initial = [param.detach().clone() for param in twin.parameters]
    initial_grids = twin.grids
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    step, stopped_by, percent = 0, "", -1
    while step < total and not stopped_by:
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            if should_stop():
                return
            if settings.time_limit_s is not None and time.perf_counter() - started > settings.time_limit_s:
                stopped_by = f"time limit of {settings.time_limit_s:g} s"
                break
            batch = order[start:start + settings.batch_size]
            with _threads(settings.threads), runtime.running():
                output = twin.module(inputs[batch])
                loss = recovery_loss(output, teacher[batch], None if labels is None else labels[batch],
                                     temperature=settings.temperature, label_weight=settings.label_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            step += 1
            losses.append(float(loss.detach()))
            if round(100 * step / total) != percent or step == total:
                percent = round(100 * step / total)
                yield RecoveryProgress(step, total, "recover", losses[-1])
            if step >= total:
                break
        if settings.recalibrate and step < total and not stopped_by:
            with _threads(settings.threads):
                recalibrate(twin, plan, inputs)
    with _threads(settings.threads):
        final_loss = training_loss(twin, inputs, teacher, labels, settings)
    kept = ""
    if not final_loss < initial_loss:
        # fine-tuning made the training split's loss worse: the post-training weights are the better answer
        with torch.no_grad():
            for param, value in zip(twin.parameters, initial, strict=True):
                param.copy_(value)
        for name, casts in twin.casts.items():
            for where, cast in casts.items():
                cast.grid = initial_grids[name][where]
        kept = "post-training weights: fine-tuning did not lower the loss on the training split"
    tensors, masks = extract(twin, compressor, plan)
    training = {
        "split": split, "samples": len(inputs), "labelled": labels is not None, "steps": step,
        "planned_steps": total, "settings": settings.to_dict(), "first_loss": losses[0] if losses else None,
        "last_loss": _mean_tail(losses), "seconds": round(time.perf_counter() - started, 3),
        "stopped_early": stopped_by, "left_as_ptq": list(twin.left),
        "losses": [round(value, 6) for value in losses], "initial_loss": initial_loss, "final_loss": final_loss,
        "kept": kept,
    }
    loaded = engine.loaded
    yield RecoveredWeights(
        tensors=tensors, masks=masks, norms=dict(twin.norms),
        grids={name: {where: grid.to_dict() for where, grid in grids.items()} for name, grids in twin.grids.items()
               if grids},
        config=config, model_sha256=getattr(loaded, "sha256", ""), model_file=str(getattr(loaded, "name", "")),
        model_format=str(getattr(loaded, "format", "")), training=training)


def recover(engine, config: CompressionConfig, settings: RecoverySettings | None = None, **kwargs
            ) -> RecoveredWeights:
    """:func:`recover_iter` run to the end; raises :class:`~qtradeoff.core.errors.CancelledError` when stopped."""
    from qtradeoff.core.errors import CancelledError

    for item in recover_iter(engine, config, settings, **kwargs):
        if isinstance(item, RecoveredWeights):
            return item
    raise CancelledError("recovery cancelled before it finished")


@contextmanager
def _threads(count: int):
    """torch on ``count`` threads for one block (never across a yield: other work in the process keeps its own)."""
    before = torch.get_num_threads()
    if before == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _mean_tail(losses: list[float], count: int = 10) -> float | None:
    tail = losses[-count:]
    return sum(tail) / len(tail) if tail else None
