"""Loading user model files safely: format detection from content, trust decisions, isolation, and LoadedModel.

A file is first identified and test-loaded in a child process with a memory
limit and a timeout (see :mod:`qtradeoff.core.loading._load_child`); only when that
succeeds is it loaded here.  Nothing is unpickled with ``weights_only=False``
and no code named by a file is imported unless the caller passes ``trust=True``.

Safe means bounded; without trust:

- **The allow-list admits data, not calls.** A pickle may name the allow-listed classes (torch.nn, torchvision,
  our samples) only to rebuild objects from their state, as ``torch.save(model)`` writes them: ``NEWOBJ`` with no
  arguments, then ``BUILD``. Calling one with arguments from the file (``REDUCE``, ``INST``/``OBJ``, ``NEWOBJ``
  with arguments) needs trust, and so does ``functools.partial`` (a deferred call with arguments from the file,
  e.g. a ``forward`` replaced by ``partial(nn.Linear, 20000, 20000)``). Only torch's own tensor-rebuilding
  globals (those ``weights_only`` accepts by default) are called, and of those not the ones that allocate a size
  the file chose (``torch.FloatTensor(30000, 30000)``, ``bytearray(10**9)``). Checked on the opcodes
  (:func:`qtradeoff.core.loading._files.scan_pickle`) before anything is unpickled.
- **One memory budget for everything a file causes**, estimated before allocating: a pickle's storages and its
  tensors at full shape (stride-0 views counted as materialized), the parameters of the architecture a state
  dict or its metadata names (a meta-device build), and the model beside the file's tensors when both exist at
  once. The same checks run in the child and again here, so the in-process load is bounded like the probe.
- Archives whose members disagree with their directory (size, CRC) are damaged; protocol-4/5 pickles are named.

``LoadedModel.input_shape`` is known for the bundled samples (manifest, matched
by sha256) or when the caller passes ``input_shape``; otherwise it is ``None``
and the caller supplies it from the data (``EvalData.input_shape``) — a
guessed 224×224 would be wrong for most small models.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import re
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import nn

from qtradeoff.core import runtime
from qtradeoff.core.errors import InputError, NeedsTrustError, UsageError
from qtradeoff.core.loading import _files, architectures, checkpoints
from qtradeoff.core.loading._files import FileCheckError, human_bytes
from qtradeoff.core.paths import cache_dir

MANIFEST_FILE = _files.SAMPLE_MANIFEST
SAMPLE_DIR = MANIFEST_FILE.parent
FORMATS = ("safetensors", "state_dict", "pickle", "torchscript", "export", "onnx")
DEFAULT_TIMEOUT = 120.0

# Keys under which training checkpoints commonly nest the weights, most specific first.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "module",
                 "ema", "model_ema", "weights", "params")
# Prefixes wrappers add to every key: DataParallel, torch.compile, Lightning modules holding `self.model`.
_KEY_PREFIXES = ("module.", "_orig_mod.", "model.")


class ModelLoadError(InputError):
    """A model file could not be loaded; the message is one sentence naming the file and what to do."""


class NeedsTrust(NeedsTrustError, ModelLoadError):
    """Loading the file could run code from it; the user must pass ``trust=True`` (``--trust``) to proceed."""

    def __init__(self, message: str, *, globals: list[str] | None = None, format: str | None = None):  # noqa: A002
        super().__init__(message)
        self.globals = list(globals or [])
        self.format = format


@dataclass(eq=False)
class LoadedModel:
    """A model ready for evaluation. ``module`` is the base, in eval mode: nobody mutates it."""

    module: nn.Module
    path: Path
    name: str
    format: str  # one of FORMATS
    sha256: str
    trusted: bool
    file_bytes: int
    input_shape: tuple[int, ...] | None  # one sample, without the batch dimension
    num_classes: int | None
    architecture: str | None
    load_seconds: float
    preprocessing: dict | None = None  # bundled samples only: how to turn digits into inputs
    # One sentence each about something wrong that does not stop evaluation (NaN/Inf weights); the engine
    # copies them into every Result's provenance, so they reach the table, the JSON and the sweep file.
    warnings: list[str] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        return parameter_count(self.module)


def nonfinite_weights(module: nn.Module) -> dict[str, int]:
    """How many NaN or infinite values each floating-point parameter or buffer of ``module`` holds (only the
    tensors that have any). A float64 sum per tensor finds them without a mask; only a non-finite sum (a NaN,
    an Inf, or an overflow of huge values) pays for counting."""
    found: dict[str, int] = {}
    try:
        tensors = module.state_dict()
    except Exception:  # noqa: BLE001 - exotic modules without a state_dict: nothing to check
        return found
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.device.type == "meta":
            continue
        with torch.no_grad():
            if torch.isfinite(tensor.sum(dtype=torch.float64)):
                continue
            count = tensor.numel() - int(torch.isfinite(tensor).sum())
        if count:
            found[name] = count
    return found


def _weight_warnings(path: Path, module: nn.Module) -> list[str]:
    """Weights with NaN/Inf are loaded, not refused: the model is the user's to inspect and the values may sit
    in a layer a configuration skips; but every number measured with them carries this warning."""
    bad = nonfinite_weights(module)
    if not bad:
        return []
    names = sorted(bad, key=lambda name: -bad[name])
    shown = ", ".join(f"{name} ({bad[name]})" for name in names[:3]) + (", …" if len(names) > 3 else "")
    return [f"{path.name}: {sum(bad.values())} weight values are NaN or infinite, in {len(bad)} "
            f"tensor{'s' if len(bad) > 1 else ''}: {shown}; outputs computed with them are not meaningful"]


def parameter_count(module: nn.Module) -> int:
    """Number of parameters (TorchScript and exported modules included)."""
    try:
        return sum(p.numel() for p in module.parameters())
    except Exception:  # noqa: BLE001 - exotic modules without parameters()
        return 0


# ----------------------------------------------------------------------------------------------------------------
# Allow-list for pickled modules


@functools.cache
def safe_module_classes() -> tuple[type, ...]:
    """Classes a pickled nn.Module may reference without trust: torch.nn, torchvision models and ops, our samples."""
    import torch.fx

    from qtradeoff.core import tvcompat

    tvcompat.models()
    prefixes = ("torch.nn.modules.", "torchvision.models.", "torchvision.ops.")
    classes: set[type] = set(architectures.SAFE_CLASSES)
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(prefixes):
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module_name
                    # GraphModule subclasses compile Python source from their graph: that is running code.
                    and not issubclass(value, torch.fx.GraphModule)):
                classes.add(value)
    return tuple(sorted(classes, key=_global_name))


@functools.cache
def _default_global_names() -> frozenset[str]:
    """Names torch's weights_only unpickler accepts without any allow-listing (tensors, OrderedDict, …)."""
    try:
        from torch import _weights_only_unpickler

        return frozenset(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - torch internals moved; torch.load still guards
        return frozenset()


@functools.cache
def _allowed_global_names() -> frozenset[str]:
    """Names weights_only accepts by default, plus our allow-list (imports torchvision, ~1 s: only when needed)."""
    return _default_global_names() | {_global_name(cls) for cls in safe_module_classes()}


def _global_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _safe_globals_context():
    return torch.serialization.safe_globals(list(safe_module_classes()))


def _scan(path: Path, kind: str) -> _files.PickleScan:
    try:
        return _files.scan_file(path, kind)
    except FileCheckError as error:
        raise ModelLoadError(str(error)) from None


def _refused_globals(scan: _files.PickleScan) -> list[str]:
    """Why a safe load cannot read the pickle: globals outside the allow-list, and allow-listed classes (or any
    global beyond torch's own tensor rebuilding) *called* with arguments from the file (see the module docstring)."""
    beyond_default = set(scan.globals) - _default_global_names()
    refused = set(beyond_default - _allowed_global_names()) if beyond_default else set()
    refused |= {f"{name} called with arguments" for name, _opcode in scan.calls
                if name not in _default_global_names() and name not in refused}
    refused |= {f"{name} called with a size" for name in scan.allocating_calls()}
    return sorted(refused)


def unsafe_globals(path: Path, kind: str) -> list[str]:
    """Globals the pickle in ``path`` references outside the allow-list, and allow-listed ones it calls with
    arguments (never executes the pickle)."""
    return _refused_globals(_scan(path, kind))


def _needs_allow_list(scan: _files.PickleScan) -> bool:
    return bool(set(scan.globals) - _default_global_names())


# ----------------------------------------------------------------------------------------------------------------
# Architecture matching for state dicts


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The tensor mapping inside a checkpoint (nested under common wrapper keys, prefixes stripped), else None."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
            inner = next((obj[key] for key in _WRAPPER_KEYS if key in obj and isinstance(obj[key], Mapping)), None)
            if inner is None:
                return None
            obj = inner
    if not (isinstance(obj, Mapping) and _is_tensor_mapping(obj)):
        return None
    # torch.save keeps each module's state version in ``_metadata``; some modules (MNASNet, BatchNorm of old
    # checkpoints) read it while loading, so it travels with the tensors, prefixes stripped alike.
    metadata = getattr(obj, "_metadata", None)
    state = {str(k): v for k, v in obj.items()}
    for prefix in _KEY_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
            if metadata is not None:
                root = prefix.rstrip(".")  # the wrapper's own entry becomes the root module's
                metadata = OrderedDict(("" if k == root else k.removeprefix(prefix), v) for k, v in metadata.items())
    state = OrderedDict(state)
    if metadata is not None:
        state._metadata = metadata
    return state


def _is_tensor_mapping(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


class ArchitectureArgumentError(UsageError, ModelLoadError):
    """``--arch-kwargs`` the architecture does not accept (a usage error: exit 2, naming the argument)."""


def kwargs_key(arch_kwargs: Mapping[str, Any] | None) -> str:
    """Constructor keyword arguments as canonical JSON text (hashable, for the memoized meta builds)."""
    return json.dumps(dict(arch_kwargs), sort_keys=True) if arch_kwargs else ""


def _builder_kwargs(num_classes: int | None, extra: str) -> dict[str, Any]:
    kwargs = json.loads(extra) if extra else {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return kwargs


def _unknown_keyword(error: BaseException) -> str | None:
    found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    return found.group(1) if found else None


class _ParamsOnMeta(torch.overrides.TorchFunctionMode):
    """Create parameter-like tensors on the meta device so that building a model costs no memory or init time.

    Unlike ``with torch.device("meta")`` this leaves other tensors (e.g. RegNet's width arithmetic) on the CPU.
    """

    _FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.rand, torch.randn, torch.full})
    # In-place ops that weight initialisers use and that never change a shape: on a meta tensor they would only
    # run torch's Python reference implementations for nothing (~10 s over torchvision's ~80 classifiers).
    _INIT_OPS = frozenset(getattr(torch.Tensor, name) for name in (
        "normal_", "uniform_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "copy_",
        "exponential_", "bernoulli_", "random_", "log_normal_", "cauchy_", "geometric_")) | frozenset(
        getattr(nn.init, name) for name in (
            "normal_", "uniform_", "trunc_normal_", "constant_", "zeros_", "ones_", "eye_", "dirac_",
            "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_"))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self._INIT_OPS:
            target = args[0] if args else kwargs.get("tensor", kwargs.get("self"))
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        if func in self._FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


class _MetaBuild(NamedTuple):
    shapes: Mapping[str, tuple[int, ...]]  # parameter and buffer names -> shapes (step counters left out)
    size: int  # bytes the real build would allocate for them
    converts: bool  # some module rewrites old checkpoints while loading (torchvision's MNASNet does)
    compressible: frozenset[str] = frozenset()  # weights of its convolutions and linear layers


@functools.cache
def _meta_build(name: str, num_classes: int | None, extra: str = "") -> _MetaBuild | None:
    """What building a registry architecture would give, from a build on the meta device (nothing allocated;
    a pure function of the installed code, memoized for the process; read-only). ``extra``: :func:`kwargs_key`."""
    kwargs = _builder_kwargs(num_classes, extra)
    try:
        with warnings.catch_warnings(), _ParamsOnMeta():
            warnings.simplefilter("ignore")
            model = architectures.build(name, **kwargs)
    except Exception:  # noqa: BLE001 - a builder that cannot be built this way is simply not a candidate
        return None
    state = model.state_dict()
    size = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    converts = any(not type(sub)._load_from_state_dict.__module__.startswith("torch.nn.") for sub in model.modules()
                   if type(sub)._load_from_state_dict is not nn.Module._load_from_state_dict)
    return _MetaBuild(MappingProxyType(_comparable({k: tuple(v.shape) for k, v in state.items()})), size, converts,
                      checkpoints.compressible_weights(model))


def _signature(name: str, num_classes: int | None, extra: str = "") -> Mapping[str, tuple[int, ...]] | None:
    """Parameter names and shapes of a registry architecture, built on meta (see :func:`_meta_build`)."""
    built = _meta_build(name, num_classes, extra)
    return None if built is None else built.shapes


def match_architecture(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None] | None:
    """Registry architecture (and num_classes) whose parameter names and shapes equal the state dict's, or None.

    Candidates are first filtered by the set of key names (independent of num_classes), then shapes are
    compared; when only the classifier head differs, num_classes is read off its output dimension.
    """
    shapes = _comparable({k: tuple(v.shape) for k, v in state.items()})
    keys = set(shapes)
    for name in _candidate_architectures(_keys_digest(keys)):
        default = _signature(name, None)
        if default is None or set(default) != keys:
            continue
        if default == shapes:
            return name, _head_classes(shapes, default)
        _, sizes = _head_difference(shapes, default)
        if len(sizes) != 1:
            continue
        (num_classes,) = sizes
        if _signature(name, num_classes) == shapes:
            return name, num_classes
    return None


def _comparable(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Drop BatchNorm's step counters: checkpoints from older PyTorch versions lack them."""
    return {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}


def _keys_digest(keys) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


@functools.cache
def _torchvision_key_index() -> Mapping[str, str | None]:
    """Digest of each torchvision classifier's state-dict key names, cached on disk per torchvision version
    (and memoized for the process: a pure function of the installed torchvision; read-only).

    Building all ~80 classifiers on the meta device takes ~2.5 s; the loader runs in a fresh child process
    each time, so an in-process memo alone would pay that on every load.
    """
    from qtradeoff.core import tvcompat

    tv = tvcompat.torchvision()
    models = tvcompat.models()
    # Classification builders only: detection/segmentation builders download backbone weights by default,
    # and the quantized variants share key names with their float originals.
    names = [f"torchvision.{name}" for name in models.list_models(module=models)]
    cache_file = cache_dir() / f"architecture-keys-v2-torchvision-{tv.__version__}.json"
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(cache_file.read_text())
        if isinstance(cached, dict) and set(names) <= set(cached):
            return MappingProxyType({name: cached[name] for name in names})
    index = {}
    for name in names:
        signature = _signature(name, None)
        index[name] = None if signature is None else _keys_digest(signature)
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        scratch = cache_file.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(index, indent=0, sort_keys=True))
        os.replace(scratch, cache_file)  # atomic: concurrent loaders never read half a file
    return MappingProxyType(index)


def _candidate_architectures(keys_digest: str):
    """Bundled architectures first (no torchvision import needed), then torchvision classifiers with these keys."""
    yield from sorted(architectures._BUILTIN)
    yield from (name for name, digest in _torchvision_key_index().items() if digest == keys_digest)


def _head_classes(shapes: Mapping[str, tuple[int, ...]], default: Mapping[str, tuple[int, ...]]) -> int | None:
    """The class count the file's head has: the one leading size in which its tensors differ from the default
    build (a Linear head, or a 1×1 convolution head as in SqueezeNet); else the last Linear's rows."""
    _, sizes = _head_difference(shapes, default)
    if len(sizes) == 1:
        return next(iter(sizes))
    weights = [k for k in default if k.endswith(".weight") and len(default[k]) == 2]
    return shapes[weights[-1]][0] if weights and weights[-1] in shapes else None


def _head_difference(shapes: Mapping[str, tuple[int, ...]], default: Mapping[str, tuple[int, ...]]
                     ) -> tuple[list[str], set[int]]:
    """Keys whose shapes differ from the default build, and the leading sizes of those differing only there."""
    differing = [k for k in default if k in shapes and default[k] != shapes[k]]
    sizes = {shapes[k][0] for k in differing if shapes[k] and default[k] and shapes[k][1:] == default[k][1:]}
    return differing, sizes


# ----------------------------------------------------------------------------------------------------------------
# In-process loading (called in the child first, then here)


@dataclass
class _Loaded:
    module: nn.Module
    format: str
    architecture: str | None
    num_classes: int | None
    metadata: dict | None = None
    warnings: list[str] = field(default_factory=list)  # what did not fit (missing/unexpected keys), reported


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return text[:160]


def _build_from_state(path: Path, state: dict[str, torch.Tensor], fmt: str, architecture: str | None,
                      trust: bool, num_classes: int | None = None, budget: int | None = None,
                      arch_kwargs: Mapping[str, Any] | None = None) -> _Loaded:
    budget = budget or _files.memory_budget()
    arch_kwargs = dict(arch_kwargs or {})
    if architecture is not None and "num_classes" in arch_kwargs:  # the user's word over the file's head
        num_classes = arch_kwargs.pop("num_classes")
    extra = kwargs_key(arch_kwargs) if architecture is not None else ""
    _check_state_size(path, state, budget)
    if architecture is None:
        match = match_architecture(state) or _lenient_match(state)
        if match is None:
            raise ModelLoadError(
                f"{path.name} is a {fmt} that matches no known architecture; "
                "pass --architecture package.module:callable (needs --trust)."
            )
        architecture, num_classes = match
    if architectures.is_known(architecture):
        meta = _meta_build(architecture, num_classes if extra else None, extra)  # the user's keywords shape it
        default = None if meta is None else meta.shapes
        fitted = None
        # A module with its own _load_from_state_dict may rename old keys: names are judged after loading, below.
        if meta is not None and not meta.converts:
            fitted = _fit_or_refuse(path, state, default, meta.compressible, architecture)
            state = fitted.state
        if num_classes is None and default is not None:
            num_classes = _head_classes({k: tuple(v.shape) for k, v in state.items()}, default)
        notes = fitted.warnings(path.name) if fitted is not None else []
        _check_buildable(path, state, architecture, num_classes, budget,
                         allowed_missing=frozenset(fitted.missing) if fitted is not None else frozenset(), extra=extra)
        assigned = None if notes else _build_assigned(architecture, num_classes, state, extra)
        if assigned is not None:
            return _Loaded(assigned, fmt, architecture, num_classes)
        module = _build_registry(path, architecture, num_classes, extra)
    elif ":" in architecture:
        if not trust:
            raise NeedsTrust(
                f"{path} needs the architecture {architecture!r}, which imports code; pass --trust to allow it.",
                globals=[architecture], format=fmt,
            )
        if num_classes is None:
            num_classes = _last_linear_rows(state)
        module = _build_callable(path, architecture, num_classes, extra)
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        fitted = _fit_or_refuse(path, state, expected, checkpoints.compressible_weights(module), architecture)
        state, notes = fitted.state, fitted.warnings(path.name)
    else:
        raise ModelLoadError(
            f"{path}: unknown architecture {architecture!r}; use a torchvision builder name "
            "(e.g. torchvision.resnet18) or package.module:callable with --trust."
        )
    try:
        result = module.load_state_dict(state, strict=False)  # what is missing or unexpected was sorted out by the fit
        if not notes and (result.missing_keys or result.unexpected_keys):  # a converting module's own renaming
            _report_after_load(path, architecture, module, result, notes)
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:3])[:200] or _short(error)
        raise ModelLoadError(
            f"{path} does not fit the architecture {architecture} ({detail}); choose the matching architecture."
        ) from None
    return _Loaded(module, fmt, architecture, num_classes, warnings=notes)


