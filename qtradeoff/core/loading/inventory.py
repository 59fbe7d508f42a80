"""The layer inventory of a model: which layers hold weights, their shapes and MACs, and which can be compressed.

One real forward on an example input runs under a dispatch mode that sees every ATen op, whatever runs the model
(eager ``nn.Module``, TorchScript, or the module of a ``torch.export`` program). An op is attributed to a layer when
one of its tensor arguments shares storage with that layer's parameter, so no per-format graph walking is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from qtradeoff.core import runtime
from qtradeoff.core.errors import InputError

_CONV = {f"Conv{d}d" for d in (1, 2, 3)}
_CONV_T = {f"ConvTranspose{d}d" for d in (1, 2, 3)}
_RNN = {"LSTM", "GRU", "RNN"}
COMPRESSIBLE_KINDS = frozenset(_CONV | _CONV_T | {"Linear", "Embedding", "MultiheadAttention"} | _RNN)
_KIND_ALIASES = {"NonDynamicallyQuantizableLinear": "Linear", "LazyLinear": "Linear"}


@dataclass(frozen=True)
class LayerInfo:
    """One layer that holds parameters. ``macs`` and ``output_shape`` are per sample (batch dimension dropped).

    ``weight_names`` are the layer's compressible parameters (``weight``, or ``in_proj_weight``, or the
    ``weight_ih_l0``... of a recurrent layer); ``out_axis``/``in_axis`` locate output/input channels in them.
    """

    name: str
    kind: str
    params: int
    weight_shape: tuple[int, ...]
    macs: int
    output_shape: tuple[int, ...]
    groups: int = 1
    compressible: bool = True
    reason: str = ""
    weight_names: tuple[str, ...] = ("weight",)
    out_axis: int = 0
    in_axis: int = 1


class InventoryError(InputError, RuntimeError):
    """The example forward failed, so the model's layers cannot be listed."""


def module_kind(module: nn.Module) -> str:
    """Type name of a module; for TorchScript the original Python class name."""
    kind = getattr(module, "original_name", None) or type(module).__name__
    return _KIND_ALIASES.get(kind, kind)


