"""The compression configuration: defaults, per-layer overrides keyed by layer selectors, the locked layers, and
its JSON form (``qtradeoff.config/1``) with the JSON schema generated from the same field definitions.

A :class:`CompressionConfig` is pure, frozen, hashable data; every edit returns a new one. Parsing validates the
whole document before building anything, so an invalid file is rejected whole with :class:`ConfigError` naming
the JSON path of the first problem.

Layer selectors (keys of ``"layers"`` and entries of ``"locked"``):

- ``"features.3.conv"``: the layer of that exact qualified name;
- ``"re:features\\.[0-3]\\..*"``: every layer whose qualified name the Python regular expression *fully* matches;
- ``"type:Conv2d"``: every layer whose module class is called ``Conv2d`` (the inventory's ``LayerInfo.kind``).

Precedence, from weakest to strongest: defaults < ``type:`` selectors < ``re:`` selectors < exact name. Settings
merge field by field: a stronger selector replaces only the fields it sets, so a regex that sets only
``weight.precision`` keeps the ``prune`` a type selector gave. When several ``re:`` selectors match one layer,
they apply in sorted order of their keys, so the one that sorts later wins each field they both set. One rule
overrides the field-by-field merge for pruning: the strongest selector that names a prune ``method`` starts a
new recipe, so the fields it leaves out take :class:`PruneSpec`'s defaults, not those of the defaults or of
weaker selectors (a global target sparsity must not leak into one layer's N:M pruning); stronger selectors
that set no method then tune that recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from qtradeoff.core import precision as _precision
from qtradeoff.core.errors import InputError
from qtradeoff.core.precision import PRECISIONS, ConfigError, bits_of, is_integer

__all__ = [
    "SCHEMA", "PRECISIONS", "GRANULARITIES", "CALIBRATIONS", "PRUNE_METHODS", "NORMS", "ConfigError", "bits_of",
    "is_integer", "ROUNDINGS", "WeightSpec", "ActivationSpec", "PruneSpec", "Partial", "LayerOverride", "LayerSettings",
    "ModelRef", "CompressionConfig", "to_json", "read_json", "from_json", "from_json_document", "json_schema",
    "MAX_CONFIG_BYTES", "ConfigFileError", "read_file_bytes", "read_json_file", "from_json_file",
    "from_json_document_file", "ACTIVATION_CRITERIA", "EQUALIZATIONS", "WEIGHT_RANGES",
]

SCHEMA = "qtradeoff.config/1"
GRANULARITIES = ("per_channel", "per_tensor")
CALIBRATIONS = ("minmax", "percentile", "mse")
PRUNE_METHODS = ("none", "magnitude", "nm", "structured", "activation")
NORMS = ("l1", "l2")
ACTIVATION_CRITERIA = ("mean_abs", "apoz")  # activation-based pruning (compression/algorithms/activation_prune.py)
EQUALIZATIONS = ("none", "cle")  # cross-layer equalization (compression/algorithms/equalization.py)
ROUNDINGS = ("nearest", "bias_correction", "adaround", "gptq")
WEIGHT_RANGES = ("minmax", "mse")  # how an integer weight grid's clipping range is chosen (quantize.weight_qparams)
REGEX_PREFIX = "re:"
TYPE_PREFIX = "type:"


# ---------------------------------------------------------------------------------------------------------------
# Fields: each knows how to check a value (with the JSON path of an error) and how to describe itself in JSON
# Schema, so the parser and the shipped schema cannot drift apart.


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class _PrecisionField:
    weights: bool = True  # lookup-table precisions are for weights only

    def __call__(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a precision string ({_precision.HINT}), got {_type_name(value)}")
        found = _precision.get(value, path)
        if found.is_lut and not self.weights:
            raise ConfigError(path, f"{value!r} is a lookup-table precision, for weights only; activations take "
                                    "an integer or float precision")
        return found.name

    def schema(self) -> dict:
        return {"$ref": "#/$defs/precision" if self.weights else "#/$defs/activation_precision"}


@dataclass(frozen=True)
class _Choice:
    choices: tuple[str, ...]

    def __call__(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in self.choices:
            shown = repr(value) if isinstance(value, str) else _type_name(value)
            raise ConfigError(path, f"{shown} is not one of {', '.join(self.choices)}")
        return value

    def schema(self) -> dict:
        return {"enum": list(self.choices)}


class _Bool:
    def __call__(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_type_name(value)}")
        return value

    def schema(self) -> dict:
        return {"type": "boolean"}


@dataclass(frozen=True)
class _Number:
    """A finite number (or integer) in an interval; ``None`` allowed when ``nullable``."""

    what: str
    minimum: float
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    integer: bool = False
    nullable: bool = False

    def __call__(self, value: Any, path: str):
        if value is None and self.nullable:
            return None
        if self.integer:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(path, f"expected an integer, got {_type_name(value)}")
            if not self.minimum <= value <= self.maximum:
                raise ConfigError(path, f"{self.what} {value} is outside {self.minimum:g}..{self.maximum:g}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise ConfigError(path, f"expected a finite number, got {value}")
        value = float(value)
        if self.maximum is None:
            if value < self.minimum:
                raise ConfigError(path, f"{self.what} {value:g} is negative; use a magnitude >= {self.minimum:g}")
            return value
        above = value > self.minimum if self.open_min else value >= self.minimum
        below = value < self.maximum if self.open_max else value <= self.maximum
        if not (above and below):
            interval = (f"{'(' if self.open_min else '['}{self.minimum:g}, {self.maximum:g}"
                        f"{')' if self.open_max else ']'}")
            raise ConfigError(path, f"{self.what} {value:g} is outside {interval}")
        return value

    def schema(self) -> dict:
        out: dict[str, Any] = {"type": "integer" if self.integer else "number",
                               "exclusiveMinimum" if self.open_min else "minimum": self.minimum}
        if self.maximum is not None:
            out["exclusiveMaximum" if self.open_max else "maximum"] = self.maximum
        return {"oneOf": [{"type": "null"}, out]} if self.nullable else out


# field name -> field, for each spec: the single definition of what a valid field is (parser, edits, schema).
_WEIGHT_FIELDS = {
    "precision": _PrecisionField(),
    "granularity": _Choice(GRANULARITIES),
    "symmetric": _Bool(),
    # how integer weights are rounded onto their grid (qtradeoff.core.compression.rounding), and its parameters
    "rounding": _Choice(ROUNDINGS),
    "adaround_iterations": _Number("adaround_iterations", 1, 100000, integer=True),
    "gptq_damping": _Number("gptq_damping", 0, 1, open_min=True),
    "gptq_block": _Number("gptq_block", 1, 4096, integer=True),
    "gptq_act_order": _Bool(),
    # the integer grid's clipping range: min-max, or the shrunk range of least squared rounding error
    "range": _Choice(WEIGHT_RANGES),
}
# Weight fields written only when they differ from their default, so that configurations (and their key())
# from before rounding existed stay the same.
_WEIGHT_OPTIONAL = ("rounding", "adaround_iterations", "gptq_damping", "gptq_block", "gptq_act_order", "range")
_ACTIVATION_FIELDS = {
    "precision": _PrecisionField(weights=False),
    "calibration": _Choice(CALIBRATIONS),
    "percentile": _Number("percentile", 0, 100, open_min=True),
    "symmetric": _Bool(),
    "smoothquant": _Number("smoothquant alpha", 0, 1, nullable=True),
}
_PRUNE_FIELDS = {
    "method": _Choice(PRUNE_METHODS),
    "threshold": _Number("threshold", 0),
    "relative": _Bool(),
    "sparsity": _Number("sparsity", 0, 1, open_max=True, nullable=True),
    "n": _Number("n", 1, 64, integer=True),
    "m": _Number("m", 1, 64, integer=True),
    "norm": _Choice(NORMS),
    "criterion": _Choice(ACTIVATION_CRITERIA),
}
_PARTS = {"weight": _WEIGHT_FIELDS, "activation": _ACTIVATION_FIELDS, "prune": _PRUNE_FIELDS}
_OVERRIDE_KEYS = ("weight", "activation", "prune", "skip")
_TOP_KEYS = ("schema", "model", "equalization", "defaults", "layers", "locked", "metrics", "environment")
# Fields added after keys were first published: left out of key() at their default, so older keys stay valid.
_KEY_OMITTED_DEFAULTS = {"activation": {"smoothquant": None}, "prune": {"criterion": "mean_abs"}}


def _check_fields(values: Mapping[str, Any], checkers: Mapping[str, Any], path: str) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        if not isinstance(name, str) or name not in checkers:
            raise ConfigError(f"{path}.{name}" if isinstance(name, str) else path,
                              f"unknown key {name!r} (expected {', '.join(checkers)})")
        out[name] = checkers[name](value, f"{path}.{name}")
    return out


@dataclass(frozen=True)
class WeightSpec:
    """How a layer's weights are stored: precision, and for integers the grid's granularity and symmetry and how
    values are rounded onto it: ``nearest``, or a calibration-data algorithm (``bias_correction``, ``adaround``
    with ``adaround_iterations``, ``gptq`` with ``gptq_damping``, ``gptq_block`` and ``gptq_act_order``: columns
    in order of decreasing input energy; see :mod:`qtradeoff.core.compression.rounding`). ``range`` chooses the
    integer grid itself, before any rounding: ``minmax`` covers every weight, ``mse`` shrinks the min-max range
    (per channel or per tensor) to the clipping of least squared rounding error (see
    :func:`qtradeoff.core.compression.quantize.weight_qparams`)."""

    precision: str = "fp32"
    granularity: str = "per_channel"
    symmetric: bool = True
    rounding: str = "nearest"
    adaround_iterations: int = 500
    gptq_damping: float = 0.01
    gptq_block: int = 128
    gptq_act_order: bool = False
    range: str = "minmax"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, except rounding fields left at their defaults."""
        out = dataclasses.asdict(self)
        for name in _WEIGHT_OPTIONAL:
            if out[name] == getattr(WeightSpec, name):
                del out[name]
        return out

    def __post_init__(self):
        _check_fields(dataclasses.asdict(self), _WEIGHT_FIELDS, "weight")


