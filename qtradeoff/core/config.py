"""The compression configuration: defaults plus per-layer overrides, and its JSON form (``qtradeoff.config/1``).

A :class:`CompressionConfig` is pure, frozen, hashable data; every edit returns a new one. Parsing validates the
whole document before building anything, so an invalid file is rejected whole with :class:`ConfigError` naming
the JSON path of the first problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from qtradeoff.core.errors import InputError

SCHEMA = "qtradeoff.config/1"

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2") + tuple(
    f"int{bits}" for bits in range(2, 17)
)
_PRECISION_HINT = "int2..int16, fp32, fp16, bf16, fp8_e4m3, fp8_e5m2"
GRANULARITIES = ("per_channel", "per_tensor")
CALIBRATIONS = ("minmax", "percentile", "mse")
PRUNE_METHODS = ("none", "magnitude", "nm", "structured")
NORMS = ("l1", "l2")


class ConfigError(InputError, ValueError):
    """An invalid configuration; ``path`` is the JSON path of the problem (``$`` is the document root)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def bits_of(precision: str) -> int:
    """Storage bits per element: fp32 32, fp16/bf16 16, fp8_* 8, intN N."""
    if precision not in PRECISIONS:
        raise ConfigError("$", f"{precision!r} is not a precision ({_PRECISION_HINT})")
    if precision.startswith("int"):
        return int(precision[3:])
    return {"fp32": 32, "fp16": 16, "bf16": 16}.get(precision, 8)


def is_integer(precision: str) -> bool:
    """Whether ``precision`` is a uniform integer grid (int2..int16)."""
    return precision.startswith("int") and precision in PRECISIONS


# ---------------------------------------------------------------------------------------------------------------
# Field validation shared by the dataclasses, the edit methods and the JSON parser.


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _check_precision(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, f"expected a precision string ({_PRECISION_HINT}), got {_type_name(value)}")
    if value not in PRECISIONS:
        raise ConfigError(path, f"{value!r} is not a precision ({_PRECISION_HINT})")
    return value


def _check_choice(value: Any, choices: tuple[str, ...], path: str) -> str:
    if not isinstance(value, str) or value not in choices:
        shown = repr(value) if isinstance(value, str) else _type_name(value)
        raise ConfigError(path, f"{shown} is not one of {', '.join(choices)}")
    return value


def _check_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, f"expected true or false, got {_type_name(value)}")
    return value