def weight_names_of(kind: str, module: nn.Module) -> tuple[str, ...]:
    """Names of the parameters of ``module`` that compression rewrites."""
    own = [name for name, _ in module.named_parameters(recurse=False)]
    if kind == "MultiheadAttention":
        return tuple(n for n in own if n in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"))
    if kind in _RNN:
        return tuple(n for n in own if n.startswith(("weight_ih", "weight_hh")))
    return ("weight",) if "weight" in own else ()


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None


def _per_sample(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    return shape[1:] if shape and shape[0] == 1 else shape


class _OpRecorder(TorchDispatchMode):
    """Records, for each op touching a known parameter storage, the parameter and the op's shapes."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps a subclass's __torch_dispatch__ in torch._disable_dynamo unless told otherwise,
        # and the first call of that wrapper imports torch._dynamo (sympy included): 1.5-15 s of every process's
        # first inventory. Nothing here is compiled, so there is no compilation to keep out of this frame.
        return False

    def __init__(self, storages: dict[int, str]):
        super().__init__()
        self.storages = storages
        self.events: list[tuple[str, object, list[torch.Tensor], object]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [a for a in _flatten(args) if isinstance(a, torch.Tensor)]
        for tensor in tensors:
            key = _storage_key(tensor)
            if key is not None and key in self.storages:
                self.events.append((self.storages[key], func, list(args), out))
                break
        return out


def _flatten(items):
    for item in items:
        if isinstance(item, list | tuple):
            yield from _flatten(item)
        else:
            yield item


def _op_macs(func, args: list, out) -> tuple[int, str | None, int]:
    """(MACs, kind inferred from the op, groups) of one weight-consuming op; MACs counted at the batch size run."""
    name = func.__name__ if hasattr(func, "__name__") else str(func)
    base = name.split(".")[0]
    first_out = out[0] if isinstance(out, tuple | list) else out
    if base in ("_convolution", "convolution", "conv1d", "conv2d", "conv3d"):
        inp, weight = args[0], args[1]
        transposed = bool(args[6]) if base in ("_convolution", "convolution") and len(args) > 6 else False
        groups = int(args[8]) if base in ("_convolution", "convolution") and len(args) > 8 else 1
        per_tap = math.prod(weight.shape[1:])
        dims = weight.dim() - 2
        if transposed:
            return inp.numel() * per_tap, f"ConvTranspose{dims}d", groups
        return first_out.numel() * per_tap, f"Conv{dims}d", groups
    if base in ("addmm", "mm", "linear", "matmul", "bmm", "baddbmm"):
        weight = args[2] if base in ("addmm", "baddbmm") else args[1]
        k = weight.shape[-2] if base in ("addmm", "mm", "bmm", "baddbmm") else weight.shape[-1]
        return first_out.numel() * int(k), "Linear", 1
    if base in ("embedding", "embedding_bag", "_embedding_bag"):
        return 0, "Embedding", 1
    if "batch_norm" in base and isinstance(args[0], torch.Tensor):
        return 0, f"BatchNorm{max(1, args[0].dim() - 2)}d", 1
    if base in ("layer_norm", "native_layer_norm"):
        return 0, "LayerNorm", 1
    return 0, None, 1


def _rnn_macs(module: nn.Module, kind: str, example_out) -> int:
    try:
        hidden = module.hidden_size
        directions = 2 if module.bidirectional else 1
        steps = example_out.numel() // (hidden * directions)  # batch size 1, whatever the layout
        gates = {"LSTM": 4, "GRU": 3}.get(kind, 1)
        total, inputs = 0, module.input_size
        for _ in range(module.num_layers):
            total += directions * gates * hidden * (inputs + hidden)
            inputs = hidden * directions
        return int(total * steps)
    except AttributeError:
        return 0


def _attention_macs(modules: dict[str, nn.Module], order: list[str], macs: dict[str, int],
                    outputs: dict[str, tuple[int, ...]]) -> None:
    """MultiheadAttention may run as one fused op: count its projections from the module's sizes instead."""
    for name in list(order):
        mod = modules[name]
        if module_kind(mod) != "MultiheadAttention" or name not in outputs:
            continue
        # a TorchScript MultiheadAttention keeps its sizes only in its tensors' shapes
        embed = getattr(mod, "embed_dim", None) or int(mod.out_proj.weight.shape[0])
        kdim, vdim = getattr(mod, "kdim", None) or embed, getattr(mod, "vdim", None) or embed
        tokens = math.prod(outputs[name]) // embed
        macs[name] = tokens * embed * (embed + kdim + vdim)  # q, k, v input projections
        child = f"{name}.out_proj" if name else "out_proj"
        if child in modules and child not in macs:
            order.append(child)
            macs[child] = tokens * embed * embed
            outputs[child] = outputs[name]


def _example(module: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, *shape), generator=generator)


def guess_input_shape(module: nn.Module) -> tuple[int, ...] | None:
    """A plausible per-sample input shape read off the first layer (``C×224×224`` for a 2-D conv, torchvision's
    default size), for an inventory when neither the file nor the data says. Callers must mark it as guessed."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return (sub.in_channels, 224, 224)
        if isinstance(sub, nn.Conv1d):
            return (sub.in_channels, 128)
        if isinstance(sub, nn.Linear):
            return (sub.in_features,)
    return None


def inventory(module: nn.Module | torch.export.ExportedProgram, example_input_shape: Sequence[int] | None = None, *,
              example_input: torch.Tensor | None = None) -> list[LayerInfo]:
    """Layers of ``module`` that hold parameters, in execution order, from one forward at batch size 1.

    ``example_input_shape`` is per sample (a seeded random normal input is built), or pass ``example_input``
    (with its batch dimension) for models that need integer tokens. Layers with parameters that the forward
    never touched are listed last with a reason.
    """
    if isinstance(module, torch.export.ExportedProgram):
        module = module.module()
    if example_input is None:
        if example_input_shape is None:
            raise ValueError("inventory needs example_input_shape (per sample) or example_input")
        example_input = _example(module, example_input_shape)

    modules = dict(module.named_modules())
    owners: dict[str, tuple[str, str]] = {}  # parameter storage owner: qualified param name -> (module, attr)
    storages: dict[int, str] = {}
    for mod_name, mod in modules.items():
        for attr, param in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{attr}" if mod_name else attr
            key = _storage_key(param)
            if key is not None and key not in storages:
                storages[key] = full
                owners[full] = (mod_name, attr)

    recorder = _OpRecorder(storages)
    was_training = _set_eval(module, True)
    try:
        with torch.no_grad(), runtime.running(), recorder:
            module(example_input)
    except Exception as error:  # noqa: BLE001 - any failure of the user's forward is reported the same way
        raise InventoryError(f"the example forward with input shape {tuple(example_input.shape)} failed: "
                             f"{error}; pass the model's real input shape") from error
    finally:
        if was_training:
            _set_eval(module, False)

    order: list[str] = []
    macs: dict[str, int] = {}
    outputs: dict[str, tuple[int, ...]] = {}
    op_kind: dict[str, str] = {}
    groups: dict[str, int] = {}
    for param_name, func, args, out in recorder.events:
        mod_name, attr = owners[param_name]
        if mod_name not in macs:
            order.append(mod_name)
            macs[mod_name] = 0
        count, kind, group = _op_macs(func, args, out)
        if kind is not None:
            macs[mod_name] += count
            op_kind.setdefault(mod_name, kind)
            groups.setdefault(mod_name, group)
            first = out[0] if isinstance(out, tuple | list) else out
            if isinstance(first, torch.Tensor):
                outputs[mod_name] = _per_sample(first.shape)  # the last weight op's output is the layer's
        elif mod_name not in outputs:
            first = out[0] if isinstance(out, tuple | list) else out
            if isinstance(first, torch.Tensor):
                outputs[mod_name] = _per_sample(first.shape)
            rnn = modules[mod_name]
            if isinstance(out, tuple | list) and module_kind(rnn) in _RNN and isinstance(first, torch.Tensor):
                macs[mod_name] = _rnn_macs(rnn, module_kind(rnn), first)
                width = getattr(rnn, "hidden_size", 1) * (2 if getattr(rnn, "bidirectional", False) else 1)
                outputs[mod_name] = (first.numel() // max(width, 1), width)  # (steps, features) per sample
    _attention_macs(modules, order, macs, outputs)

    with_params = [name for name, _ in owners.values()]
    never_run = [name for name in dict.fromkeys(with_params) if name not in macs]
    infos = []
    for mod_name in order + never_run:
        mod = modules[mod_name]
        kind = module_kind(mod)
        if kind in ("Module", "InterpreterModule") and mod_name in op_kind:
            kind = op_kind[mod_name]  # export programs keep parameters on plain holder modules
        params = sum(p.numel() for p in mod.parameters(recurse=False))
        names = weight_names_of(kind, mod) if kind in COMPRESSIBLE_KINDS else ()
        weight_shape = tuple(getattr(mod, names[0]).shape) if names else ()
        if not names and "weight" in dict(mod.named_parameters(recurse=False)):
            weight_shape = tuple(mod.weight.shape)
        compressible = kind in COMPRESSIBLE_KINDS and bool(names)
        reason = ""
        if not compressible:
            reason = _reason(kind)
        elif mod_name in never_run:
            reason = "not executed by the forward on the example input (MACs unknown)"
        infos.append(LayerInfo(
            name=mod_name, kind=kind, params=params, weight_shape=weight_shape, macs=int(macs.get(mod_name, 0)),
            output_shape=outputs.get(mod_name, ()), groups=groups.get(mod_name, getattr(mod, "groups", 1)) or 1,
            compressible=compressible, reason=reason, weight_names=names,
            out_axis=1 if kind in _CONV_T else 0, in_axis=0 if kind in _CONV_T else 1,
        ))
    return infos


def _set_eval(module: nn.Module, evaluate: bool) -> bool:
    """Switch train/eval where the module allows it (export program modules refuse); returns the old training."""
    was_training = module.training
    if was_training == evaluate:
        try:
            module.train(not evaluate)
        except NotImplementedError:
            pass
    return was_training


def _reason(kind: str) -> str:
    if kind.startswith(("BatchNorm", "SyncBatchNorm")):
        return f"{kind} parameters stay fp32 (folded into the preceding convolution where possible)"
    if "Norm" in kind:
        return f"{kind} parameters are few and precision-sensitive; kept at fp32"
    return f"{kind} is not a supported layer type for compression; kept at fp32"


def compressible_names(infos: Sequence[LayerInfo]) -> list[str]:
    """Names of the compressible layers, in execution order."""
    return [info.name for info in infos if info.compressible]
