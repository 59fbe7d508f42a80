"""Which output of a model is scored: the tensors inside a tuple, list, dict, dataclass or namedtuple output, named
by path (``logits``, ``0``, ``heads.age``), and a view of the model that returns the chosen one only, so the rest
of the engine sees one tensor. Also the figures of an output that are not class scores (MSE, cosine similarity).

The view keeps the model's layer names (see :mod:`~qtradeoff.core.loading.views`; the base is never mutated).
TorchScript modules, whose class cannot be subclassed, are wrapped by a module that shares their children under
the same names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from qtradeoff.core.errors import InputError
from qtradeoff.core.loading import views


class OutputError(InputError):
    """The chosen output does not exist or is not a tensor; one sentence listing the outputs there are."""


@dataclass(frozen=True)
class OutputInfo:
    """One tensor among a model's outputs: its path (``logits``, ``0``, ``heads.age``), shape (batch first), dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class OutputSelection:
    """What the engine scores: the chosen output, every tensor output (the chosen one included) and whether the
    model returned a structure (False: a plain tensor, nothing was chosen)."""

    scored: str
    outputs: tuple[OutputInfo, ...]
    structured: bool

    def to_dict(self) -> dict:
        return {"scored": self.scored, "structured": self.structured,
                "others": [info.to_dict() for info in self.outputs if info.name != self.scored]}


