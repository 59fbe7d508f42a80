"""TorchScript files of registry architectures, rebuilt as the eager modules they were scripted from (issue 16).

A TorchScript module keeps its submodules' attributes in C++: the engine can neither hook its activations nor
hand it to torch.ao's FX converter, so a scripted resnet18 ran 0 of its 21 layers on int8 kernels. When a scripted
module is structurally a registry architecture — the same class (``original_name``) at every submodule path and
the same tensor names and shapes — it is rebuilt from the registry, its tensors loaded, and accepted only if its
outputs equal the scripted module's on a probe batch. Anything else keeps the scripted module (as before) and says
why. The probe runs the file's own compiled code, which the user trusted to load it.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

PROBE_BATCH = 2
RTOL, ATOL = 1e-4, 1e-5  # same operations in the same order: only summation order may differ


class Rebuilt(NamedTuple):
    module: nn.Module | None  # the eager module, or None when the scripted one stays
    architecture: str | None
    num_classes: int | None
    note: str  # why it was not rebuilt, when a registry architecture matched its tensors ("" otherwise)


def _class_names(module: nn.Module) -> dict[str, str]:
    names = {}
    for path, sub in module.named_modules():
        name = getattr(sub, "original_name", None) if isinstance(sub, torch.jit.ScriptModule) else None
        names[path] = name or type(sub).__name__
    return names


def _probe_shapes(module: nn.Module, input_shape: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    from qtradeoff.core.loading.inventory import guess_input_shape

    shapes = [tuple(input_shape)] if input_shape else []
    guessed = guess_input_shape(module)
    if guessed is not None:
        if len(guessed) == 3:  # small images first: the probe costs two forwards, ~50x cheaper than at 224
            shapes += [(guessed[0], 32, 32), (guessed[0], 64, 64)]
        shapes.append(guessed)
    return list(dict.fromkeys(shapes))


def _same_outputs(scripted: nn.Module, eager: nn.Module, shapes: list[tuple[int, ...]]) -> str:
    """"" when both give the same outputs on a seeded probe of the first shape both accept, else why not."""
    generator = torch.Generator().manual_seed(0)
    for shape in shapes:
        probe = torch.randn((PROBE_BATCH, *shape), generator=generator)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = scripted(probe)
        except Exception:  # noqa: BLE001 - not this input shape: try the next
            continue
        try:
            with torch.no_grad():
                got = eager(probe)
        except Exception as error:  # noqa: BLE001
            return f"the rebuilt module fails where the scripted one runs ({type(error).__name__})"
        if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)):
            return "its outputs are not tensors"
        if expected.shape != got.shape or not torch.allclose(expected, got, rtol=RTOL, atol=ATOL):
            return "the rebuilt module's outputs differ from the scripted one's"
        return ""
    return "no probe input shape runs it"


def rebuild_eager(scripted: nn.Module, input_shape: tuple[int, ...] | None = None) -> Rebuilt:
    """The eager registry module ``scripted`` was made from (see the module docstring), or why it stays."""
    from qtradeoff.core.loading import model_io

    if not isinstance(scripted, torch.jit.ScriptModule):
        return Rebuilt(None, None, None, "")
    try:
        state = {key: value for key, value in scripted.state_dict().items() if isinstance(value, torch.Tensor)}
    except Exception:  # noqa: BLE001 - exotic scripted modules
        return Rebuilt(None, None, None, "")
    match = model_io.match_architecture(state) if state else None
    if match is None:
        return Rebuilt(None, None, None, "")
    name, num_classes = match
    why = f"TorchScript module kept as loaded, though its tensors match {name}"
    try:
        eager = model_io._build_assigned(name, num_classes, state)
        if eager is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eager = model_io.architectures.build(name, **({} if num_classes is None else
                                                              {"num_classes": num_classes}))
            eager.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001
        return Rebuilt(None, name, num_classes, f"{why}: rebuilding it failed ({type(error).__name__})")
    eager.eval()
    scripted_classes, eager_classes = _class_names(scripted), _class_names(eager)
    if scripted_classes != eager_classes:
        differing = next((p for p in scripted_classes if scripted_classes[p] != eager_classes.get(p)), "?")
        return Rebuilt(None, name, num_classes, f"{why}: its structure differs (at {differing or 'the root'})")
    problem = _same_outputs(scripted, eager, _probe_shapes(eager, input_shape))
    if problem:
        return Rebuilt(None, name, num_classes, f"{why}: {problem}")
    return Rebuilt(eager, name, num_classes, "")