def _report_after_load(path: Path, architecture: str, module: nn.Module, result: Any, notes: list[str]) -> None:
    """Missing and unexpected keys as load_state_dict found them (modules that rename keys while loading); a
    missing compressible weight is refused like a fit's."""
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    lacking = [k for k in missing if k in checkpoints.compressible_weights(module)]
    if lacking:
        raise ModelLoadError(checkpoints.refusal(str(path), architecture, lacking))
    notes.extend(checkpoints.Fit(OrderedDict(), "", 0, missing, list(result.unexpected_keys)).warnings(path.name))


def _fit_or_refuse(path: Path, state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                   compressible: frozenset[str], architecture: str) -> checkpoints.Fit:
    """The file's tensors under the architecture's names (prefix stripped); refused in one sentence when a
    convolution's or linear layer's weight is missing, or when nothing fits at all."""
    fitted = checkpoints.fit(state, expected)
    if fitted.matched == 0:
        raise ModelLoadError(
            f"{path} does not fit the architecture {architecture} (none of its tensor names are the model's, e.g. "
            f"{next(iter(state), 'none')}); choose the matching architecture."
        )
    lacking = fitted.missing_compressible(compressible)
    if lacking:
        raise ModelLoadError(checkpoints.refusal(str(path), architecture, lacking))
    return fitted


