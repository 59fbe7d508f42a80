"""Every user gesture as a CompressionConfig edit: pure functions from (configuration, gesture) to the next
configuration and the name of its undo step. No widgets and no Qt, so the rules are testable on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qtradeoff.core.config import CompressionConfig
from qtradeoff.gui.backend import THRESHOLD_STEP

# What "Set for selection" can change, in the order of its combobox, and the sparsities it offers.
SELECTION_FIELDS: tuple[tuple[str, str], ...] = (
    ("weight_precision", "Weight precision"),
    ("activation_precision", "Activation precision"),
    ("sparsity", "Sparsity"),
    ("activation_sparsity", "Channels pruned by activation"),
    ("rounding", "Weight rounding"),
)
SELECTION_SPARSITIES = (0, 25, 50, 75, 90)  # percent

# A layer's rounding choice (the layer table's column, "Set for selection"): the rounding, GPTQ's act-order and the
# weight grid's range in one value, written "<rounding>[+act-order][+mse]" as the algorithms benchmark does.
ROUNDING_CHOICES: tuple[str, ...] = (
    "nearest", "nearest+mse", "bias_correction", "bias_correction+mse", "adaround", "adaround+mse",
    "gptq", "gptq+act-order", "gptq+mse", "gptq+act-order+mse")
_ROUNDING_NAMES = {"nearest": "nearest", "bias_correction": "bias correction", "adaround": "AdaRound",
                   "gptq": "GPTQ"}
_OPTION_NAMES = {"act-order": "act-order", "mse": "MSE range"}


def rounding_choice(weight: Any) -> str:
    """The choice a resolved WeightSpec stands for (act-order shown only where GPTQ runs)."""
    choice = weight.rounding
    if weight.rounding == "gptq" and weight.gptq_act_order:
        choice += "+act-order"
    return choice + "+mse" if weight.range == "mse" else choice


def rounding_choice_label(choice: str) -> str:
    """``gptq+act-order+mse`` → ``GPTQ · act-order · MSE range``."""
    rounding, *options = choice.split("+")
    return " · ".join([_ROUNDING_NAMES[rounding], *(_OPTION_NAMES[option] for option in options)])


def rounding_fields(config: CompressionConfig, choice: str) -> dict[str, Any]:
    """The per-layer weight fields a choice sets: the rounding always; act-order (under GPTQ) and the range where
    they differ from the defaults, else None (the layer follows the defaults for them)."""
    if choice not in ROUNDING_CHOICES:
        raise ValueError(f"{choice!r} is not a rounding choice ({', '.join(ROUNDING_CHOICES)})")
    rounding, *options = choice.split("+")
    fields: dict[str, Any] = {"rounding": rounding}
    wanted = {"range": "mse" if "mse" in options else "minmax"}
    if rounding == "gptq":
        wanted["gptq_act_order"] = "act-order" in options
    for name, value in wanted.items():
        fields[name] = None if getattr(config.weight, name) == value else value
    return fields


@dataclass(frozen=True)
class Edit:
    """The configuration a gesture leads to; ``text`` names the undo step, ``merge_key`` lets slider moves merge."""

    config: CompressionConfig
    text: str
    merge_key: str | None = None


def _threshold_prune(threshold: float) -> dict[str, Any]:
    if threshold > 0:
        return {"method": "magnitude", "threshold": threshold, "relative": True, "sparsity": None}
    return {"method": "none", "threshold": 0.0, "relative": False, "sparsity": None}


def edit_default(config: CompressionConfig, field: str, value: Any, merge_key: str = "") -> Edit | None:
    """A change of one global default (a control of the Defaults panel); None for a field that is no default."""
    if field == "weight_precision":
        new, text = config.with_defaults(weight={"precision": value}), f"Weights → {value}"
    elif field == "activation_precision":
        new, text = config.with_defaults(activation={"precision": value}), f"Activations → {value}"
    elif field == "granularity":
        new, text = config.with_defaults(weight={"granularity": value}), f"Granularity → {value}"
    elif field == "weight_symmetric":
        new, text = config.with_defaults(weight={"symmetric": bool(value)}), "Weight symmetry"
    elif field == "activation_symmetric":
        new, text = config.with_defaults(activation={"symmetric": bool(value)}), "Activation symmetry"
    elif field == "calibration":
        new, text = config.with_defaults(activation={"calibration": value}), f"Calibration → {value}"
    elif field == "equalization":
        new, text = config.with_equalization(value), f"Equalization → {value}"
    elif field == "smoothquant":
        new = config.with_defaults(activation={"smoothquant": value})
        text = "SmoothQuant → off" if value is None else f"SmoothQuant α → {value:g}"
    elif field == "rounding":
        new, text = config.with_defaults(weight={"rounding": value}), f"Rounding → {value}"
    elif field == "gptq_act_order":
        new, text = config.with_defaults(weight={"gptq_act_order": bool(value)}), \
            f"GPTQ act-order → {'on' if value else 'off'}"
    elif field == "weight_range":
        new, text = config.with_defaults(weight={"range": value}), f"Weight range → {value}"
    elif field == "threshold":
        threshold = float(value)
        new, text = config.with_defaults(prune=_threshold_prune(threshold)), f"Pruning threshold → {threshold:g} σ"
    else:
        return None
    return Edit(new, text, merge_key or None)


def edit_layers(config: CompressionConfig, names: Sequence[str], field: str, value: Any) -> Edit:
    """Override one per-layer setting (``weight_precision``, ``activation_precision``, ``sparsity``,
    ``activation_sparsity`` or ``rounding``, whose value is one of :data:`ROUNDING_CHOICES`) on layers."""
    for name in names:
        if field == "weight_precision":
            config = config.with_layer(name, weight={"precision": value})
        elif field == "activation_precision":
            config = config.with_layer(name, activation={"precision": value})
        elif field == "rounding":  # a rounding choice: the rounding, GPTQ's act-order, the weight range
            config = config.with_layer(name, weight=rounding_fields(config, value))
        elif field == "sparsity":
            sparsity = float(value)
            prune = ({"method": "magnitude", "sparsity": sparsity} if sparsity > 0
                     else {"method": "none", "sparsity": None})
            config = config.with_layer(name, prune=prune)
        elif field == "activation_sparsity":  # whole output channels with the weakest calibration activations
            sparsity = float(value)
            prune = ({"method": "activation", "sparsity": sparsity} if sparsity > 0
                     else {"method": "none", "sparsity": None})
            config = config.with_layer(name, prune=prune)
    label = names[0] if len(names) == 1 else f"{len(names)} layers"
    pretty = (f"{float(value):.0%}" if field in ("sparsity", "activation_sparsity")
              else rounding_choice_label(value) if field == "rounding" else value)
    return Edit(config, f"{label}: {field.replace('_', ' ')} → {pretty}")


def clear_layers(config: CompressionConfig, names: Sequence[str]) -> Edit:
    """Make layers follow the defaults again."""
    for name in names:
        config = config.without_layer(name)
    return Edit(config, f"Clear overrides of {len(names)} layer(s)")


def reset_layers(config: CompressionConfig) -> Edit:
    """Drop every per-layer override, keeping the defaults."""
    return Edit(clear_layers(config, list(config.overrides())).config, "Reset layers to defaults")


def reset_all(config: CompressionConfig) -> Edit:
    """Back to the uncompressed fp32 configuration of the same model; the locks stay (they say what searches may
    change, not how the layers are compressed)."""
    return Edit(CompressionConfig(model=config.model, locked=config.locked), "Reset everything to fp32")


def lock_layers(config: CompressionConfig, layers: Sequence[Any], names: Sequence[str], locked: bool) -> Edit:
    """Lock layers ``names`` for searches, or unlock them. ``layers`` are the model's layers (``.name`` and
    ``.kind``): a ``re:`` or ``type:`` selector that locks a layer being unlocked is replaced by the names of the
    other layers it locks, so unlocking one layer never unlocks another."""
    names = list(names)
    label = names[0] if len(names) == 1 else f"{len(names)} layers"
    if locked:
        new = [name for name in names if name not in config.locked]
        return Edit(config.with_locked((*config.locked, *new)), f"Lock {label}")
    kinds = {layer.name: layer.kind for layer in layers}
    released = set(names)
    kept: list[str] = []
    for selector in config.locked:
        if selector in released:
            continue
        alone = CompressionConfig().with_locked([selector])
        if selector.startswith(("re:", "type:")) and any(alone.is_locked(n, kinds.get(n, "")) for n in released):
            kept.extend(name for name, kind in kinds.items()
                        if name not in released and alone.is_locked(name, kind))
        else:
            kept.append(selector)
    return Edit(config.with_locked(kept), f"Unlock {label}")


def locked_names(config: CompressionConfig, layers: Sequence[Any]) -> list[str]:
    """The names of the ``layers`` (``.name``, ``.kind``) that ``config`` locks, in the given order."""
    return [layer.name for layer in layers if config.is_locked(layer.name, layer.kind)]


def for_model(config: CompressionConfig, model: Any) -> CompressionConfig:
    """``config`` aimed at the loaded ``model``: a configuration from a file or the plot keeps the model edited."""
    if model is not None and config.model != model:
        return config.with_model(model)
    return config


def threshold_index(config: CompressionConfig) -> int:
    """The threshold slider's step a configuration's default pruning sits on (0 when it is not a σ threshold)."""
    prune = config.prune
    if prune.method == "magnitude" and prune.relative and prune.sparsity is None:
        return round(prune.threshold / THRESHOLD_STEP)
    return 0


def selection_value(field: str, text: str) -> Any:
    """The value a "Set for selection" choice stands for (a sparsity fraction, or a precision name)."""
    return float(text.rstrip(" %")) / 100.0 if field in ("sparsity", "activation_sparsity") else text
