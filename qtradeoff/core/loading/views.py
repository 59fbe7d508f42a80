"""Views of a model with a different ``forward`` and the same layers: the view shares the base's parameters,
children and hooks under the same names (so configurations, inventories and caches name layers as before), and
the base is never mutated. Used to pick one output (``outputs``) and to run a fixed-batch exported program at any
batch size (``input_spec``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# wrap(forward, self, *args, **kwargs): the view's forward, given the base class's unbound forward
Wrap = Callable[..., object]


def forward_view(module: nn.Module, wrap: Wrap, *, one_argument: bool = False, **attributes) -> nn.Module:
    """``module`` seen through ``wrap``; ``attributes`` are set on the view (and on its deep copies).
    ``one_argument``: the view's forward takes exactly one tensor (so that torch.fx can trace it)."""
    base = type(module)
    forward = base.forward

    if one_argument:
        def view_forward(self, x):
            return wrap(forward, self, x)
    else:
        def view_forward(self, *args, **kwargs):
            return wrap(forward, self, *args, **kwargs)

    namespace = {"forward": view_forward, "__module__": base.__module__, "__qualname__": base.__qualname__}
    base_deepcopy = getattr(base, "__deepcopy__", None)
    if base_deepcopy is not None:  # GraphModule rebuilds a plain GraphModule on deepcopy: view the copy again
        def view_deepcopy(self, memo):
            return forward_view(base_deepcopy(self, memo), wrap, one_argument=one_argument, **attributes)

        namespace["__deepcopy__"] = view_deepcopy
    cls = type(base.__name__, (base,), namespace)
    view = object.__new__(cls)
    view.__dict__.update(module.__dict__)  # shallow: the same parameter, buffer, child and hook tables' contents
    for table in ("_parameters", "_buffers", "_modules"):
        if table in view.__dict__:
            view.__dict__[table] = dict(view.__dict__[table])  # own tables: replacing a child leaves the base alone
    for name, value in attributes.items():
        object.__setattr__(view, name, value)
    return view
