"""Import torchvision's pure-Python parts when its C++ extension cannot load.

The torchvision wheel on the package registry is a CUDA build; against the CPU
torch we pin, its C++ ops fail to register and ``import torchvision`` raises
``operator torchvision::nms does not exist``.  Declaring the missing operator
schemas first lets models, transforms and ImageFolder import.  Every import of
torchvision in this project goes through :func:`torchvision`.
"""

from __future__ import annotations

import importlib
import types

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas


def _declare_missing_ops() -> None:
    global _library
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing:
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")  # noqa: TOR901 - schema-only fragment
    for name in missing:
        _library.define(_SCHEMAS[name])


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def torchvision() -> types.ModuleType:
    """Return the torchvision module, declaring missing op schemas only if it fails to import."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    _declare_missing_ops()
    # The failed import left half-initialised submodules behind; drop them and retry.
    import sys

    for module_name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module_name]
    return importlib.import_module("torchvision")


def models() -> types.ModuleType:
    """Return ``torchvision.models``."""
    torchvision()
    return importlib.import_module("torchvision.models")