def _lenient_match(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None] | None:
    """An architecture for a checkpoint that holds more than the network: the bundled architectures when every
    one of their tensors is in the file (under some prefix) beside extra ones, then any registry architecture
    whose tensors are exactly those under one shared prefix (``encoder.``, ``net.``, …)."""
    for name in sorted(architectures._BUILTIN):
        default = _signature(name, None)
        if default is None:
            continue
        fitted = checkpoints.fit(state, default)
        if not fitted.missing and fitted.matched and (match := match_architecture(fitted.state)) and match[0] == name:
            return match
    for prefix in checkpoints.candidate_prefixes(state)[1:6]:
        inside, _outside = checkpoints.strip(state, prefix)
        if inside and (match := match_architecture(inside)) is not None:
            return match
    return None


def _check_state_size(path: Path, state: Mapping[str, torch.Tensor], budget: int) -> None:
    """Refuse tensors whose shapes claim more memory than the budget, or far more than the file holds (see
    :func:`_check_claimed`)."""
    if not state:
        return
    claimed = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    largest = max(state, key=lambda key: state[key].numel())
    _check_claimed(path, "its tensors' shapes", claimed, tuple(state[largest].shape), budget, name=largest)


def _check_claimed(path: Path, what: str, claimed: int, shape: tuple[int, ...] | None, budget: int, *,
                   name: str | None = None, ratio: bool = True) -> None:
    try:
        _files.check_claimed(path, what, claimed, shape, budget, name=name, ratio=ratio)
    except FileCheckError as error:
        raise ModelLoadError(str(error)) from None


