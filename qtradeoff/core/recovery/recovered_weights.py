"""The recovered-weights file (safetensors + a JSON header, schema ``qtradeoff.recovered/1``) and the engine that
evaluates and exports a configuration with those weights.

The file holds, per fine-tuned layer, its weight (BatchNorm folded in, pruned entries exactly zero) and bias, the
pruning masks training kept fixed, and the activation grids it trained with; the header names the model's
sha256 and the configuration it was trained for, so a file is refused for any other model or configuration.
A recovered model is the base with those tensors written in and each folded BatchNorm made an exact identity,
so the ordinary simulation, memory accounting, real kernels and every export read recovered weights unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from qtradeoff.core.compression.compress import ActivationGrid, Compressor, get_submodule
from qtradeoff.core.compression.plan import LayerPlan
from qtradeoff.core.config import CompressionConfig, ConfigError
from qtradeoff.core.errors import InputError

SCHEMA = "qtradeoff.recovered/1"
_HEADER_KEY = "qtradeoff"
_WEIGHT_PREFIX, _MASK_PREFIX = "weight/", "mask/"


class RecoveredWeightsError(InputError):
    """A recovered-weights file is unreadable, not one, or made for another model or configuration."""


@dataclass
class RecoveredWeights:
    """What a recovery fine-tune trained, for one model (by sha256) and one configuration."""

    tensors: dict[str, torch.Tensor]  # "<layer>.weight" / "<layer>.bias", BatchNorm folded
    masks: dict[str, torch.Tensor]  # "<layer>.weight" -> bool keep-mask training kept fixed (pruned layers only)
    norms: dict[str, str]  # layer -> the BatchNorm folded into it
    grids: dict[str, dict[str, dict]]  # layer -> {"input"/"output": ActivationGrid.to_dict()}
    config: CompressionConfig
    model_sha256: str
    model_file: str = ""
    model_format: str = ""
    training: dict = field(default_factory=dict)
    path: str = ""  # the file it was read from, when it was

    @property
    def layers(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[0] for name in self.tensors})

    def header(self) -> dict:
        return {"schema": SCHEMA,
                "model": {"file": self.model_file, "sha256": self.model_sha256, "format": self.model_format},
                "config": self.config.to_dict(), "config_key": self.config.key(), "norms": self.norms,
                "grids": self.grids, "training": self.training}

    def check(self, loaded, config: CompressionConfig | None = None) -> None:
        """Raise :class:`RecoveredWeightsError` unless these weights were trained for ``loaded`` (its sha256) and
        ``config`` (by its key; None: the file's own configuration)."""
        where = self.path or "the recovered weights"
        sha = getattr(loaded, "sha256", "")
        if self.model_sha256 and sha and sha != self.model_sha256:
            raise RecoveredWeightsError(
                f"{where} was recovered for another model (sha256 {self.model_sha256[:12]}…, "
                f"{self.model_file or 'unnamed'}), not {getattr(loaded, 'name', 'this model')} "
                f"(sha256 {sha[:12]}…); recover this model instead")
        if config is not None and config.key() != self.config.key():
            raise RecoveredWeightsError(
                f"{where} was recovered for a different configuration than the one given (config key "
                f"{self.config.key()[:12]}… vs {config.key()[:12]}…); pass the configuration it was trained for "
                "or leave --config out to use the file's own")


def save_recovered(weights: RecoveredWeights, path: str | os.PathLike) -> Path:
    """Write ``weights`` atomically (a failed write leaves no file) and return the path."""
    from safetensors.torch import save_file

    target = Path(path)
    tensors = {_WEIGHT_PREFIX + name: t.detach().contiguous() for name, t in weights.tensors.items()}
    tensors.update({_MASK_PREFIX + name: m.detach().bool().contiguous() for name, m in weights.masks.items()})
    scratch = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(scratch), metadata={_HEADER_KEY: json.dumps(weights.header(), sort_keys=True)})
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return target