@dataclass(frozen=True)
class ActivationSpec:
    """How a layer's input activations are quantized and how their range is calibrated.

    ``smoothquant``: SmoothQuant's migration strength alpha in [0, 1] (None: off), applied to the float layer
    before quantization (see ``compression/algorithms/smoothquant.py``).
    """

    precision: str = "fp32"
    calibration: str = "minmax"
    percentile: float = 99.99
    symmetric: bool = False
    smoothquant: float | None = None

    def __post_init__(self):
        _check_fields(dataclasses.asdict(self), _ACTIVATION_FIELDS, "activation")


@dataclass(frozen=True)
class PruneSpec:
    """How a layer's weights are pruned.

    ``magnitude``: zero weights with ``|w| < threshold`` (``threshold`` in units of the layer's weight std when
    ``relative``), or exactly ``round(sparsity * numel)`` of them when ``sparsity`` is set (takes precedence);
    ``nm``: keep the ``n`` largest of every ``m`` consecutive weights along the input dimension;
    ``structured``: zero ``round(sparsity * out_channels)`` whole output channels with the smallest ``norm``;
    ``activation``: zero ``round(sparsity * out_channels)`` whole output channels whose outputs on the calibration
    data score lowest by ``criterion`` (``mean_abs``: mean |a|; ``apoz``: most often non-positive).
    """

    method: str = "none"
    threshold: float = 0.0
    relative: bool = False
    sparsity: float | None = None
    n: int = 2
    m: int = 4
    norm: str = "l1"
    criterion: str = "mean_abs"

    def __post_init__(self):
        _check_fields(dataclasses.asdict(self), _PRUNE_FIELDS, "prune")
        _check_prune_consistency(self, "prune")