def _check_buildable(path: Path, state: Mapping[str, torch.Tensor], architecture: str, num_classes: int | None,
                     budget: int, allowed_missing: frozenset[str] = frozenset(), extra: str = "") -> None:
    """Before a registry architecture is really built (which allocates and initializes every parameter, tens
    of seconds for an absurd head), build it on the meta device: refuse it above the memory budget, and refuse a
    state dict whose shapes it would not accept anyway — both in well under a second."""
    built = _meta_build(architecture, num_classes, extra)
    if built is None:
        return  # not buildable on meta: the real build below reports its own failure
    shapes = built.shapes
    what = f"{architecture}" + (f" with {num_classes} classes" if num_classes is not None else "")
    if built.size > budget:
        raise ModelLoadError(
            f"{path}: building {what} needs {human_bytes(built.size)} for its parameters, more than the memory "
            f"budget of {human_bytes(budget)}; refusing to build it."
        )
    if built.converts:
        # Its own loading code may rename an old checkpoint's keys, so load_state_dict is the judge of names; but
        # it is then built for real beside the file's tensors, and renaming keeps sizes: a file holding far less
        # than the model's parameters cannot fit it (a 131-byte file naming ViT-H/14 must not build 2.5 GB).
        claimed = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
        if built.size > 2 * claimed + _files.MIB:
            raise ModelLoadError(
                f"{path} does not fit the architecture {what} (its tensors hold {human_bytes(claimed)}, the "
                f"model's parameters need {human_bytes(built.size)}); choose the matching architecture."
            )
        if built.size + claimed > budget:
            raise ModelLoadError(
                f"{path}: building {what} beside the file's tensors needs {human_bytes(built.size + claimed)}, "
                f"more than the memory budget of {human_bytes(budget)}; refusing to build it."
            )
        return
    given = _comparable({k: tuple(v.shape) for k, v in state.items()})
    missing = [k for k in shapes if k not in given and k not in allowed_missing]
    unexpected = [k for k in given if k not in shapes]
    mismatched = [k for k in shapes if k in given and given[k] != shapes[k]]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            key = mismatched[0]
            details.append(f"{key} is {'×'.join(map(str, given[key]))} in the file, "
                           f"{'×'.join(map(str, shapes[key]))} in the model"
                           + (f", and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""))
        if missing or unexpected:
            details.append(f"missing {', '.join(missing[:3]) or 'none'}; "
                           f"unexpected {', '.join(unexpected[:3]) or 'none'}")
        raise ModelLoadError(
            f"{path} does not fit the architecture {what} ({'; '.join(details)}); choose the matching architecture."
        )


def _last_linear_rows(state: Mapping[str, torch.Tensor]) -> int | None:
    """Output size of the last 2-D weight in the state dict: the classifier head, for typical models."""
    rows = [v.shape[0] for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return int(rows[-1]) if rows else None


def _build_assigned(name: str, num_classes: int | None, state: Mapping[str, torch.Tensor],
                    extra: str = "") -> nn.Module | None:
    """A registry architecture built on the meta device with the file's tensors assigned as its parameters and
    buffers, or None when the state does not cover every one of them exactly (the caller then builds for real).

    A real build randomly initializes every weight only for load_state_dict to overwrite it, then holds the file's
    tensors and the model's at once: on a resnet50 that is ~1 s (several under load) and 100 MB of peak memory,
    paid again by the isolated test-load. Tensors are cast to the dtype the model declares, as copying would, and
    one file tensor saved under two names of untied parameters is copied for the second, as copying would.
    """
    built = _meta_build(name, num_classes, extra)
    if built is None or built.converts:  # a custom _load_from_state_dict may not expect assignment
        return None
    try:
        with warnings.catch_warnings(), _ParamsOnMeta():
            warnings.simplefilter("ignore")
            module = architectures.build(name, **_builder_kwargs(num_classes, extra))
    except Exception:  # noqa: BLE001 - the real build reports what is wrong
        return None
    expected = module.state_dict(keep_vars=True)
    if any(key not in expected for key in state):
        return None
    assigned = {}
    owners: dict[int, int] = {}  # storage address -> the model tensor it was assigned to
    for key, target in expected.items():
        tensor = state.get(key)
        if tensor is None:
            if not key.endswith("num_batches_tracked"):
                return None
            tensor = torch.zeros((), dtype=target.dtype)  # BatchNorm's counter, absent from some saved files
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(target.shape):
            return None
        if tensor.dtype != target.dtype:
            tensor = tensor.to(target.dtype)
        tensor = tensor.detach().contiguous()
        address = tensor.untyped_storage().data_ptr() if tensor.numel() else 0
        if address and owners.setdefault(address, id(target)) != id(target):
            tensor = tensor.clone()
        assigned[key] = tensor
    try:
        module.load_state_dict(assigned, strict=True, assign=True)
    except (RuntimeError, ValueError):
        return None
    # a non-persistent buffer (not in any state dict) would still be on meta: such a model is built for real
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        return None
    return module


def _build_registry(path: Path, name: str, num_classes: int | None, extra: str = "") -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return architectures.build(name, **_builder_kwargs(num_classes, extra))
    except Exception as error:  # noqa: BLE001
        _refuse_keyword(name, error, extra)
        raise ModelLoadError(f"{path}: cannot build architecture {name} ({_short(error)}).") from None


def _before_user_code() -> None:
    """Install the torchvision compat shim before code the user trusted is imported or unpickled: that code may
    ``import torchvision`` itself, which fails on this CUDA torchvision wheel beside CPU torch unless the missing
    op schemas are declared first (``operator torchvision::nms does not exist``)."""
    from qtradeoff.core import tvcompat

    with contextlib.suppress(ImportError):  # no torchvision at all: the user's code reports that itself
        tvcompat.torchvision()


def _refuse_keyword(architecture: str, error: BaseException, extra: str) -> None:
    """A build that failed on a keyword the user passed is their usage error, naming ``--arch-kwargs``."""
    keyword = _unknown_keyword(error) if isinstance(error, TypeError) else None
    if keyword is not None and keyword in _builder_kwargs(None, extra):
        raise ArchitectureArgumentError(
            f"argument --arch-kwargs: {architecture} takes no keyword argument {keyword!r}") from None


def _build_callable(path: Path, spec: str, num_classes: int | None, extra: str = "") -> nn.Module:
    module_name, _, attr = spec.partition(":")
    _before_user_code()
    given = _builder_kwargs(None, extra)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        try:
            built = target(**_builder_kwargs(num_classes, extra))
        except TypeError as error:  # the callable takes no num_classes
            if num_classes is None or _unknown_keyword(error) != "num_classes":
                raise
            built = target(**given)
    except Exception as error:  # noqa: BLE001
        _refuse_keyword(spec, error, extra)
        raise ModelLoadError(f"{path}: cannot build {spec} ({_short(error)}); check the architecture name.") from None
    if not isinstance(built, nn.Module):
        raise ModelLoadError(f"{path}: {spec} returned {type(built).__name__}, not an nn.Module.")
    return built


def _torch_load(path: Path, *, weights_only: bool, allow_list: bool = True) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # protocol/deprecation chatter from torch.load is not the user's concern
        if weights_only:
            with _safe_globals_context() if allow_list else contextlib.nullcontext():
                return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
        _before_user_code()
        return torch.load(path, map_location="cpu", weights_only=False)


def _load_pickle(path: Path, kind: str, trust: bool, architecture: str | None,
                 budget: int | None = None, arch_kwargs: Mapping[str, Any] | None = None) -> _Loaded:
    scan = _scan(path, kind)
    if not trust:
        wanted = _refused_globals(scan)
        if wanted:
            called = sum(name.endswith((" called with arguments", " called with a size")) for name in wanted)
            what = ("references code outside the safe list" if not called else
                    "calls code with arguments from the file" if called == len(wanted) else
                    "references code outside the safe list and calls code with arguments from the file")
            raise NeedsTrust(
                f"{path} {what} ({', '.join(wanted[:6])}{', …' if len(wanted) > 6 else ''}); "
                "pass --trust only if you trust its source.",
                globals=wanted, format="pickle",
            )
        if scan.protocol >= 4:
            raise NeedsTrust(
                f"{path} was saved with pickle protocol {scan.protocol}, which safe loading cannot read; re-save it "
                "with the default protocol (torch.save without pickle_protocol) or pass --trust if you trust it.",
                globals=[f"pickle protocol {scan.protocol}"], format="pickle",
            )
    budget = budget or _files.memory_budget()
    # Estimated from the opcodes before anything is allocated: the storages it loads, and its tensors at full size.
    _check_claimed(path, "its storages", scan.storage_bytes, None, budget, ratio=False)
    _check_claimed(path, "its tensors' shapes", scan.tensor_bytes, scan.largest, budget)
    try:
        if trust:
            try:
                obj = _torch_load(path, weights_only=False)
            except (RuntimeError, ValueError) as error:
                if kind != "pickle" or "magic number" not in str(error).lower():
                    raise
                import pickle

                with _files.open_binary(path) as handle:
                    obj = pickle.load(handle)  # noqa: S301 - the user trusted this file
        else:
            obj = _torch_load(path, weights_only=True, allow_list=_needs_allow_list(scan))
    except ModelLoadError:
        raise
    except MemoryError:
        raise ModelLoadError(f"{path} needs more memory than is available to load; use a smaller file.") from None
    except Exception as error:  # noqa: BLE001 - unpickling failures of every kind
        message = str(error)
        if "can't allocate memory" in message:
            raise ModelLoadError(f"{path} needs more memory than the loader may use; use a smaller file.") from None
        if "Weights only load failed" in message or "Unsupported global" in message:
            names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", message))) or ["(unknown)"]
            raise NeedsTrust(
                f"{path} references code outside the safe list ({', '.join(names)}); "
                "pass --trust only if you trust its source.",
                globals=names, format="pickle",
            ) from None
        absent = _absent_module(error) if trust else None
        if absent:
            raise ModelLoadError(f"{path} {absent}.") from None
        raise ModelLoadError(f"{path} could not be unpickled ({_short(error)}); it may be truncated or damaged.") \
            from None
    return _interpret_object(path, obj, architecture, trust, budget, arch_kwargs)


_MISSING_CLASS = re.compile(r"Can't get attribute '([\w.]+)' on <module '([\w.]+)'")


def _absent_module(error: BaseException) -> str | None:
    """What a trusted unpickle needed and could not import, as a phrase: the module (``ModuleNotFoundError``), or
    a class its installed version lacks (``Can't get attribute 'X' on <module 'm'>``); else None."""
    seen: BaseException | None = error
    for _ in range(4):  # torch.load may wrap the import failure
        if seen is None:
            break
        if isinstance(seen, ModuleNotFoundError) and seen.name:
            return (f"needs the Python module {seen.name!r}, which is not installed here; install the package that "
                    f"provides it (e.g. pip install {seen.name.split('.')[0]}) and load the file again")
        if isinstance(seen, AttributeError) and (found := _MISSING_CLASS.search(str(seen))):
            return (f"needs {found.group(1)} from the module {found.group(2)!r}, which the installed version lacks; "
                    f"install the version of {found.group(2).split('.')[0]} it was saved with")
        seen = seen.__cause__ or seen.__context__
    return None


def _interpret_object(path: Path, obj: Any, architecture: str | None, trust: bool,
                      budget: int | None = None, arch_kwargs: Mapping[str, Any] | None = None) -> _Loaded:
    if isinstance(obj, nn.Module):
        return _Loaded(obj, "pickle", _registry_name_of(obj), _out_features(obj))
    if isinstance(obj, Mapping):
        for key in ("model", "module", "net", "ema"):
            if isinstance(obj.get(key), nn.Module):
                return _Loaded(obj[key], "pickle", _registry_name_of(obj[key]), _out_features(obj[key]))
        state = unwrap_state_dict(obj)
        if state is not None:
            return _build_from_state(path, state, "state_dict", architecture, trust, budget=budget,
                                     arch_kwargs=arch_kwargs)
        raise ModelLoadError(
            f"{path} holds a dictionary without model weights (keys: {', '.join(map(str, list(obj)[:5]))}); "
            "choose a file saved with torch.save(model) or torch.save(model.state_dict())."
        )
    raise ModelLoadError(
        f"{path} holds a {type(obj).__name__}, not a model or state_dict; "
        "choose a file saved with torch.save(model) or torch.save(model.state_dict())."
    )


def _registry_name_of(module: nn.Module) -> str | None:
    cls = type(module)
    for name, builder in architectures._BUILTIN.items():
        if cls is builder:
            return name
    return None  # a torchvision class (MobileNetV3) does not name one builder (small or large)


def _out_features(module: nn.Module) -> int | None:
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub.out_features
    return last


def _load_safetensors(path: Path, sniffed: _files.Sniff, architecture: str | None, trust: bool,
                      budget: int | None = None, arch_kwargs: Mapping[str, Any] | None = None) -> _Loaded:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with _files.utf8_name(path) as name:
            state = load_file(name, device="cpu")
    except FileCheckError as error:
        raise ModelLoadError(str(error)) from None
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelLoadError(f"{path} is a damaged safetensors file ({_short(error)}); save it again.") from None
    metadata = sniffed.safetensors_metadata or {}
    if architecture is None and architectures.is_known(str(metadata.get("architecture", ""))):
        architecture = metadata["architecture"]
    num_classes = int(metadata["num_classes"]) if str(metadata.get("num_classes", "")).isdigit() else None
    loaded = _build_from_state(path, dict(state), "safetensors", architecture, trust, num_classes, budget, arch_kwargs)
    loaded.metadata = metadata
    return loaded


def _load_code_archive(path: Path, kind: str, trust: bool) -> _Loaded:
    what = "a TorchScript archive" if kind == "torchscript" else "a torch.export program"
    if not trust:
        raise NeedsTrust(
            f"{path} is {what}, which can run code while loading; pass --trust only if you trust its source.",
            format=kind,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _before_user_code()
            if kind == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu")
            else:
                module = torch.export.load(str(path)).module()
    except Exception as error:  # noqa: BLE001
        raise ModelLoadError(f"{path} is {what} that failed to load ({_short(error)}); save it again.") from None
    if kind == "torchscript":
        # A scripted registry architecture becomes its eager module again: real int8 kernels, simulated activations.
        from qtradeoff.core.loading.scripted import rebuild_eager

        rebuilt = rebuild_eager(module)
        if rebuilt.module is not None:
            return _Loaded(rebuilt.module, kind, rebuilt.architecture, rebuilt.num_classes,
                           metadata={"rebuilt_from_torchscript": rebuilt.architecture})
        return _Loaded(module, kind, rebuilt.architecture, rebuilt.num_classes,
                       warnings=[f"{path.name}: {rebuilt.note}; its layers cannot run on int8 kernels and its "
                                 "activations are not simulated"] if rebuilt.note else [])
    return _Loaded(module, kind, None, None)


def _load_onnx(path: Path, size: int) -> _Loaded:
    from qtradeoff.core.loading import onnx_io

    try:
        module, num_classes, metadata = onnx_io.convert(path, size)
    except onnx_io.OnnxLoadError as error:
        raise ModelLoadError(str(error)) from None
    return _Loaded(module, "onnx", None, num_classes, metadata)


def load_in_process(path: Path, *, trust: bool, architecture: str | None, budget: int,
                    arch_kwargs: Mapping[str, Any] | None = None) -> tuple[_Loaded, int]:
    """Check, identify and load the file in this process. Returns the loaded model and the file size."""
    path = Path(path)
    try:
        size = _files.check_regular_file(path, budget)
        sniffed = _files.sniff(path, size, budget)
    except FileCheckError as error:
        raise ModelLoadError(str(error)) from None
    kind = sniffed.kind
    if kind == "other":
        raise ModelLoadError(f"{path} is {sniffed.description}, not a model; choose a PyTorch model file.")
    if kind == "npz":
        raise ModelLoadError(f"{path} is a NumPy .npz archive, not a model; load it as data instead.")
    if kind == "unknown":
        raise ModelLoadError(
            f"{path} is not a recognised model file (not safetensors, torch.save, TorchScript, torch.export or ONNX); "
            "choose a PyTorch model file."
        )
    if kind == "onnx":
        loaded = _load_onnx(path, size)
    elif kind == "safetensors":
        loaded = _load_safetensors(path, sniffed, architecture, trust, budget, arch_kwargs)
    elif kind in ("torchscript", "export"):
        loaded = _load_code_archive(path, kind, trust)
    else:
        loaded = _load_pickle(path, kind, trust, architecture, budget, arch_kwargs)
    with contextlib.suppress(NotImplementedError):  # torch.export modules refuse eval(); they are traced in eval
        loaded.module.eval()
    return loaded, size


# ----------------------------------------------------------------------------------------------------------------
# Public API


def inspect_file(path: str | Path, *, trust: bool = False, architecture: str | None = None,
                 memory_budget: int | None = None, arch_kwargs: Mapping[str, Any] | None = None) -> dict:
    """Identify and test-load ``path`` in this process; the verdict is plain data (what the child reports)."""
    budget = memory_budget or _files.memory_budget()
    try:
        loaded, size = load_in_process(Path(path), trust=trust, architecture=architecture, budget=budget,
                                       arch_kwargs=arch_kwargs)
    except ArchitectureArgumentError as error:
        return {"ok": False, "error": "ArchitectureArgumentError", "message": str(error)}
    except NeedsTrust as error:
        return {"ok": False, "error": "NeedsTrust", "message": str(error), "globals": error.globals,
                "format": error.format}
    except ModelLoadError as error:
        return {"ok": False, "error": "ModelLoadError", "message": str(error)}
    except MemoryError:
        return {"ok": False, "error": "ModelLoadError",
                "message": f"{path} needs more memory than the loader may use; use a smaller file."}
    return {"ok": True, "format": loaded.format, "architecture": loaded.architecture,
            "num_classes": loaded.num_classes, "params": parameter_count(loaded.module), "file_bytes": size}


def _raise_verdict(verdict: dict) -> None:
    if verdict.get("ok"):
        return
    if verdict.get("error") == "NeedsTrust":
        raise NeedsTrust(verdict["message"], globals=verdict.get("globals"), format=verdict.get("format"))
    if verdict.get("error") == "ArchitectureArgumentError":
        raise ArchitectureArgumentError(verdict["message"])
    raise ModelLoadError(verdict["message"])


def load_model(path: str | Path, *, trust: bool = False, architecture: str | None = None,
               input_shape: tuple[int, ...] | None = None, isolate: bool = True,
               memory_budget: int | None = None, timeout: float = DEFAULT_TIMEOUT,
               arch_kwargs: Mapping[str, Any] | None = None) -> LoadedModel:
    """Load a model file of any supported format, safely. Raises ModelLoadError (or NeedsTrust).

    ``architecture``: a registry name (``torchvision.resnet18``, ``qtradeoff.digits_cnn``) or
    ``package.module:callable`` (imports code: needs ``trust``); auto-detected for state dicts when None.
    ``arch_kwargs``: keyword arguments of the architecture's constructor (``{"num_classes": 10}``), plain JSON data.
    ``isolate`` (default) test-loads in a child process with a memory limit and a timeout first (not a bundled
    sample's own bytes, known by their sha256).
    ``input_shape``: one sample's shape; otherwise taken from the sample manifest, else None (see module doc).
    """
    started = time.perf_counter()
    path = Path(path)
    budget = memory_budget or _files.memory_budget()
    try:
        _files.check_regular_file(path, budget)
        digest = _files.sha256_file(path)
    except FileCheckError as error:
        raise ModelLoadError(str(error)) from None
    sample = _manifest_entry_for(digest)
    # A bundled sample's exact bytes (matched by sha256) are ours and load in every test run: probing them in a
    # child would only make the first load of the default model pay a second ``import torch`` (~1 s).
    if isolate and sample is None:
        from qtradeoff.core.loading import _load_child

        verdict = _load_child.run_isolated(
            {"path": str(path), "trust": trust, "architecture": architecture, "memory_budget": budget,
             "arch_kwargs": dict(arch_kwargs) if arch_kwargs else None},
            timeout=timeout, memory_bytes=budget, label=str(path),
        )
        _raise_verdict(verdict)
        # The same load here costs what it cost there: a trusted file's own code is bounded by nothing else.
        used = verdict.get("loader_bytes")
        if used is not None and used > budget:
            raise ModelLoadError(
                f"{path}: loading it took {human_bytes(used)} in the loader process, more than the memory budget of "
                f"{human_bytes(budget)}; refusing to load it again here (raise the budget or use a smaller file)."
            )
        # The child already matched the architecture: reuse its answer instead of searching again.
        if architecture is None and verdict.get("format") in ("safetensors", "state_dict"):
            architecture = verdict.get("architecture")
    loaded, size = load_in_process(path, trust=trust, architecture=architecture, budget=budget,
                                   arch_kwargs=arch_kwargs)
    if input_shape is None and sample is not None:
        input_shape = tuple(sample["input_shape"])
    if input_shape is None:
        input_shape = _shape_from_metadata(loaded.metadata)
    num_classes = loaded.num_classes if loaded.num_classes is not None else (sample or {}).get("num_classes")
    return LoadedModel(
        module=loaded.module,
        path=path,
        name=path.stem,
        format=loaded.format,
        sha256=digest,
        trusted=trust,
        file_bytes=size,
        input_shape=tuple(input_shape) if input_shape is not None else None,
        num_classes=num_classes,
        architecture=loaded.architecture or (sample or {}).get("architecture"),
        load_seconds=time.perf_counter() - started,
        preprocessing=dict(sample["preprocessing"]) if sample else _preprocessing_from_metadata(loaded.metadata),
        warnings=[*loaded.warnings, *_weight_warnings(path, loaded.module)],
    )


def _preprocessing_from_metadata(metadata: dict | None) -> dict | None:
    """Digits preprocessing stored as JSON in a file's metadata (ONNX ``metadata_props`` qtradeoff.preprocessing)."""
    text = (metadata or {}).get("preprocessing")
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _shape_from_metadata(metadata: dict | None) -> tuple[int, ...] | None:
    """``input_shape`` stored in safetensors metadata as JSON (``"[3, 224, 224]"``) or ``"3,224,224"``."""
    text = (metadata or {}).get("input_shape")
    if not text:
        return None
    try:
        values = json.loads(text) if text.strip().startswith("[") else [int(p) for p in text.split(",")]
        return tuple(int(v) for v in values) or None
    except (ValueError, TypeError):
        return None


def start_loader() -> None:
    """Start the isolated loader process in the background (it imports torch once, ~1–2 s), so that the
    first :func:`load_model` does not wait for it. Optional: ``load_model`` starts it when needed."""
    from qtradeoff.core.loading import _load_child

    _load_child.SERVER.start()


def check_forward(loaded: LoadedModel | nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Run one zero sample of ``input_shape`` through the model; ModelLoadError naming the file if it fails."""
    module = loaded.module if isinstance(loaded, LoadedModel) else loaded
    where = loaded.path if isinstance(loaded, LoadedModel) else type(module).__name__
    try:
        with torch.no_grad(), runtime.running():
            output = module(torch.zeros((1, *input_shape)))
    except Exception as error:  # noqa: BLE001 - any failure of user code is reported, not raised through
        raise ModelLoadError(
            f"{where} fails on inputs of shape {tuple(input_shape)} ({_short(error)}); "
            "check the data's preprocessing or the model's expected input size."
        ) from None
    if not isinstance(output, torch.Tensor):
        raise ModelLoadError(f"{where} returns {type(output).__name__}, not a tensor of class scores.")
    return output


@functools.cache
def _manifest() -> dict:
    return json.loads(MANIFEST_FILE.read_text())


def _manifest_entry_for(digest: str) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        for entry in _manifest()["models"].values():
            if entry.get("sha256") == digest:
                return entry
    return None


def sample_names() -> list[str]:
    """Names of the bundled sample models, default first."""
    manifest = _manifest()
    default = manifest.get("default")
    return sorted(manifest["models"], key=lambda name: (name != default, name))


def load_sample_model(name: str | None = None, *, isolate: bool = False) -> LoadedModel:
    """Load a bundled sample model by manifest name (``digits_cnn`` by default).

    The samples are ours, so they load in-process by default (no child); the TorchScript and pickle
    samples still go through the same checks, with trust granted only to the TorchScript sample we ship.
    """
    manifest = _manifest()
    name = name or manifest.get("default", "digits_cnn")
    if name not in manifest["models"]:
        raise ModelLoadError(f"unknown sample model {name!r}; choose one of {', '.join(sample_names())}.")
    entry = manifest["models"][name]
    path = SAMPLE_DIR / entry["file"]
    # Trust (needed by the TorchScript sample) is granted only to the exact bytes we ship.
    try:
        digest = _files.sha256_file(path)
    except FileCheckError as error:
        raise ModelLoadError(str(error)) from None
    if digest != entry["sha256"]:
        raise ModelLoadError(f"{path} does not match the manifest's sha256; regenerate the samples (train.py).")
    trust = entry["format"] in ("torchscript", "export")
    architecture = entry["architecture"] if entry["format"] in ("safetensors", "state_dict") else None
    loaded = load_model(path, trust=trust, architecture=architecture, input_shape=tuple(entry["input_shape"]),
                        isolate=isolate)
    loaded.name = name
    loaded.architecture = entry["architecture"]
    loaded.num_classes = entry["num_classes"]
    loaded.preprocessing = dict(entry["preprocessing"])
    return loaded


def sample_data_for(model: LoadedModel, **sizes) -> Any:
    """The bundled digits data preprocessed for ``model`` (a sample); ``sizes``: calib_size, eval_size."""
    from qtradeoff.core.loading.data import load_digits

    preprocessing = model.preprocessing
    if preprocessing is None:
        raise ModelLoadError(f"{model.path} is not a bundled sample; load data for it with load_data().")
    return load_digits(preprocessing, **sizes)


__all__ = [
    "FORMATS", "LoadedModel", "ModelLoadError", "NeedsTrust", "check_forward", "human_bytes", "inspect_file",
    "load_model", "load_sample_model", "match_architecture", "nonfinite_weights", "parameter_count",
    "safe_module_classes", "sample_data_for", "sample_names", "start_loader", "unsafe_globals", "unwrap_state_dict",
]