def load_recovered(path: str | os.PathLike) -> RecoveredWeights:
    """Read a recovered-weights file; raises :class:`RecoveredWeightsError` naming the file and the problem."""
    from safetensors import SafetensorError, safe_open

    name = str(path)
    if not Path(path).is_file():
        raise RecoveredWeightsError(f"recovered weights {name} not found (write one with qtradeoff recover)")
    try:
        with safe_open(name, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise RecoveredWeightsError(f"{name} is not a recovered-weights file (safetensors: "
                                    f"{' '.join(str(error).split())[:120]})") from None
    try:
        header = json.loads(metadata[_HEADER_KEY])
    except (KeyError, json.JSONDecodeError):
        raise RecoveredWeightsError(f"{name} has no {SCHEMA} header: it is a safetensors file but not recovered "
                                    "weights written by qtradeoff recover") from None
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        found = header.get("schema") if isinstance(header, dict) else None
        raise RecoveredWeightsError(f"{name} has schema {found!r}, expected {SCHEMA}")
    try:
        config = CompressionConfig.from_dict(header["config"])
        model = dict(header.get("model") or {})
        weights = RecoveredWeights(
            tensors={k[len(_WEIGHT_PREFIX):]: t for k, t in tensors.items() if k.startswith(_WEIGHT_PREFIX)},
            masks={k[len(_MASK_PREFIX):]: t.bool() for k, t in tensors.items() if k.startswith(_MASK_PREFIX)},
            norms={str(k): str(v) for k, v in dict(header.get("norms") or {}).items()},
            grids={str(k): dict(v) for k, v in dict(header.get("grids") or {}).items()},
            config=config, model_sha256=str(model.get("sha256", "")), model_file=str(model.get("file", "")),
            model_format=str(model.get("format", "")), training=dict(header.get("training") or {}), path=name)
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        raise RecoveredWeightsError(f"{name}: invalid {SCHEMA} header ({' '.join(str(error).split())[:160]})") \
            from None
    return weights


def _identity_variance(eps: float) -> torch.Tensor:
    """A float32 running variance ``v`` with ``v + eps == 1`` exactly, so a folded identity BatchNorm multiplies
    by exactly 1 (``rsqrt(1) == 1``) and the recovered weights fold back to themselves bit for bit."""
    one = torch.tensor(1.0)
    candidate = torch.tensor(1.0 - eps, dtype=torch.float32)
    for _ in range(64):
        total = candidate + eps
        if bool(total == one):
            return candidate
        candidate = torch.nextafter(candidate, one if bool(total < one) else -one)
    return torch.tensor(1.0 - eps, dtype=torch.float32)


def recovered_module(base: nn.Module, weights: RecoveredWeights) -> nn.Module:
    """A copy of ``base`` carrying the recovered tensors (the base is not touched)."""
    with torch.no_grad():
        model = copy_module(base)
        for name, tensor in weights.tensors.items():
            layer, attribute = name.rsplit(".", 1)
            try:
                target = get_submodule(model, layer)
            except AttributeError:
                raise RecoveredWeightsError(f"{weights.path or 'the recovered weights'} names layer {layer!r}, "
                                            "which this model does not have") from None
            current = getattr(target, attribute, None)
            if isinstance(current, torch.Tensor) and tuple(current.shape) != tuple(tensor.shape):
                raise RecoveredWeightsError(f"{weights.path or 'the recovered weights'}: {name} has shape "
                                            f"{tuple(tensor.shape)}, the model's {tuple(current.shape)}")
            setattr(target, attribute, nn.Parameter(tensor.detach().clone().float(), requires_grad=False))
        for norm in weights.norms.values():
            bn = get_submodule(model, norm)
            bn.running_mean = torch.zeros_like(bn.running_mean)
            bn.running_var = torch.full_like(bn.running_var, float(_identity_variance(bn.eps)))
            if bn.weight is not None:
                bn.weight = nn.Parameter(torch.ones_like(bn.weight), requires_grad=False)
                bn.bias = nn.Parameter(torch.zeros_like(bn.bias), requires_grad=False)
    model.eval()
    return model


def copy_module(base: nn.Module) -> nn.Module:
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(base)


class RecoveredCompressor(Compressor):
    """The Compressor of a recovered model: for the layers and settings training used, the masks and activation
    grids are the trained ones (recomputing them from the changed weights could differ); any other configuration
    is compressed as usual."""

    def __init__(self, module: nn.Module, calib_inputs, weights: RecoveredWeights, **kwargs):
        super().__init__(module, calib_inputs, **kwargs)
        self.recovered = weights
        self._trained_settings = {info.name: weights.config.resolve(info.name, info.kind) for info in self.layers}
        self._trained_grids = {name: {where: ActivationGrid.from_dict(grid) for where, grid in grids.items()}
                               for name, grids in weights.grids.items()}

    def mask(self, layer, name, settings, transform=()):
        if self._trained_settings.get(layer) == settings and settings.prune.method != "none" and not settings.skip:
            found = self.recovered.masks.get(f"{layer}.{name}")
            if found is not None:
                return found
        return super().mask(layer, name, settings, transform)

    def activation_grids(self, layer: LayerPlan, plan=None) -> dict[str, ActivationGrid]:
        if self._trained_settings.get(layer.name) == layer.settings and self.casts_activations(layer):
            return dict(self._trained_grids.get(layer.name, {}))
        return super().activation_grids(layer, plan)


def recovered_engine(engine, weights: RecoveredWeights, config: CompressionConfig | None = None):
    """An Engine on ``engine``'s data whose model carries ``weights`` (checked against ``engine``'s model and
    ``config``); its fp32 reference stays the original model, so agreement and SQNR compare with the teacher, and
    every Result it produces says ``provenance["recovered"]``."""
    from qtradeoff.core.engine.engine import Engine

    weights.check(engine.loaded, config)
    module = recovered_module(engine.module, weights)
    loaded = dataclasses.replace(engine.loaded, module=module)
    compressor = RecoveredCompressor(module, engine.data.calib_inputs, weights, layers=engine.compressor.inventory)
    summary = recovered_summary(weights)

    class RecoveredEngine(Engine):
        def _provenance(self, *args, **kwargs) -> dict:
            provenance = super()._provenance(*args, **kwargs)
            provenance["recovered"] = summary
            return provenance

    return RecoveredEngine(loaded, engine.data, compressor=compressor, reference_module=engine.module)


def recovered_summary(weights: RecoveredWeights) -> dict:
    """What a Result of recovered weights records about them (plain JSON values)."""
    training = weights.training
    return {"file": Path(weights.path).name if weights.path else "", "path": weights.path,
            "split": training.get("split"),
            "samples": training.get("samples"), "steps": training.get("steps"), "seconds": training.get("seconds"),
            "layers": weights.layers}


def with_recovered_weights(engine, path: str | os.PathLike, config: CompressionConfig | None):
    """``(recovered engine, configuration)`` for the file at ``path``: ``config`` when given (it must be the one
    the weights were trained for), else the file's own."""
    weights = load_recovered(path)
    chosen = weights.config if config is None else config
    weights.check(engine.loaded, chosen)
    layer_names = {info.name for info in engine.layers}
    missing = [name for name in weights.layers if name not in layer_names]
    if missing:
        raise RecoveredWeightsError(f"{path} names layers this model does not have ({', '.join(missing[:3])})")
    return recovered_engine(engine, weights, chosen), chosen