def _check_number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(path, f"expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise ConfigError(path, f"expected a finite number, got {value}")
    return float(value)


def _check_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, got {_type_name(value)}")
    return value


def _check_percentile(value: Any, path: str) -> float:
    value = _check_number(value, path)
    if not 0.0 < value <= 100.0:
        raise ConfigError(path, f"percentile {value:g} is outside (0, 100]")
    return value


def _check_threshold(value: Any, path: str) -> float:
    value = _check_number(value, path)
    if value < 0.0:
        raise ConfigError(path, f"threshold {value:g} is negative; use a magnitude >= 0")
    return value


def _check_sparsity(value: Any, path: str) -> float | None:
    if value is None:
        return None
    value = _check_number(value, path)
    if not 0.0 <= value < 1.0:
        raise ConfigError(path, f"sparsity {value:g} is outside [0, 1)")
    return value


def _check_nm(value: Any, path: str) -> int:
    value = _check_int(value, path)
    if not 1 <= value <= 64:
        raise ConfigError(path, f"{value} is outside 1..64")
    return value


# field name -> checker(value, path) for each spec; the single place that defines what a valid field is.
_WEIGHT_FIELDS = {
    "precision": _check_precision,
    "granularity": lambda v, p: _check_choice(v, GRANULARITIES, p),
    "symmetric": _check_bool,
}
_ACTIVATION_FIELDS = {
    "precision": _check_precision,
    "calibration": lambda v, p: _check_choice(v, CALIBRATIONS, p),
    "percentile": _check_percentile,
    "symmetric": _check_bool,
}
_PRUNE_FIELDS = {
    "method": lambda v, p: _check_choice(v, PRUNE_METHODS, p),
    "threshold": _check_threshold,
    "relative": _check_bool,
    "sparsity": _check_sparsity,
    "n": _check_nm,
    "m": _check_nm,
    "norm": lambda v, p: _check_choice(v, NORMS, p),
}


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
    """How a layer's weights are stored: precision, and for integers the grid's granularity and symmetry."""

    precision: str = "fp32"
    granularity: str = "per_channel"
    symmetric: bool = True

    def __post_init__(self):
        _check_fields(dataclasses.asdict(self), _WEIGHT_FIELDS, "weight")


@dataclass(frozen=True)
class ActivationSpec:
    """How a layer's input activations are quantized and how their range is calibrated."""

    precision: str = "fp32"
    calibration: str = "minmax"
    percentile: float = 99.99
    symmetric: bool = False

    def __post_init__(self):
        _check_fields(dataclasses.asdict(self), _ACTIVATION_FIELDS, "activation")


@dataclass(frozen=True)
class PruneSpec:
    """How a layer's weights are pruned.

    ``magnitude``: zero weights with ``|w| < threshold`` (``threshold`` in units of the layer's weight std when
    ``relative``), or exactly ``round(sparsity * numel)`` of them when ``sparsity`` is set (takes precedence);
    ``nm``: keep the ``n`` largest of every ``m`` consecutive weights along the input dimension;
    ``structured``: zero ``round(sparsity * out_channels)`` whole output channels with the smallest ``norm``.
    """

    method: str = "none"
    threshold: float = 0.0
    relative: bool = False
    sparsity: float | None = None
    n: int = 2
    m: int = 4
    norm: str = "l1"

    def __post_init__(self):
        _check_fields(dataclasses.asdict(self), _PRUNE_FIELDS, "prune")
        _check_prune_consistency(self, "prune")


def _check_prune_consistency(spec: PruneSpec, path: str) -> None:
    if spec.method == "nm" and spec.n > spec.m:
        raise ConfigError(f"{path}.n", f"n={spec.n} is larger than m={spec.m}; N:M keeps n of every m weights")
    if spec.method == "structured" and spec.sparsity is None:
        raise ConfigError(f"{path}.sparsity", "structured pruning needs a sparsity (fraction of output channels)")


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
    """What one layer changes relative to the defaults: partial weight/activation/prune settings and ``skip``."""

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


def _merge(spec, values: Mapping[str, Any]):
    return dataclasses.replace(spec, **dict(values)) if values else spec


def _layer_path(name: str) -> str:
    return f"$.layers[{json.dumps(name)}]"


@dataclass(frozen=True)
class CompressionConfig:
    """Defaults for every layer plus per-layer overrides (sorted by layer name). The all-default config is fp32."""

    weight: WeightSpec = WeightSpec()
    activation: ActivationSpec = ActivationSpec()
    prune: PruneSpec = PruneSpec()
    layers: tuple[tuple[str, LayerOverride], ...] = ()
    model: ModelRef | None = None
    # memo of derived data (resolved layers, key); excluded from equality, hashing and repr
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def _overrides(self) -> dict[str, LayerOverride]:
        found = self._cache.get("overrides")
        if found is None:
            found = self._cache["overrides"] = dict(self.layers)
        return found

    # -- reading ---------------------------------------------------------------------------------------------
    def overrides(self) -> dict[str, LayerOverride]:
        """Per-layer overrides by layer name."""
        return dict(self._overrides())

    def resolve(self, layer: str) -> LayerSettings:
        """The settings that apply to ``layer``: the defaults with its override merged in."""
        return _resolve(self, layer)

    # -- editing (each returns a new config) -----------------------------------------------------------------
    def with_defaults(self, *, weight=None, activation=None, prune=None) -> CompressionConfig:
        """New defaults; each argument is a spec, a partial dict merged into the current default, or None."""

        def merged(current, value, cls, checkers, part):
            if value is None:
                return current
            if isinstance(value, cls):
                return value
            if isinstance(value, Mapping):
                return _build(current, _check_fields(value, checkers, f"$.defaults.{part}"), "$.defaults")
            raise ConfigError(f"$.defaults.{part}", f"expected an object or {cls.__name__}, got {_type_name(value)}")

        new = dataclasses.replace(
            self,
            weight=merged(self.weight, weight, WeightSpec, _WEIGHT_FIELDS, "weight"),
            activation=merged(self.activation, activation, ActivationSpec, _ACTIVATION_FIELDS, "activation"),
            prune=merged(self.prune, prune, PruneSpec, _PRUNE_FIELDS, "prune"),
        )
        for name, _ in new.layers:
            _check_resolvable(new, name)
        return new

    def with_layer(self, name: str, *, weight: Mapping | None = None, activation: Mapping | None = None,
                   prune: Mapping | None = None, skip: bool | None = None) -> CompressionConfig:
        """Merge partial overrides into layer ``name``; a key whose value is None is removed from the override.

        ``with_layer("conv", weight={"precision": None})`` drops the layer's precision override (back to the
        default). ``skip=False`` is stored explicitly; to clear the whole override use :meth:`without_layer`.
        """
        path = _layer_path(name)
        current = self._overrides().get(name, LayerOverride())
        parts = {}
        for part, values, checkers in (("weight", weight, _WEIGHT_FIELDS), ("activation", activation,
                                       _ACTIVATION_FIELDS), ("prune", prune, _PRUNE_FIELDS)):
            existing = dict(getattr(current, part))
            if values is not None:
                if not isinstance(values, Mapping):
                    raise ConfigError(f"{path}.{part}", f"expected an object, got {_type_name(values)}")
                removed = [key for key, value in values.items() if value is None]
                for key in removed:
                    existing.pop(key, None)
                kept = {key: value for key, value in values.items() if key not in removed}
                existing.update(_check_fields(kept, checkers, f"{path}.{part}"))
            parts[part] = Partial(existing)
        if skip is not None:
            _check_bool(skip, f"{path}.skip")
        override = LayerOverride(**parts, skip=current.skip if skip is None else skip)
        return self._with_override(name, override)

    def without_layer(self, name: str) -> CompressionConfig:
        """The config without any override for layer ``name``."""
        return dataclasses.replace(self, layers=tuple(item for item in self.layers if item[0] != name))

    def with_model(self, model: ModelRef | None) -> CompressionConfig:
        return dataclasses.replace(self, model=model)

    def _with_override(self, name: str, override: LayerOverride) -> CompressionConfig:
        if not isinstance(name, str) or not name:
            raise ConfigError("$.layers", f"layer name must be a non-empty string, got {name!r}")
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
        """Plain-JSON form: schema, model (if known), full defaults, and the partial per-layer overrides."""
        out: dict[str, Any] = {"schema": SCHEMA}
        if self.model is not None:
            out["model"] = dataclasses.asdict(self.model)
        out["defaults"] = {
            "weight": dataclasses.asdict(self.weight),
            "activation": dataclasses.asdict(self.activation),
            "prune": dataclasses.asdict(self.prune),
        }
        out["layers"] = {name: override.to_dict() for name, override in self.layers}
        return out

    @classmethod
    def from_dict(cls, d: Any, *, layer_names: Iterable[str] | None = None) -> CompressionConfig:
        """Validate a whole document (as parsed JSON) and build the config; raises :class:`ConfigError`."""
        return _parse(d, layer_names)

    def key(self) -> str:
        """Stable sha256 of the canonical JSON of defaults and layers (not the model): a cache/dedup key."""
        found = self._cache.get("key")
        if found is None:
            body = self.to_dict()
            canonical = json.dumps({"defaults": body["defaults"], "layers": body["layers"]}, sort_keys=True,
                                   separators=(",", ":"))
            found = self._cache["key"] = hashlib.sha256(canonical.encode()).hexdigest()
        return found


def _resolve(config: CompressionConfig, layer: str) -> LayerSettings:
    cache = config._cache.setdefault("resolved", {})
    cached = cache.get(layer)
    if cached is not None:
        return cached
    override = config._overrides().get(layer)
    if override is None:
        settings = LayerSettings(config.weight, config.activation, config.prune, False)
    else:
        settings = LayerSettings(
            _merge(config.weight, override.weight),
            _merge(config.activation, override.activation),
            # A layer that names its own pruning method gets that recipe alone: fields it leaves out take
            # PruneSpec's defaults, not the global recipe's (a global target sparsity must not leak into a
            # layer's threshold or N:M pruning). Without a method, the override tunes the global recipe.
            _merge(PruneSpec() if "method" in override.prune else config.prune, override.prune),
            bool(override.skip),
        )
    cache[layer] = settings
    return settings


def _build(base, values: Mapping[str, Any], prefix: str):
    """``base`` with ``values`` replaced; a consistency error is re-reported under the JSON path ``prefix``."""
    try:
        return dataclasses.replace(base, **dict(values)) if values else base
    except ConfigError as error:
        raise ConfigError(f"{prefix}.{error.path}", error.problem) from None


def _check_resolvable(config: CompressionConfig, name: str) -> None:
    """Resolving the layer must give a consistent spec; report a problem at the layer's path."""
    override = config._overrides()[name]
    _build(config.prune, override.prune, _layer_path(name))


# ---------------------------------------------------------------------------------------------------------------
# JSON


def _expect_object(value: Any, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"expected an object, got {_type_name(value)}")
    return value


def _parse(doc: Any, layer_names: Iterable[str] | None) -> CompressionConfig:
    doc = _expect_object(doc, "$")
    allowed = ("schema", "model", "defaults", "layers", "metrics", "environment")
    for key in doc:
        if key not in allowed:
            raise ConfigError(f"$.{key}", f"unknown key {key!r} (expected {', '.join(allowed)})")
    if "schema" not in doc:
        raise ConfigError("$.schema", f"missing; a qtradeoff configuration starts with \"schema\": \"{SCHEMA}\"")
    if doc["schema"] != SCHEMA:
        raise ConfigError("$.schema", f"{doc['schema']!r} is not a supported schema (expected {SCHEMA!r})")

    model = None
    if doc.get("model") is not None:
        raw = _expect_object(doc["model"], "$.model")
        for key, value in raw.items():
            if key not in ("file", "sha256", "format"):
                raise ConfigError(f"$.model.{key}", f"unknown key {key!r} (expected file, sha256, format)")
            if not isinstance(value, str):
                raise ConfigError(f"$.model.{key}", f"expected a string, got {_type_name(value)}")
        if "file" not in raw:
            raise ConfigError("$.model.file", "missing; name the model file the configuration was made for")
        model = ModelRef(raw["file"], raw.get("sha256", ""), raw.get("format", ""))

    defaults = _expect_object(doc.get("defaults", {}), "$.defaults")
    specs = {}
    for part, cls, checkers in (("weight", WeightSpec, _WEIGHT_FIELDS), ("activation", ActivationSpec,
                                _ACTIVATION_FIELDS), ("prune", PruneSpec, _PRUNE_FIELDS)):
        path = f"$.defaults.{part}"
        values = _check_fields(_expect_object(defaults.get(part, {}), path), checkers, path)
        specs[part] = _build(cls(), values, "$.defaults")
    for key in defaults:
        if key not in ("weight", "activation", "prune"):
            raise ConfigError(f"$.defaults.{key}", f"unknown key {key!r} (expected weight, activation, prune)")

    known = None if layer_names is None else set(layer_names)
    layers = []
    raw_layers = _expect_object(doc.get("layers", {}), "$.layers")
    for name, raw in raw_layers.items():
        path = _layer_path(name)
        if known is not None and name not in known:
            sample = ", ".join(sorted(known)[:4]) + (", ..." if len(known) > 4 else "")
            raise ConfigError(path, f"unknown layer {name!r} (this model's layers: {sample or 'none'})")
        raw = _expect_object(raw, path)
        parts = {}
        for key in raw:
            if key not in ("weight", "activation", "prune", "skip"):
                raise ConfigError(f"{path}.{key}", f"unknown key {key!r} (expected weight, activation, prune, skip)")
        for part, checkers in (("weight", _WEIGHT_FIELDS), ("activation", _ACTIVATION_FIELDS),
                               ("prune", _PRUNE_FIELDS)):
            values = _check_fields(_expect_object(raw.get(part, {}), f"{path}.{part}"), checkers, f"{path}.{part}")
            parts[part] = Partial(values)
        skip = _check_bool(raw["skip"], f"{path}.skip") if "skip" in raw else None
        layers.append((name, LayerOverride(**parts, skip=skip)))

    for key in ("metrics", "environment"):
        if doc.get(key) is not None:
            _expect_object(doc[key], f"$.{key}")

    config = CompressionConfig(specs["weight"], specs["activation"], specs["prune"], tuple(sorted(layers)), model)
    for name, _ in config.layers:
        _check_resolvable(config, name)
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


def read_json(text: str) -> Any:
    """Parse JSON text, turning syntax errors (e.g. a truncated file) into :class:`ConfigError` with line/column."""
    if not isinstance(text, str | bytes | bytearray):
        raise ConfigError("$", f"expected JSON text, got {_type_name(text)}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        problem = "the file ends early (truncated?)" if error.pos >= len(text.rstrip()) else error.msg
        raise ConfigError("$", f"invalid JSON at line {error.lineno}, column {error.colno}: {problem}") from None
    except (UnicodeDecodeError, RecursionError) as error:
        raise ConfigError("$", f"invalid JSON: {error}") from None


def from_json(text: str, *, layer_names: Iterable[str] | None = None) -> CompressionConfig:
    """Parse and validate a configuration file; raises :class:`ConfigError` (nothing is half-applied)."""
    return _parse(read_json(text), layer_names)


def from_json_document(text: str, *, layer_names: Iterable[str] | None = None
                       ) -> tuple[CompressionConfig, dict, dict]:
    """Like :func:`from_json` but also returns the file's ``metrics`` and ``environment`` (empty if absent)."""
    doc = read_json(text)
    config = _parse(doc, layer_names)
    return config, dict(doc.get("metrics") or {}), dict(doc.get("environment") or {})