def _children(value) -> list[tuple[str, object]] | None:
    """The named parts of a structured output (None for a leaf)."""
    if isinstance(value, torch.Tensor):
        return None
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple: by field name
        return list(zip(value._fields, value, strict=True))
    if isinstance(value, (tuple, list)):
        return [(str(i), item) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return [(str(key), item) for key, item in value.items()]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    return None


def tensor_outputs(value, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor in ``value`` with its path, depth first in the output's order (a plain tensor is ``""``)."""
    if isinstance(value, torch.Tensor):
        return [(prefix, value)]
    children = _children(value)
    if children is None:
        return []
    found = []
    for name, item in children:
        found.extend(tensor_outputs(item, f"{prefix}.{name}" if prefix else name))
    return found


def describe(value) -> tuple[OutputInfo, ...]:
    return tuple(OutputInfo(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in
                 tensor_outputs(value))


def select(value, path: str):
    """The part of ``value`` at ``path`` (dot-separated names or indices); KeyError when there is none."""
    for part in path.split(".") if path else ():
        if isinstance(value, Mapping):
            if part in value:
                value = value[part]
                continue
            matches = [key for key in value if str(key) == part]
            if not matches:
                raise KeyError(path)
            value = value[matches[0]]
        elif isinstance(value, (tuple, list)):
            if hasattr(value, "_fields") and part in value._fields:
                value = getattr(value, part)
            elif part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
                value = value[int(part)]
            else:
                raise KeyError(path)
        elif dataclasses.is_dataclass(value) and part in {f.name for f in dataclasses.fields(value)}:
            value = getattr(value, part)
        else:
            raise KeyError(path)
    return value


def _describe_for_message(outputs: tuple[OutputInfo, ...]) -> str:
    return ", ".join(f"{info.name} {list(info.shape)}" for info in outputs[:8]) + (", ..." if len(outputs) > 8
                                                                                  else "")


def choose(value, selector: str | None, where: str) -> OutputSelection:
    """The output ``selector`` names in ``value`` (one forward's output); default the first tensor output."""
    outputs = describe(value)
    structured = not isinstance(value, torch.Tensor)
    if not outputs:
        raise OutputError(f"{where} returns {type(value).__name__} with no tensor in it; choose a model whose "
                          "forward returns tensors.")
    if selector is None or (not structured and selector in ("", "0")):
        return OutputSelection(outputs[0].name, outputs, structured)
    if not structured:
        raise OutputError(f"{where} returns one tensor, so --score-output {selector!r} names nothing; "
                          "leave --score-output out.")
    try:
        chosen = select(value, selector)
    except KeyError:
        chosen = None
    if not isinstance(chosen, torch.Tensor):
        raise OutputError(f"{where} has no tensor output {selector!r}; its outputs are "
                          f"{_describe_for_message(outputs)} (give one of these names to --score-output).")
    # name it as tensor_outputs does (an index into a namedtuple becomes its field name)
    name = next((info.name for info, (_, t) in zip(outputs, tensor_outputs(value), strict=True) if t is chosen),
                selector)
    return OutputSelection(name, outputs, structured)


class _ScriptOutput(nn.Module):
    """A TorchScript module returning one of its outputs; its children are the script module's, by name."""

    def __init__(self, inner: nn.Module, path: str):
        super().__init__()
        object.__setattr__(self, "_inner", inner)  # not a child: the children below are its own, names unchanged
        for name, child in inner.named_children():
            self._modules[name] = child
        self._path = path

    def forward(self, *args, **kwargs):
        return select(self._inner(*args, **kwargs), self._path)


def with_output(module: nn.Module, selection: OutputSelection) -> nn.Module:
    """A view of ``module`` returning the output ``selection`` chose (``module`` itself for a plain tensor); it
    carries ``output_selection`` for the engine's Result."""
    if not selection.structured:
        return module
    path = selection.scored
    if isinstance(module, torch.jit.ScriptModule):
        view = _ScriptOutput(module, path)
        view.output_selection = selection
        return view

    def selecting(forward, self, *args, **kwargs):
        return select(forward(self, *args, **kwargs), path)

    return views.forward_view(module, selecting, output_selection=selection)


def is_class_scores(output: torch.Tensor) -> bool:
    """Whether an output reads as a batch of class scores: N×C floating point with at least two classes."""
    return output.ndim == 2 and output.shape[1] >= 2 and output.is_floating_point()


def regression_metrics(reference: torch.Tensor, output: torch.Tensor) -> dict:
    """Mean squared error against fp32 and the mean per-sample cosine similarity (JSON-safe floats)."""
    n = len(reference)
    ref = reference.reshape(n, -1).double()
    out = output.reshape(n, -1).double()
    mse = float((ref - out).square().mean()) if ref.numel() else 0.0
    norms = ref.norm(dim=1) * out.norm(dim=1)
    cosine = (ref * out).sum(dim=1) / norms.clamp_min(1e-300)
    both_zero = (ref.norm(dim=1) == 0) & (out.norm(dim=1) == 0)
    cosine = torch.where(both_zero, torch.ones_like(cosine), cosine)
    mean_cosine = float(cosine.mean()) if n else 1.0
    return {"mse": mse if math.isfinite(mse) else None,
            "cosine": mean_cosine if math.isfinite(mean_cosine) else None}


def scored_output(loaded, data, selector: str | None):
    """``(loaded, data)`` with the model's scored output chosen (``loaded.module`` a view returning it, see
    :func:`with_output`) and, when that output is not class scores, the labels dropped (fidelity and MSE/cosine
    only: accuracy needs class scores). One forward of an evaluation sample decides; a model that fails on it is
    left to :func:`~qtradeoff.core.loading.data.check_compatible` to report."""
    from qtradeoff.core import runtime

    module = loaded.module
    where = getattr(loaded, "path", None) or type(module).__name__
    try:
        with torch.no_grad(), runtime.running():
            value = module(data.eval_inputs[:1])
    except Exception:  # noqa: BLE001 - user model code: check_compatible says what failed
        return loaded, data
    selection = choose(value, selector, str(where))
    if selection.structured:
        loaded = dataclasses.replace(loaded, module=with_output(module, selection))
        value = select(value, selection.scored)
    if data.eval_labels is not None and not is_class_scores(value):
        from qtradeoff.core.loading.data import fingerprint

        data = dataclasses.replace(data, calib_labels=None, eval_labels=None, num_classes=None,
                                   fingerprint=fingerprint(data.calib_inputs, None, data.eval_inputs, None))
    return loaded, data


def probe(module: nn.Module, example: torch.Tensor) -> tuple[OutputInfo, ...]:
    """The tensor outputs of one forward of ``example`` (a batch); what ``inspect`` lists."""
    from qtradeoff.core import runtime

    with torch.no_grad(), runtime.running():
        return describe(module(example))