# The cross-field rules of a prune recipe. json_schema() encodes the same two rules (_prune_rules_schema); the
# tests feed documents breaking each to both.
def _check_prune_consistency(spec: PruneSpec, path: str) -> None:
    if spec.method == "nm" and spec.n > spec.m:
        raise ConfigError(f"{path}.n", f"n={spec.n} is larger than m={spec.m}; N:M keeps n of every m weights")
    if spec.method in ("structured", "activation") and spec.sparsity is None:
        raise ConfigError(f"{path}.sparsity", f"{spec.method} pruning needs a sparsity (fraction of output channels)")


class Partial(Mapping):
    """An immutable, hashable, key-sorted mapping: the partial settings a layer overrides."""

    __slots__ = ("_items",)

    def __init__(self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()):
        object.__setattr__(self, "_items", tuple(sorted(dict(values).items())))

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Partial):
            return self._items == other._items
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __setattr__(self, name, value):
        raise AttributeError("Partial is immutable")

    def __reduce__(self):  # pickling/deepcopy must not go through the refused __setattr__
        return (Partial, (self._items,))

    def __repr__(self) -> str:
        return f"Partial({dict(self._items)!r})"


@dataclass(frozen=True)
class LayerOverride:
    """What one selector changes relative to the defaults: partial weight/activation/prune settings and ``skip``."""

    weight: Partial = field(default_factory=Partial)
    activation: Partial = field(default_factory=Partial)
    prune: Partial = field(default_factory=Partial)
    skip: bool | None = None

    def is_empty(self) -> bool:
        return not (self.weight or self.activation or self.prune) and self.skip is None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in ("weight", "activation", "prune"):
            if getattr(self, part):
                out[part] = dict(getattr(self, part))
        if self.skip is not None:
            out["skip"] = self.skip
        return out


@dataclass(frozen=True)
class LayerSettings:
    """Fully resolved settings of one layer; ``skip`` means left at fp32 and unpruned."""

    weight: WeightSpec
    activation: ActivationSpec
    prune: PruneSpec
    skip: bool = False


@dataclass(frozen=True)
class ModelRef:
    """Which model file a configuration was made for."""

    file: str
    sha256: str = ""
    format: str = ""


# ---------------------------------------------------------------------------------------------------------------
# Selectors


@dataclass(frozen=True)
class _Selector:
    key: str
    kind: str  # "name" | "re" | "type"
    pattern: re.Pattern | None = None

    @property
    def target(self) -> str:
        """The layer name, the regular expression or the module class name."""
        if self.kind == "re":
            return self.key[len(REGEX_PREFIX):]
        return self.key[len(TYPE_PREFIX):] if self.kind == "type" else self.key

    def matches(self, name: str, kind: str) -> bool:
        if self.kind == "re":
            return self.pattern.fullmatch(name) is not None
        return self.target == (kind if self.kind == "type" else name)


def _selector(key: Any, path: str) -> _Selector:
    """Parse a selector, so that a bad one is an error at ``path`` even when no model is known."""
    if not isinstance(key, str) or not key:
        raise ConfigError(path, f"a layer selector must be a non-empty string (a layer name, \"re:<regex>\" or "
                                f"\"type:<ModuleClass>\"), got {key!r}")
    if key.startswith(REGEX_PREFIX):
        expression = key[len(REGEX_PREFIX):]
        if not expression:
            raise ConfigError(path, "\"re:\" needs a regular expression after it, e.g. \"re:features\\\\..*\"")
        try:
            return _Selector(key, "re", re.compile(expression))
        except re.error as error:
            raise ConfigError(path, f"{expression!r} is not a valid regular expression ({error})") from None
    if key.startswith(TYPE_PREFIX):
        class_name = key[len(TYPE_PREFIX):]
        if not class_name.isidentifier():
            raise ConfigError(path, f"{class_name!r} is not a module class name; write e.g. \"type:Linear\"")
        return _Selector(key, "type")
    return _Selector(key, "name")


def _layer_pairs(layers: Iterable[Any]) -> list[tuple[str, str]]:
    """``(name, kind)`` of each layer, given inventory ``LayerInfo``-likes (``.name``, ``.kind``) or pairs."""
    pairs = []
    for layer in layers:
        if hasattr(layer, "name") and hasattr(layer, "kind"):
            pairs.append((layer.name, layer.kind))
        else:
            name, kind = layer
            pairs.append((name, kind))
    return pairs


def _needs_kind(name: str, selectors: Iterable[_Selector]) -> None:
    if any(selector.kind == "type" for selector in selectors):
        raise ValueError(f"layer {name!r}: this configuration has type: selectors, so pass the layer's module "
                         f"class name (resolve(name, kind) or resolve_all(inventory))")


def _merge(spec, values: Mapping[str, Any]):
    return dataclasses.replace(spec, **dict(values)) if values else spec


def _layer_path(name: str) -> str:
    return f"$.layers[{json.dumps(name)}]"


