"""Models with several named inputs (token ids + mask, image + tabular features): their specification
(``--input`` repeated or comma-separated, or the file's torch.export placeholders / TorchScript graph inputs),
the data that feeds them (a ``.npz``/``.pt``/safetensors dict with one array per input, or seeded synthetic
inputs), and the *packing* that lets every other part of the engine see one batch tensor.

Each sample's inputs are flattened and concatenated into one row of a float tensor (float32, or float64 when an
integer bound exceeds float32's exact integers); the model is seen through a view (:mod:`views`) whose forward
splits the row back into the named inputs, with their shapes and dtypes, and calls the model's forward with them
in order. Calibration, evaluation, latency and the real int8 kernels therefore run the model with the right
arguments without knowing it has several; the view's split and casts are a few cheap ops inside every timed
forward. Exports write the packed model and are refused for several inputs (see :func:`export_refusal`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from qtradeoff.core.loading import input_spec as spec_mod
from qtradeoff.core.loading import views
from qtradeoff.core.loading.input_spec import InputSpec, InputSpecError

_FLOAT32_EXACT = 1 << 24  # integers up to this are exact in float32


def split_specs(text: str) -> list[str]:
    """``--input`` text split at the commas outside brackets (``a:int64[1,8]<9, b:float32[1,4]``)."""
    parts, depth, current = [], 0, []
    for char in text or "":
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char in ",;" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_many(text: str) -> list[InputSpec]:
    """Every input spec in ``text`` (one, or several separated by commas outside brackets)."""
    specs = [spec_mod.parse(part) for part in split_specs(text)]
    if not specs:
        raise InputSpecError(f"--input {text!r} names no input; {spec_mod.SYNTAX}.")
    if len(specs) > 1:
        names = [spec.name for spec in specs]
        if "input" in names or len(set(names)) != len(names):
            raise InputSpecError(f"--input {text!r}: each of several inputs needs its own name, in the order the "
                                 "model's forward takes them (e.g. tokens:int64[1,32]<30000,mask:bool[1,32]).")
        if len({spec.batch for spec in specs}) != 1:
            raise InputSpecError(f"--input {text!r}: the inputs give different batch sizes; give all the same.")
    return specs


def from_module_many(module) -> list[InputSpec] | None:
    """The inputs the file states when it states two or more (torch.export placeholders with example values,
    a traced TorchScript graph with complete tensor types); None otherwise (one input is input_spec's job)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    if isinstance(module, torch.jit.ScriptModule):
        try:
            inputs = list(module.graph.inputs())[1:]
        except Exception:  # noqa: BLE001 - a script module without a forward graph
            return None
        specs = []
        for value in inputs:
            kind = value.type()
            sizes = kind.sizes() if hasattr(kind, "sizes") else None
            dtype = kind.dtype() if hasattr(kind, "dtype") else None
            if not sizes or dtype is None or any(s is None for s in sizes):
                return None
            specs.append(InputSpec(value.debugName().split(".")[0], dtype, tuple(int(s) for s in sizes),
                                   source="torchscript"))
        return specs if len(specs) > 1 else None
    if not hasattr(graph, "nodes"):
        return None
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    values = [node.meta.get("val") for node in placeholders]
    if len(placeholders) < 2 or not all(isinstance(v, torch.Tensor) and v.shape for v in values):
        return None
    specs = []
    for node, value in zip(placeholders, values, strict=True):
        static = isinstance(value.shape[0], int)
        shape = tuple(int(d) if isinstance(d, int) else int(getattr(d.node, "hint", None) or 1) for d in value.shape)
        specs.append(InputSpec(node.name, value.dtype, shape, source="export", static_batch=static))
    return specs


@dataclass(frozen=True)
class Packing:
    """How several inputs share one float row per sample (see the module docstring)."""

    specs: tuple[InputSpec, ...]

    @property
    def dtype(self) -> torch.dtype:
        wide = any(spec.is_integer and spec.high is not None and max(abs(spec.high), abs(spec.low or 0))
                   > _FLOAT32_EXACT for spec in self.specs)
        wide = wide or any(spec.dtype in (torch.float64, torch.int64) and spec.high is None and spec.is_integer
                           for spec in self.specs)
        return torch.float64 if wide or any(s.dtype == torch.float64 for s in self.specs) else torch.float32

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(math.prod(spec.sample_shape) for spec in self.specs)

    @property
    def batch(self) -> int:
        return self.specs[0].batch

    @property
    def static_batch(self) -> bool:
        return any(spec.static_batch for spec in self.specs)

    def text(self) -> str:
        return ",".join(spec.text() for spec in self.specs)

    def pack(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """One ``N × Σwidths`` tensor from the inputs (each ``N × sample_shape``)."""
        count = tensors[0].shape[0]
        return torch.cat([t.reshape(count, -1).to(self.dtype) for t in tensors], dim=1).contiguous()

    def unpack(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """The inputs, with their shapes and dtypes, from a packed batch."""
        out, start = [], 0
        for spec, width in zip(self.specs, self.widths, strict=True):
            piece = packed[:, start:start + width]
            if spec.is_integer:
                piece = piece.round() if spec.dtype != torch.bool else piece
            out.append(piece.reshape(-1, *spec.sample_shape).to(spec.dtype))
            start += width
        return out

    def to_dict(self) -> dict:
        return {"text": self.text(), "inputs": [spec.to_dict() for spec in self.specs], "packed": True,
                "packed_dtype": str(self.dtype).removeprefix("torch.")}


class _ScriptPacked(torch.nn.Module):
    """A TorchScript module taking one packed batch; its children are the script module's, by name."""

    def __init__(self, inner: torch.nn.Module, packing: Packing):
        super().__init__()
        object.__setattr__(self, "_inner", inner)  # not a child: the children below are its own, names unchanged
        for name, child in inner.named_children():
            self._modules[name] = child
        self.input_packing = packing

    def forward(self, packed):
        return self._inner(*self.input_packing.unpack(packed))


def packed_view(module, packing: Packing):
    """``module`` taking one packed batch; its forward gets the named inputs in order."""
    if isinstance(module, torch.jit.ScriptModule):
        return _ScriptPacked(module, packing)

    # an exported program checks its arguments in a forward pre-hook: run it on the unpacked inputs instead
    hooks = getattr(module, "_forward_pre_hooks", {})
    checks = [hook for hook in hooks.values() if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook"]

    def unpacked(forward, self, packed):
        inputs = tuple(packing.unpack(packed))
        for check in checks:
            check(self, inputs, {})
        return forward(self, *inputs)

    view = views.forward_view(module, unpacked, one_argument=True, input_packing=packing)
    if checks:
        kept = [(key, hook) for key, hook in hooks.items() if hook not in checks]
        view._forward_pre_hooks = type(hooks)(kept)
        view._forward_pre_hooks_with_kwargs = {key: value for key, value in
                                               getattr(module, "_forward_pre_hooks_with_kwargs", {}).items()
                                               if key in dict(kept)}
    return view


def packing_of(module) -> Packing | None:
    """The packing a view made by :func:`packed_view` carries (None for single-input models)."""
    return getattr(module, "input_packing", None)


def export_refusal(module) -> str | None:
    """Why a compressed model with several inputs is not exported (the file would take the packed row)."""
    packing = packing_of(module)
    if packing is None:
        return None
    return (f"the model takes several inputs ({packing.text()}); exports are written for single-input models "
            "only. Apply the chosen configuration's JSON to the model in your own code, or export a wrapper "
            "that takes one input.")


def synthetic_data(packing: Packing, *, calib_size: int | None = None, eval_size: int | None = None,
                   seed: int = 0):
    """Packed seeded synthetic inputs (disjoint draws for calibration and evaluation), marked synthetic."""
    from qtradeoff.core.loading.data import EvalData, fingerprint

    calib_count, eval_count = calib_size or spec_mod.SYNTHETIC_CALIB, eval_size or spec_mod.SYNTHETIC_EVAL
    calib = packing.pack([spec_mod.synthetic(s, calib_count, seed=seed + 2 * i)
                          for i, s in enumerate(packing.specs)])
    evaluation = packing.pack([spec_mod.synthetic(s, eval_count, seed=seed + 2 * i + 1)
                               for i, s in enumerate(packing.specs)])
    return EvalData(name=f"{spec_mod.SYNTHETIC_NAME} {packing.text()}", calib_inputs=calib, calib_labels=None,
                    eval_inputs=evaluation, eval_labels=None, num_classes=None,
                    fingerprint=fingerprint(calib, None, evaluation, None), synthetic=True,
                    input_spec=packing.to_dict())


def load_named(path: str | Path, packing: Packing, *, calib_size: int | None = None, eval_size: int | None = None,
               seed: int = 0):
    """EvalData from a dict file holding one array per named input (and optional labels), packed."""
    from qtradeoff.core.loading import _files, tabular
    from qtradeoff.core.loading import data as data_mod

    path = Path(path)
    budget = _files.memory_budget()
    try:
        size = _files.check_regular_file(path, budget, what="data")
        sniffed = _files.sniff(path, size, budget)
    except _files.FileCheckError as error:
        raise data_mod.DataLoadError(str(error)) from None
    if sniffed.kind in data_mod.TENSOR_FILE_KINDS:
        content = data_mod.read_tensor_content(path, sniffed)
    else:
        raise data_mod.DataLoadError(f"{path} is not a .npz/.pt/safetensors dict; a model with several inputs "
                                     f"({packing.text()}) needs one array per input name.")
    if not isinstance(content, dict):
        raise data_mod.DataLoadError(f"{path} holds a {type(content).__name__}, not a dict; save one array per "
                                     f"input name ({', '.join(s.name for s in packing.specs)}).")
    missing = [spec.name for spec in packing.specs if spec.name not in content]
    if missing:
        raise data_mod.DataLoadError(f"{path} has no array named {', '.join(missing)} (it has "
                                     f"{', '.join(sorted(content)) or 'none'}); name the arrays as --input does.")
    tensors = []
    for spec in packing.specs:
        tensor = content[spec.name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape[1:]) != tuple(spec.sample_shape):
            shape = tuple(tensor.shape[1:]) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise data_mod.DataLoadError(f"{path}: '{spec.name}' has samples of shape {shape} but --input "
                                         f"{spec.text()} says {tuple(spec.sample_shape)}; fix one of them.")
        tensor = tensor.to(spec.dtype)
        if spec.is_integer and spec.high is not None and tensor.numel() and (
                int(tensor.min()) < (spec.low or 0) or int(tensor.max()) >= spec.high):
            raise data_mod.DataLoadError(f"{path}: '{spec.name}' holds values outside "
                                         f"[{spec_mod._num(spec.low or 0)}, {spec_mod._num(spec.high)}); fix the "
                                         "bound or the data.")
        tensors.append(tensor)
    counts = {int(t.shape[0]) for t in tensors}
    if len(counts) != 1:
        raise data_mod.DataLoadError(f"{path}: the input arrays hold different numbers of samples ({sorted(counts)})"
                                     "; give every input one row per sample.")
    packed = packing.pack(tensors)
    labels = next((content[key] for key in tabular.LABEL_KEYS if key in content), None)
    if labels is not None:
        labels = labels.reshape(-1).long() if labels.ndim <= 2 and not labels.is_floating_point() else None
        if labels is not None and labels.shape[0] != packed.shape[0]:
            labels = None
    data = data_mod._split(path.stem, packed, labels, None, calib_size, eval_size, seed, path)
    return dataclasses.replace(data, input_spec=packing.to_dict())


def vocabulary(module) -> int | None:
    """The smallest Embedding table's row count in ``module`` (an exported program's ``aten.embedding`` weights
    included): the bound token ids must stay under when the file gives none."""
    sizes = [sub.num_embeddings for sub in module.modules() if isinstance(sub, torch.nn.Embedding)]
    graph = getattr(module, "graph", None)
    if not sizes and graph is not None and hasattr(graph, "nodes") and not isinstance(module, torch.jit.ScriptModule):
        for node in graph.nodes:
            if node.op == "call_function" and "embedding" in str(node.target) and node.args:
                value = getattr(node.args[0], "meta", {}).get("val")
                if isinstance(value, torch.Tensor) and value.ndim == 2:
                    sizes.append(int(value.shape[0]))
    return min(sizes) if sizes else None


def with_bounds(specs: Sequence[InputSpec], module) -> list[InputSpec]:
    """``specs`` with the integer inputs the file left unbounded bounded by the model's vocabulary; an
    InputSpecError saying what to pass when the model has no Embedding to read it from."""
    out = []
    for spec in specs:
        if spec.is_integer and spec.dtype != torch.bool and spec.high is None:
            vocab = vocabulary(module)
            if vocab is None:
                raise InputSpecError(f"the file says input {spec.name} is {spec.text()} but not its range; pass "
                                     f"--input with its bound, e.g. {spec.text()}<1000.")
            spec = dataclasses.replace(spec, low=0.0, high=float(vocab))
        out.append(spec)
    return out


def specs_for(text: str | None, module) -> list[InputSpec] | None:
    """The several inputs ``text`` (``--input``) or the file states; None for a single-input model."""
    specs = parse_many(text) if text else from_module_many(module)
    return specs if specs is not None and len(specs) > 1 else None


def load(spec, loaded, sizes: dict):
    """``(loaded, data)`` for an EngineSpec whose model takes several inputs, or None when it takes one."""
    specs = specs_for(spec.input_spec, loaded.module)
    if specs is None:
        return None
    if isinstance(loaded.module, torch.jit.ScriptModule):
        from qtradeoff.core.loading.model_io import ModelLoadError

        raise ModelLoadError(f"{loaded.path} is TorchScript with several inputs, which 'inspect' lists but the "
                             "engine cannot simulate yet; save the model as a torch.export program (.pt2) or a "
                             "state_dict with --architecture instead.")
    packing = Packing(tuple(with_bounds(specs, loaded.module)))
    module = packed_view(loaded.module, packing)
    stated = from_module_many(loaded.module) or ()  # an exported program fixes its batch whatever --input says
    static = [s.batch for s in (*packing.specs, *stated) if s.static_batch]
    if static:
        module = spec_mod.fixed_batch_view(module, static[0])
    loaded = dataclasses.replace(loaded, module=module, input_shape=None)
    if spec.data is None:
        data = synthetic_data(packing, **sizes)
    else:
        data = load_named(spec.data, packing, **sizes)
    return loaded, data
