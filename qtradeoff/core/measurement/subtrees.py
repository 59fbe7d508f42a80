"""Int8 conversion of the parts of a model FX can trace, when the whole model cannot (issue 16).

A data-dependent ``if`` in a model's top ``forward`` stops FX's symbolic tracing of the whole model, and the real
model used to fall back to fp32 eager for every layer. Here the model's submodules are tried top-down, level by
level: each submodule that holds layers planned for int8 is converted on its own (its calibration inputs are
captured from one fp32 pass of the model), and one that does not convert is replaced by its children's
attempts. The largest traceable subtrees end up converted; the glue code between them (the ``if``) stays eager
fp32. A converted subtree takes and returns float tensors, so it drops in where the submodule was.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from qtradeoff.core import runtime

MAX_ATTEMPTS = 64  # submodule conversions tried at most (each costs a deep copy and a calibration)


class _Capture:
    """Forward pre-hook keeping a submodule's single tensor input over the calibration pass."""

    def __init__(self):
        self.inputs: list[torch.Tensor] = []
        self.usable = True

    def __call__(self, module, args):
        if len(args) == 1 and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            self.inputs.append(args[0].detach())
        else:
            self.usable = False


def _capture(model: nn.Module, names: list[str], calib_inputs: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    captures = {name: _Capture() for name in names}
    handles = [model.get_submodule(name).register_forward_pre_hook(capture) for name, capture in captures.items()]
    try:
        with torch.no_grad(), runtime.running():
            for start in range(0, len(calib_inputs), batch):
                model(calib_inputs[start:start + batch])
    finally:
        for handle in handles:
            handle.remove()
    found = {}
    for name, capture in captures.items():
        if capture.usable and capture.inputs and len({t.shape[1:] for t in capture.inputs}) == 1:
            found[name] = torch.cat(capture.inputs)
    return found


def _relative(names: Iterable[str], root: str) -> list[str]:
    return [name[len(root) + 1:] for name in names if name.startswith(root + ".")]


def convert_by_subtrees(model: nn.Module, settings: Mapping, static: list[str], dynamic: list[str],
                        calib_inputs: torch.Tensor, calib_batch: int, convert: Callable, layers: Iterable[str]
                        ) -> tuple[nn.Module, list[str]] | None:
    """A copy of ``model`` whose largest convertible subtrees holding ``static``/``dynamic`` layers are converted
    by ``convert`` (realquant's FX conversion, same signature), and their names; None when none converted."""
    from qtradeoff.core.measurement.realquant import _checked, _set_submodule

    model = copy.deepcopy(model)
    wanted = set(static) | set(dynamic)
    layers = set(layers)
    level = [name for name, _ in model.named_children()]
    converted: list[str] = []
    attempts = 0
    while level and attempts < MAX_ATTEMPTS:
        level = [name for name in level if name in wanted or any(w.startswith(name + ".") for w in wanted)]
        inputs = _capture(model, level, calib_inputs, calib_batch) if level else {}
        following = []
        for name in level:
            sub = model.get_submodule(name)
            done = None
            if name in inputs and attempts < MAX_ATTEMPTS:
                attempts += 1
                done = _convert_one(sub, name, settings, static, dynamic, layers, inputs[name], calib_batch, convert)
            if done is not None:
                _set_submodule(model, name, done)
                converted.append(name)
            else:
                following += [f"{name}.{child}" for child, _ in sub.named_children()]
        level = following
    if not converted:
        return None
    try:
        return _checked(model, calib_inputs), converted
    except Exception:  # noqa: BLE001 - the pieces do not fit together: the caller falls back as before
        return None


def _convert_one(sub: nn.Module, root: str, settings: Mapping, static: list[str], dynamic: list[str],
                 layers: set[str], inputs: torch.Tensor, calib_batch: int, convert: Callable) -> nn.Module | None:
    """``sub`` (at ``root``) converted and checked on one of its calibration inputs, or None."""
    static_rel, dynamic_rel = _relative(static, root), _relative(dynamic, root)
    if not (static_rel or dynamic_rel):
        return None  # a bare layer (its converted graph would hide its module class) or nothing planned
    local = {rel: settings[f"{root}.{rel}"] for rel in _relative(layers, root)}
    attempts = [{}]
    if static_rel:
        attempts.append({"quantize_functional_ops": True, "keep_float": set(local) - set(static_rel)})
    for options in attempts:
        try:
            done = convert(sub, local, static_rel, dynamic_rel, inputs, calib_batch, **options)
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()), runtime.running():
                done(inputs[:2])
            return done
        except Exception:  # noqa: BLE001 - this subtree does not trace or convert: its children are tried
            continue
    return None