@dataclass(frozen=True)
class CompressionConfig:
    """Defaults for every layer, overrides keyed by layer selector (sorted), and the locked layers' selectors.

    The all-default config is fp32. See the module docstring for selectors and their precedence.
    """

    weight: WeightSpec = WeightSpec()
    activation: ActivationSpec = ActivationSpec()
    prune: PruneSpec = PruneSpec()
    layers: tuple[tuple[str, LayerOverride], ...] = ()
    model: ModelRef | None = None
    locked: tuple[str, ...] = ()  # selectors of the layers a search must leave as they are; sorted, unique
    # cross-layer equalization of the float model before quantization: "none" or "cle" (whole model)
    equalization: str = "none"
    # memo of derived data (resolved layers, key); excluded from equality, hashing and repr
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def _overrides(self) -> dict[str, LayerOverride]:
        found = self._cache.get("overrides")
        if found is None:
            found = self._cache["overrides"] = dict(self.layers)
        return found

    def _selectors(self) -> tuple[tuple[tuple[_Selector, LayerOverride], ...], dict[str, LayerOverride]]:
        """(type then regex selectors with their overrides, weakest first; exact-name overrides by name).

        Exact names are looked up, not scanned: a search's configurations override many layers one by one.
        """
        found = self._cache.get("selectors")
        if found is None:
            parsed = [(_selector(key, _layer_path(key)), override) for key, override in self.layers]
            patterns = sorted(((s, o) for s, o in parsed if s.kind != "name"),
                              key=lambda item: (item[0].kind != "type", item[0].key))
            found = self._cache["selectors"] = (tuple(patterns), {s.key: o for s, o in parsed if s.kind == "name"})
        return found

    def _locked_selectors(self) -> tuple[_Selector, ...]:
        found = self._cache.get("locked")
        if found is None:
            found = self._cache["locked"] = tuple(_selector(key, f"$.locked[{i}]")
                                                  for i, key in enumerate(self.locked))
        return found

    # -- reading ---------------------------------------------------------------------------------------------
    def overrides(self) -> dict[str, LayerOverride]:
        """Overrides by selector (layer name, ``re:...`` or ``type:...``)."""
        return dict(self._overrides())

    def resolve(self, layer: str, kind: str = "") -> LayerSettings:
        """The settings that apply to ``layer`` (module class name ``kind``): every matching selector merged.

        ``kind`` may be left out only while the configuration has no ``type:`` selector (ValueError otherwise).
        """
        return _resolve(self, layer, kind)

    def resolve_all(self, layers: Iterable[Any]) -> dict[str, LayerSettings]:
        """Settings of every layer, by name; ``layers`` are inventory ``LayerInfo``-likes or ``(name, kind)``."""
        return {name: _resolve(self, name, kind) for name, kind in _layer_pairs(layers)}

    def is_locked(self, layer: str, kind: str = "") -> bool:
        """Whether a locked selector matches ``layer`` (``kind`` needed once a ``type:`` selector is locked)."""
        selectors = self._locked_selectors()
        if not kind:
            _needs_kind(layer, selectors)
        return any(selector.matches(layer, kind) for selector in selectors)

    # -- editing (each returns a new config) -----------------------------------------------------------------
    def with_defaults(self, *, weight=None, activation=None, prune=None) -> CompressionConfig:
        """New defaults; each argument is a spec, a partial dict merged into the current default, or None."""

        def merged(current, value, cls, part):
            if value is None:
                return current
            if isinstance(value, cls):
                return value
            if isinstance(value, Mapping):
                return _build(current, _check_fields(value, _PARTS[part], f"$.defaults.{part}"), "$.defaults")
            raise ConfigError(f"$.defaults.{part}", f"expected an object or {cls.__name__}, got {_type_name(value)}")

        new = dataclasses.replace(
            self,
            weight=merged(self.weight, weight, WeightSpec, "weight"),
            activation=merged(self.activation, activation, ActivationSpec, "activation"),
            prune=merged(self.prune, prune, PruneSpec, "prune"),
        )
        for name, _ in new.layers:
            _check_resolvable(new, name)
        return new

    def with_layer(self, name: str, *, weight: Mapping | None = None, activation: Mapping | None = None,
                   prune: Mapping | None = None, skip: bool | None = None) -> CompressionConfig:
        """Merge partial overrides into selector ``name``; a key whose value is None is removed from the override.

        ``name`` is a layer name, ``"re:<regex>"`` or ``"type:<ModuleClass>"``.
        ``with_layer("conv", weight={"precision": None})`` drops the layer's precision override (back to the
        default). ``skip=False`` is stored explicitly; to clear the whole override use :meth:`without_layer`.
        """
        path = _layer_path(name) if isinstance(name, str) else "$.layers"
        current = self._overrides().get(name, LayerOverride())
        parts = {}
        for part, values in (("weight", weight), ("activation", activation), ("prune", prune)):
            existing = dict(getattr(current, part))
            if values is not None:
                if not isinstance(values, Mapping):
                    raise ConfigError(f"{path}.{part}", f"expected an object, got {_type_name(values)}")
                removed = [key for key, value in values.items() if value is None]
                for key in removed:
                    existing.pop(key, None)
                kept = {key: value for key, value in values.items() if key not in removed}
                existing.update(_check_fields(kept, _PARTS[part], f"{path}.{part}"))
            parts[part] = Partial(existing)
        if skip is not None:
            _Bool()(skip, f"{path}.skip")
        override = LayerOverride(**parts, skip=current.skip if skip is None else skip)
        return self._with_override(name, override)

    def without_layer(self, name: str) -> CompressionConfig:
        """The config without any override for selector ``name``."""
        return dataclasses.replace(self, layers=tuple(item for item in self.layers if item[0] != name))

    def with_equalization(self, equalization: str) -> CompressionConfig:
        """The config with cross-layer equalization ``"none"`` or ``"cle"``."""
        return dataclasses.replace(self, equalization=_Choice(EQUALIZATIONS)(equalization, "$.equalization"))

    def with_model(self, model: ModelRef | None) -> CompressionConfig:
        return dataclasses.replace(self, model=model)

    def with_locked(self, selectors: Iterable[str]) -> CompressionConfig:
        """The config whose locked layers are ``selectors`` (names, ``re:`` or ``type:``; order and repeats
        do not matter)."""
        if isinstance(selectors, str):
            raise ConfigError("$.locked", f"expected a list of layer selectors, got the string {selectors!r}")
        keys = list(selectors)
        for index, key in enumerate(keys):
            _selector(key, f"$.locked[{index}]")
        return dataclasses.replace(self, locked=tuple(sorted(set(keys))))

    def _with_override(self, name: str, override: LayerOverride) -> CompressionConfig:
        _selector(name, _layer_path(name) if isinstance(name, str) else "$.layers")
        items = dict(self.layers)
        if override.is_empty():
            items.pop(name, None)
        else:
            items[name] = override
        new = dataclasses.replace(self, layers=tuple(sorted(items.items())))
        if name in items:
            _check_resolvable(new, name)
        return new

    # -- serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: schema, model (if known), full defaults, the partial overrides, locked (if any)."""
        out: dict[str, Any] = {"schema": SCHEMA}
        if self.model is not None:
            out["model"] = dataclasses.asdict(self.model)
        if self.equalization != "none":
            out["equalization"] = self.equalization
        out["defaults"] = {
            "weight": self.weight.to_dict(),
            "activation": dataclasses.asdict(self.activation),
            "prune": dataclasses.asdict(self.prune),
        }
        out["layers"] = {name: override.to_dict() for name, override in self.layers}
        if self.locked:
            out["locked"] = list(self.locked)
        return out

    @classmethod
    def from_dict(cls, d: Any, *, layer_names: Iterable[str] | None = None,
                  layers: Iterable[Any] | None = None) -> CompressionConfig:
        """Validate a whole document (as parsed JSON) and build the config; raises :class:`ConfigError`.

        Given the model's ``layers`` (``LayerInfo``-likes or ``(name, kind)`` pairs), every selector must match
        one of them; given only ``layer_names``, exact names and regexes are checked (types cannot be).
        """
        return _parse(d, _model_layers(layer_names, layers))

    def key(self) -> str:
        """Stable sha256 of the canonical JSON of defaults, layers and locked (not the model): a cache key.

        ``locked`` and ``equalization`` enter only when set, and later default fields only away from their
        default (:data:`_KEY_OMITTED_DEFAULTS`), so configurations written before they existed keep their key.
        """
        found = self._cache.get("key")
        if found is None:
            body = self.to_dict()
            for part, omitted in _KEY_OMITTED_DEFAULTS.items():
                spec = body["defaults"][part]
                for name, default in omitted.items():
                    if spec.get(name, default) == default:
                        spec.pop(name, None)
            keyed = {name: body[name] for name in ("defaults", "layers", "locked", "equalization") if name in body}
            canonical = json.dumps(keyed, sort_keys=True, separators=(",", ":"))
            found = self._cache["key"] = hashlib.sha256(canonical.encode()).hexdigest()
        return found


def _resolve(config: CompressionConfig, layer: str, kind: str) -> LayerSettings:
    cache = config._cache.setdefault("resolved", {})
    cached = cache.get((layer, kind))
    if cached is not None:
        return cached
    patterns, exact = config._selectors()
    if not kind:
        _needs_kind(layer, (selector for selector, _ in patterns))
    chain = [(selector.key, override) for selector, override in patterns if selector.matches(layer, kind)]
    if layer in exact:
        chain.append((layer, exact[layer]))
    settings = _settings(config, chain)
    cache[(layer, kind)] = settings
    return settings


def _settings(config: CompressionConfig, chain: list[tuple[str, LayerOverride]]) -> LayerSettings:
    """Merge the overrides of ``chain`` (weakest first) over the defaults."""
    if not chain:
        return LayerSettings(config.weight, config.activation, config.prune, False)
    weight: dict[str, Any] = {}
    activation: dict[str, Any] = {}
    prune: dict[str, Any] = {}
    prune_base, prune_key = config.prune, None
    skip = False
    for key, override in chain:
        weight.update(override.weight)
        activation.update(override.activation)
        if "method" in override.prune:
            # A selector that names its own pruning method gets that recipe alone: fields it leaves out take
            # PruneSpec's defaults, not the global recipe's nor a weaker selector's (a global target sparsity must
            # not leak into a layer's threshold or N:M pruning). Without a method, the override tunes the recipe.
            prune_base, prune = PruneSpec(), {}
        if override.prune:
            prune.update(override.prune)
            prune_key = key
        if override.skip is not None:
            skip = override.skip
    return LayerSettings(
        _merge(config.weight, weight),
        _merge(config.activation, activation),
        _build(prune_base, prune, _layer_path(prune_key)) if prune_key is not None else prune_base,
        skip,
    )


def _build(base, values: Mapping[str, Any], prefix: str):
    """``base`` with ``values`` replaced; a consistency error is re-reported under the JSON path ``prefix``."""
    try:
        return dataclasses.replace(base, **dict(values)) if values else base
    except ConfigError as error:
        raise ConfigError(f"{prefix}.{error.path}", error.problem) from None


def _check_resolvable(config: CompressionConfig, name: str) -> None:
    """The selector's override alone over the defaults must give a consistent spec; report it at its path."""
    _settings(config, [(name, config._overrides()[name])])


# ---------------------------------------------------------------------------------------------------------------
# JSON


def _expect_object(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected an object, got {_type_name(value)}")
    return value


def _model_layers(layer_names: Iterable[str] | None, layers: Iterable[Any] | None) -> list[tuple[str, str]] | None:
    """The model's ``(name, kind)`` pairs (kind ``None`` when only names are known), or None without a model."""
    if layer_names is not None and layers is not None:
        raise TypeError("pass either layer_names= or layers=, not both")
    if layers is not None:
        return _layer_pairs(layers)
    return None if layer_names is None else [(name, None) for name in layer_names]


def _sample(values: Iterable[str]) -> str:
    values = sorted(set(values))
    return (", ".join(values[:4]) + (", ..." if len(values) > 4 else "")) or "none"


def _check_selects(selector: _Selector, model: list[tuple[str, str | None]], path: str) -> None:
    """A selector must name or match at least one layer of the model (types only when kinds are known)."""
    names = [name for name, _ in model]
    if selector.kind == "name":
        if selector.key not in names:
            raise ConfigError(path, f"unknown layer {selector.key!r} (this model's layers: {_sample(names)})")
    elif selector.kind == "re":
        if not any(selector.matches(name, "") for name in names):
            raise ConfigError(path, f"regular expression {selector.target!r} matches no layer name in full "
                                    f"(this model's layers: {_sample(names)})")
    elif all(kind is not None for _, kind in model):
        kinds = [kind for _, kind in model]
        if selector.target not in kinds:
            raise ConfigError(path, f"no layer of this model is a {selector.target} "
                                    f"(its layer types: {_sample(kinds)})")


def _parse(doc: Any, model: list[tuple[str, str | None]] | None) -> CompressionConfig:
    doc = _expect_object(doc, "$")
    for key in doc:
        if key not in _TOP_KEYS:
            raise ConfigError(f"$.{key}", f"unknown key {key!r} (expected {', '.join(_TOP_KEYS)})")
    if "schema" not in doc:
        raise ConfigError("$.schema", f"missing; a qtradeoff configuration starts with \"schema\": \"{SCHEMA}\"")
    if doc["schema"] != SCHEMA:
        raise ConfigError("$.schema", f"{doc['schema']!r} is not a supported schema (expected {SCHEMA!r})")

    model_ref = None
    if doc.get("model") is not None:
        raw = _expect_object(doc["model"], "$.model")
        for key, value in raw.items():
            if key not in ("file", "sha256", "format"):
                raise ConfigError(f"$.model.{key}", f"unknown key {key!r} (expected file, sha256, format)")
            if not isinstance(value, str):
                raise ConfigError(f"$.model.{key}", f"expected a string, got {_type_name(value)}")
        if "file" not in raw:
            raise ConfigError("$.model.file", "missing; name the model file the configuration was made for")
        model_ref = ModelRef(raw["file"], raw.get("sha256", ""), raw.get("format", ""))

    equalization = _Choice(EQUALIZATIONS)(doc.get("equalization", "none"), "$.equalization")
    defaults = _expect_object(doc.get("defaults", {}), "$.defaults")
    specs = {}
    for part, cls in (("weight", WeightSpec), ("activation", ActivationSpec), ("prune", PruneSpec)):
        path = f"$.defaults.{part}"
        values = _check_fields(_expect_object(defaults.get(part, {}), path), _PARTS[part], path)
        specs[part] = _build(cls(), values, "$.defaults")
    for key in defaults:
        if key not in _PARTS:
            raise ConfigError(f"$.defaults.{key}", f"unknown key {key!r} (expected weight, activation, prune)")

    layers = []
    for name, raw in _expect_object(doc.get("layers", {}), "$.layers").items():
        path = _layer_path(name) if isinstance(name, str) else "$.layers"
        selector = _selector(name, path)
        if model is not None:
            _check_selects(selector, model, path)
        raw = _expect_object(raw, path)
        for key in raw:
            if key not in _OVERRIDE_KEYS:
                raise ConfigError(f"{path}.{key}", f"unknown key {key!r} (expected {', '.join(_OVERRIDE_KEYS)})")
        parts = {part: Partial(_check_fields(_expect_object(raw.get(part, {}), f"{path}.{part}"), checkers,
                                             f"{path}.{part}"))
                 for part, checkers in _PARTS.items()}
        skip = _Bool()(raw["skip"], f"{path}.skip") if "skip" in raw else None
        override = LayerOverride(**parts, skip=skip)
        if not override.is_empty():  # {"conv": {}} says nothing: the same config, the same key()
            layers.append((name, override))

    locked = doc.get("locked", [])
    if not isinstance(locked, list):
        raise ConfigError("$.locked", f"expected a list of layer selectors, got {_type_name(locked)}")
    for index, key in enumerate(locked):
        path = f"$.locked[{index}]"
        selector = _selector(key, path)
        if key in locked[:index]:
            raise ConfigError(path, f"{key!r} is listed twice; list each locked selector once")
        if model is not None:
            _check_selects(selector, model, path)

    for key in ("metrics", "environment"):
        if doc.get(key) is not None:
            _expect_object(doc[key], f"$.{key}")

    config = CompressionConfig(specs["weight"], specs["activation"], specs["prune"], tuple(sorted(layers)),
                               model_ref, tuple(sorted(locked)), equalization)
    for name, _ in config.layers:
        _check_resolvable(config, name)
    if model is not None and all(kind is not None for _, kind in model):
        config.resolve_all(model)  # selectors that combine into an inconsistent recipe fail here, not later
    elif model is not None and not any(selector.kind == "type" for selector, _ in config._selectors()[0]):
        for name, _ in model:
            config.resolve(name)
    return config


def to_json(config: CompressionConfig, *, metrics: Mapping | None = None, environment: Mapping | None = None,
            indent: int | None = 2) -> str:
    """The configuration file of DESIGN.md, with optional measured ``metrics`` and ``environment``."""
    doc = config.to_dict()
    if metrics is not None:
        doc["metrics"] = dict(metrics)
    if environment is not None:
        doc["environment"] = dict(environment)
    return json.dumps(doc, indent=indent, allow_nan=False)


def read_json(text: str | bytes | bytearray) -> Any:
    """Parse JSON text, turning every failure into :class:`ConfigError` at ``$`` (syntax errors with line/column).

    Bytes must be UTF-8 (a byte-order mark is tolerated); a key given twice in one object is an error at that
    object's JSON path, not "last one wins": the two values may disagree and the user would not know which applied.
    """
    if isinstance(text, bytes | bytearray):
        text = _decode_utf8(bytes(text))
    if not isinstance(text, str):
        raise ConfigError("$", f"expected JSON text, got {_type_name(text)}")
    text = text.removeprefix("\ufeff")
    duplicates = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
        nonlocal duplicates
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        duplicates = True
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return _ObjectWithDuplicate(obj, key)
            seen.add(key)
        return obj  # pragma: no cover - unreachable: fewer keys than pairs means one repeats

    try:
        doc = json.loads(text, object_pairs_hook=pairs_hook)
    except json.JSONDecodeError as error:
        problem = "the file ends early (truncated?)" if error.pos >= len(text.rstrip()) else error.msg
        raise ConfigError("$", f"invalid JSON at line {error.lineno}, column {error.colno}: {problem}") from None
    except RecursionError:
        raise ConfigError("$", "invalid JSON: nested too deeply") from None
    if duplicates:
        path, key = _first_duplicate(doc)
        raise ConfigError(path, f"the key {key!r} appears more than once in this object; keep only one")
    return doc


class _ObjectWithDuplicate(dict):
    """A parsed JSON object one of whose keys appeared twice (``repeated``), marked so the path can be found."""

    def __init__(self, values: dict, repeated: str):
        super().__init__(values)
        self.repeated = repeated


def _json_path_step(key: str) -> str:
    return f".{key}" if key.isidentifier() else f"[{json.dumps(key)}]"


def _first_duplicate(doc: Any) -> tuple[str, str]:
    """JSON path and key of the first object (in document order) with a repeated key. Iterative: the document
    may be as deep as the JSON parser allows, deeper than Python's recursion limit."""
    stack: list[tuple[str, Any]] = [("$", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, _ObjectWithDuplicate):
            return path, value.repeated
        if isinstance(value, dict):
            children = [(path + _json_path_step(key), item) for key, item in value.items()]
        elif isinstance(value, list):
            children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
        else:
            continue
        stack.extend(reversed(children))
    raise AssertionError("a duplicate was flagged but not found")  # pragma: no cover


def _decode_utf8(raw: bytes) -> str:
    """UTF-8 text of a configuration (BOM tolerated), or ConfigError at ``$`` saying what the bytes are instead."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        # JSON text never holds a NUL byte; UTF-16/32 text is full of them (and json.loads would guess it).
        raise ConfigError("$", "the file is UTF-16 or UTF-32 text; a configuration must be UTF-8 JSON "
                               "(save it again as UTF-8)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError("$", f"byte {error.start} (line {line}) is not valid UTF-8; a configuration must be "
                               "UTF-8 JSON (save it again as UTF-8)") from None


# -- configuration files ---------------------------------------------------------------------------------------
# A real configuration is a few KiB; a file this large is something else (or /dev/zero behind a link), and
# reading it whole would cost memory for nothing.
MAX_CONFIG_BYTES = 16 * 1024 * 1024


class ConfigFileError(ConfigError):
    """A configuration *file* that cannot be used: ``file`` names it; ``path``/``problem`` as for ConfigError,
    with ``path`` None when the problem is the file itself (missing, a pipe, too large), not its content."""

    def __init__(self, file: str, path: str | None, problem: str):
        InputError.__init__(self, f"{file}: {path}: {problem}" if path is not None else f"{file}: {problem}")
        self.file = file
        self.path = path
        self.problem = problem

    def __reduce__(self):
        return (type(self), (self.file, self.path, self.problem))


def _refuse(file: Any, problem: str) -> ConfigFileError:
    return ConfigFileError(str(file), None, problem)


def read_file_bytes(path: str | os.PathLike, *, limit: int = MAX_CONFIG_BYTES, what: str = "configuration") -> bytes:
    """The bytes of a small user file, read without ever blocking: a directory, pipe, socket or device is
    refused from its type before it is opened (a FIFO would wait for a writer, /dev/zero never ends), the file
    is opened non-blocking and checked again through the descriptor (it may have been swapped since), and at
    most ``limit`` bytes are read. Failures are :class:`ConfigFileError` naming the file.

    The model loader's checks (``qtradeoff.core.loading._files``) do the same for model files; this base module
    stands below the loading package and may not import it, and a configuration needs no format sniffing."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise _refuse(path, f"{error.strerror or type(error).__name__}; choose an existing {what} file") from None
    _check_kind(path, info, limit, what)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise _refuse(path, f"cannot be opened ({error.strerror}); check its permissions") from None
    try:
        _check_kind(path, os.fstat(descriptor), limit, what)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(descriptor, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as error:
        raise _refuse(path, f"cannot be read ({error.strerror}); check the disk and the file") from None
    finally:
        os.close(descriptor)
    if total > limit:  # it grew while we read
        raise _refuse(path, f"is larger than {limit // (1 << 20)} MiB, too large for a {what} file")
    return b"".join(chunks)


def _check_kind(path: Any, info: os.stat_result, limit: int, what: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(path, f"is a directory, not a {what} file; choose the file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, f"is not a regular file (a pipe, socket or device); choose a saved {what} file")
    if info.st_size > limit:
        raise _refuse(path, f"is {info.st_size} bytes, more than the {limit // (1 << 20)} MiB a {what} file "
                            f"may be; choose a {what} file")


def read_json_file(path: str | os.PathLike) -> Any:
    """The JSON document in a configuration file (see :func:`read_file_bytes` and :func:`read_json`); every
    failure is :class:`ConfigFileError` naming the file (and the JSON path, for a problem inside it)."""
    raw = read_file_bytes(path)
    try:
        return read_json(raw)
    except ConfigError as error:
        raise ConfigFileError(str(path), error.path, error.problem) from None


def _parse_file(path: str | os.PathLike, model: list[tuple[str, str | None]] | None) -> tuple[CompressionConfig, Any]:
    doc = read_json_file(path)
    try:
        return _parse(doc, model), doc
    except ConfigError as error:
        raise ConfigFileError(str(path), error.path, error.problem) from None


def from_json_file(path: str | os.PathLike, *, layer_names: Iterable[str] | None = None,
                   layers: Iterable[Any] | None = None) -> CompressionConfig:
    """Read, parse and validate a configuration file: the one way every caller (CLI, GUI) reads one.

    Raises :class:`ConfigFileError` (a ConfigError naming the file); nothing is half-applied.
    """
    return _parse_file(path, _model_layers(layer_names, layers))[0]


def from_json_document_file(path: str | os.PathLike, *, layer_names: Iterable[str] | None = None,
                            layers: Iterable[Any] | None = None) -> tuple[CompressionConfig, dict, dict]:
    """Like :func:`from_json_file` but also returns the file's ``metrics`` and ``environment`` (empty if absent)."""
    config, doc = _parse_file(path, _model_layers(layer_names, layers))
    return config, dict(doc.get("metrics") or {}), dict(doc.get("environment") or {})


def from_json(text: str, *, layer_names: Iterable[str] | None = None,
              layers: Iterable[Any] | None = None) -> CompressionConfig:
    """Parse and validate a configuration file; raises :class:`ConfigError` (nothing is half-applied).

    ``layers``/``layer_names`` validate the selectors against a model, as in :meth:`CompressionConfig.from_dict`.
    """
    return _parse(read_json(text), _model_layers(layer_names, layers))


def from_json_document(text: str, *, layer_names: Iterable[str] | None = None, layers: Iterable[Any] | None = None
                       ) -> tuple[CompressionConfig, dict, dict]:
    """Like :func:`from_json` but also returns the file's ``metrics`` and ``environment`` (empty if absent)."""
    doc = read_json(text)
    config = _parse(doc, _model_layers(layer_names, layers))
    return config, dict(doc.get("metrics") or {}), dict(doc.get("environment") or {})


# ---------------------------------------------------------------------------------------------------------------
# JSON Schema, generated from the field tables above (resources/config.schema.json is its output: `make schema`)


def _spec_schema(part: str) -> dict:
    return {"type": "object", "additionalProperties": False,
            "properties": {name: checker.schema() for name, checker in _PARTS[part].items()}}


def _prune_rules_schema() -> list[dict]:
    """The recipe rules of :func:`_check_prune_consistency` for a prune object naming its method, whose missing
    fields take PruneSpec's defaults (true of the defaults and of an override's own recipe alike)."""
    default = PruneSpec()
    m_field = _PRUNE_FIELDS["m"]

    def when(method: str, *conditions: dict) -> dict:
        clause = {"properties": {"method": {"const": method}}, "required": ["method"]}
        return {"allOf": [clause, *conditions]} if conditions else clause

    # JSON Schema cannot compare two fields, so n <= m is spelt out for each value m can take.
    nm_rules = [{"if": when("nm", {"properties": {"m": {"const": m}}, "required": ["m"]}),
                 "then": {"properties": {"n": {"maximum": m}}, **({"required": ["n"]} if m < default.n else {})}}
                for m in range(int(m_field.minimum), int(m_field.maximum) + 1)]
    nm_rules.append({"if": when("nm", {"not": {"required": ["m"]}}),
                     "then": {"properties": {"n": {"maximum": default.m}}}})
    channels = [{"if": when(method), "then": {"required": ["sparsity"], "properties": {"sparsity": {"type": "number"}}}}
                for method in ("structured", "activation")]
    return [*nm_rules, *channels]


def _selector_schema() -> dict:
    return {"anyOf": [{"pattern": f"^{REGEX_PREFIX}.+$"},
                      {"pattern": f"^{TYPE_PREFIX}[A-Za-z_][A-Za-z0-9_]*$"},
                      {"pattern": f"^(?!{REGEX_PREFIX}|{TYPE_PREFIX}).+$"}]}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a configuration file, from the same tables the parser checks with.

    What it cannot say and qtradeoff checks itself: that a regular expression compiles, that selectors match
    the model's layers, and the recipe rules for an override that sets no prune method (its n, m and sparsity
    combine with the defaults' and with weaker selectors').
    """
    nullable_object = {"oneOf": [{"type": "null"}, {"type": "object"}]}
    override = {"type": "object", "additionalProperties": False,
                "properties": {"weight": {"$ref": "#/$defs/weight"}, "activation": {"$ref": "#/$defs/activation"},
                               "prune": {"$ref": "#/$defs/prune"}, "skip": {"type": "boolean"}}}
    prune = _spec_schema("prune")
    prune["allOf"] = _prune_rules_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://qtradeoff.invalid/schema/config-1.json",
        "title": "qtradeoff compression configuration",
        "description": (f"Defaults plus overrides keyed by layer selector (a layer name, \"re:<regex>\" or "
                        f"\"type:<ModuleClass>\") for quantization and pruning ({SCHEMA}). Generated from "
                        f"qtradeoff.core.config (make schema). qtradeoff itself also checks that regular "
                        f"expressions compile, that selectors match the model's layers, and the N:M and "
                        f"structured rules for overrides that set no prune method."),
        "type": "object",
        "required": ["schema"],
        "additionalProperties": False,
        "properties": {
            "schema": {"const": SCHEMA},
            "model": {"oneOf": [{"type": "null"}, {
                "type": "object", "required": ["file"], "additionalProperties": False,
                "properties": {"file": {"type": "string"}, "sha256": {"type": "string"},
                               "format": {"type": "string"}}}]},
            "equalization": {"enum": list(EQUALIZATIONS)},
            "defaults": {"type": "object", "additionalProperties": False,
                         "properties": {part: {"$ref": f"#/$defs/{part}"} for part in _PARTS}},
            "layers": {"type": "object", "propertyNames": {"$ref": "#/$defs/selector"},
                       "additionalProperties": override},
            "locked": {"type": "array", "uniqueItems": True, "items": {"type": "string",
                                                                       "$ref": "#/$defs/selector"}},
            "metrics": nullable_object,
            "environment": nullable_object,
        },
        "$defs": {
            "precision": {"enum": list(PRECISIONS)},
            "activation_precision": {"enum": [name for name in PRECISIONS if not _precision.is_lut(name)]},
            "selector": _selector_schema(),
            "weight": _spec_schema("weight"),
            "activation": _spec_schema("activation"),
            "prune": prune,
        },
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m qtradeoff.core.config --schema``: print the generated JSON Schema."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qtradeoff.core.config", description=main.__doc__)
    parser.add_argument("--schema", action="store_true", help="print the configuration's JSON Schema")
    args = parser.parse_args(argv)
    if not args.schema:
        parser.print_usage(sys.stderr)
        return 2
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
