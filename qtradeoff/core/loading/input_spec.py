"""What a single-input model takes: name, dtype, shape with the batch dimension first, and the range of values
(an exclusive upper bound for integer token ids), written ``tokens:int64[1,32]<30000`` or
``x:float32[1,3,64,64]`` (or ``x:float32[1,3,64,64]-1..1``); read from the model file where it says (a
torch.export program's placeholders, a traced TorchScript graph's input types); and the seeded synthetic inputs
drawn from it when there is no data (whose figures are *fidelity on synthetic inputs*).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree

from qtradeoff.core.errors import InputError
from qtradeoff.core.loading import views

# One synthetic sample of at most this many values (1 GiB of float32), as cli_args.shape bounds a typed shape.
MAX_SAMPLE_ELEMENTS = 1 << 28
SYNTHETIC_CALIB = 64
SYNTHETIC_EVAL = 256
SYNTHETIC_NAME = "synthetic inputs"

_DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64, "int64": torch.int64, "long": torch.int64, "int32": torch.int32,
           "int": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SPEC = re.compile(rf"^\s*(?:(?P<name>[A-Za-z_][\w.]*)\s*:)?\s*(?P<dtype>[a-z0-9]+)\s*\[(?P<shape>[^\]]*)\]\s*"
                   rf"(?:<\s*(?P<high>{_NUMBER})|(?P<low>{_NUMBER})\s*\.\.\s*(?P<top>{_NUMBER}))?\s*$")


class InputSpecError(InputError):
    """An input specification that cannot be read or used; one sentence showing the syntax."""


SYNTAX = "write it like tokens:int64[1,32]<30000 or x:float32[1,3,64,64] (optionally -1..1 for a float range)"


@dataclass(frozen=True)
class InputSpec:
    """One model input. ``shape`` includes the batch dimension (``shape[0]``, the batch size the file fixes, or
    1). Integers are drawn from ``[low, high)`` (``high`` required for ids), floats uniformly from ``[low, high)``
    when a range is given, else from a standard normal."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    low: float | None = None
    high: float | None = None
    source: str = "user"  # user | export | torchscript
    static_batch: bool = False  # the file fixes the batch size (an exported program without a dynamic batch)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def is_integer(self) -> bool:
        return not (self.dtype.is_floating_point or self.dtype.is_complex)

    def text(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        bounds = ""
        if self.high is not None:
            bounds = f"<{_num(self.high)}" if self.low in (None, 0) else f"{_num(self.low)}..{_num(self.high)}"
        return f"{self.name}:{dtype}[{','.join(map(str, self.shape))}]{bounds}"

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype).removeprefix("torch."), "shape": list(self.shape),
                "low": self.low, "high": self.high, "source": self.source, "text": self.text()}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse(text: str) -> InputSpec:
    """An :class:`InputSpec` from ``--input`` text; InputSpecError naming the problem otherwise."""
    match = _SPEC.match(text or "")
    if match is None:
        raise InputSpecError(f"--input {text!r} is not an input specification; {SYNTAX}.")
    dtype = _DTYPES.get(match["dtype"])
    if dtype is None:
        raise InputSpecError(f"--input {text!r}: unknown dtype {match['dtype']!r}; use one of "
                             f"{', '.join(sorted(set(_DTYPES)))}.")
    try:
        shape = tuple(int(part) for part in match["shape"].split(",") if part.strip())
    except ValueError:
        shape = ()
    if len(shape) < 1 or min(shape) < 1:
        raise InputSpecError(f"--input {text!r}: the shape must be positive integers with the batch dimension "
                             f"first; {SYNTAX}.")
    if math.prod(shape[1:]) > MAX_SAMPLE_ELEMENTS:
        raise InputSpecError(f"--input {text!r}: {math.prod(shape[1:]):,} values per sample is more than "
                             f"{MAX_SAMPLE_ELEMENTS:,}; check the shape.")
    low = high = None
    if match["high"] is not None:
        low, high = 0.0, float(match["high"])
    elif match["top"] is not None:
        low, high = float(match["low"]), float(match["top"])
    integer = not dtype.is_floating_point
    if high is not None and not high > low:
        raise InputSpecError(f"--input {text!r}: the range is empty (upper bound {_num(high)} is not above "
                             f"{_num(low)}).")
    if integer and dtype != torch.bool and high is None:
        raise InputSpecError(f"--input {text!r}: integer inputs need their exclusive upper bound (the vocabulary "
                             f"size of token ids), e.g. {match['name'] or 'tokens'}:{match['dtype']}"
                             f"[{match['shape']}]<30000.")
    if integer and high is not None and (not low.is_integer() or not high.is_integer()):
        raise InputSpecError(f"--input {text!r}: an integer input's bounds must be integers.")
    return InputSpec(match["name"] or "input", dtype, shape, low, high)


def synthetic(spec: InputSpec, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` samples drawn from ``spec`` (seeded: the same spec and seed give the same tensor)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (count, *spec.sample_shape)
    if spec.dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if spec.is_integer:
        if spec.high is None:
            raise InputSpecError(f"input {spec.name} is {spec.text()} without an upper bound, so its ids cannot be "
                                 f"drawn; pass --input with its bound, e.g. {spec.text()}<1000.")
        return torch.randint(int(spec.low or 0), int(spec.high), shape, generator=generator, dtype=torch.int64
                             ).to(spec.dtype)
    if spec.high is not None:
        values = torch.rand(shape, generator=generator) * (spec.high - spec.low) + spec.low
    else:
        values = torch.randn(shape, generator=generator)
    return values.to(spec.dtype)


def from_module(module) -> InputSpec | None:
    """The input the model file states, when it states one input: a torch.export program's placeholder (shape
    and dtype of its example; the batch size it was exported with) or a traced TorchScript graph's complete
    tensor type. None when the file says nothing usable (or has several inputs)."""
    found = _from_fx(module)
    if found is None:
        found = _from_torchscript(module)
    return found


def _from_fx(module) -> InputSpec | None:
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes") or isinstance(module, torch.jit.ScriptModule):
        return None
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    values = [node.meta.get("val") for node in placeholders]
    tensors = [(node, v) for node, v in zip(placeholders, values, strict=True) if isinstance(v, torch.Tensor)]
    if len(tensors) != 1 or len(placeholders) != 1:
        return None
    node, value = tensors[0]
    if not value.shape:
        return None
    static = [isinstance(d, int) for d in value.shape]
    # a symbolic (dynamic) dimension has an example size only; the batch is static when dim 0 is a plain int
    shape = tuple(int(d) if isinstance(d, int) else int(getattr(d.node, "hint", None) or 1) for d in value.shape)
    return InputSpec(node.name, value.dtype, shape, source="export", static_batch=static[0])


def _from_torchscript(module) -> InputSpec | None:
    if not isinstance(module, torch.jit.ScriptModule):
        return None
    try:
        inputs = list(module.graph.inputs())[1:]  # the first is self
    except Exception:  # noqa: BLE001 - a script module without a forward graph
        return None
    if len(inputs) != 1:
        return None
    kind = inputs[0].type()
    sizes = kind.sizes() if hasattr(kind, "sizes") else None
    dtype = kind.dtype() if hasattr(kind, "dtype") else None
    if not sizes or dtype is None or any(s is None for s in sizes):
        return None
    return InputSpec(inputs[0].debugName().split(".")[0], dtype, tuple(int(s) for s in sizes), source="torchscript")


def fixed_batch_view(module, batch: int):
    """A view of an exported program fixed at ``batch`` samples that runs any batch: in slices of ``batch``, the
    last one padded by repeating its final sample (those outputs are dropped), outputs joined along dim 0."""

    def batched(forward, self, x, *args, **kwargs):
        count = x.shape[0]
        if count == batch:
            return forward(self, x, *args, **kwargs)
        pieces = []
        for start in range(0, count, batch):
            chunk = x[start:start + batch]
            real = chunk.shape[0]
            if real < batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(batch - real, *chunk.shape[1:])])
            out = forward(self, chunk, *args, **kwargs)
            pieces.append(pytree.tree_map(lambda t, n=real: t[:n] if isinstance(t, torch.Tensor) else t, out))
        leaves, spec = zip(*(pytree.tree_flatten(piece) for piece in pieces), strict=True)
        joined = [torch.cat(parts) if isinstance(parts[0], torch.Tensor) else parts[0] for parts in zip(*leaves,
                                                                                                     strict=True)]
        return pytree.tree_unflatten(joined, spec[0])

    return views.forward_view(module, batched, static_batch=batch)


def synthetic_data(spec: InputSpec, *, calib_size: int | None = None, eval_size: int | None = None, seed: int = 0):
    """EvalData of seeded samples drawn from ``spec`` (disjoint draws for calibration and evaluation), unlabelled
    and marked synthetic: its figures are fidelity against fp32 on synthetic inputs."""
    from qtradeoff.core.loading.data import EvalData, fingerprint

    calib = synthetic(spec, calib_size or SYNTHETIC_CALIB, seed=seed)
    evaluation = synthetic(spec, eval_size or SYNTHETIC_EVAL, seed=seed + 1)
    return EvalData(name=f"{SYNTHETIC_NAME} {spec.text()}", calib_inputs=calib, calib_labels=None,
                    eval_inputs=evaluation, eval_labels=None, num_classes=None,
                    fingerprint=fingerprint(calib, None, evaluation, None), synthetic=True, input_spec=spec.to_dict())


def fit_data(data, spec: InputSpec):
    """``data`` with its inputs cast to ``spec``'s dtype (token ids stored as floats become integers again); an
    InputSpecError when the shapes differ."""
    import dataclasses

    from qtradeoff.core.loading.data import fingerprint

    if tuple(data.input_shape) != tuple(spec.sample_shape):
        raise InputSpecError(f"{data.name} has samples of shape {tuple(data.input_shape)} but --input "
                             f"{spec.text()} says {tuple(spec.sample_shape)}; fix one of them.")
    if data.eval_inputs.dtype == spec.dtype:
        return dataclasses.replace(data, input_spec=spec.to_dict())
    calib, evaluation = data.calib_inputs.to(spec.dtype), data.eval_inputs.to(spec.dtype)
    if spec.is_integer and spec.high is not None:
        for tensor in (calib, evaluation):
            if tensor.numel() and (int(tensor.min()) < (spec.low or 0) or int(tensor.max()) >= spec.high):
                raise InputSpecError(f"{data.name} holds values outside [{_num(spec.low or 0)}, {_num(spec.high)})"
                                     f" that --input {spec.text()} allows; fix the bound or the data.")
    return dataclasses.replace(data, calib_inputs=calib, eval_inputs=evaluation, input_spec=spec.to_dict(),
                               fingerprint=fingerprint(calib, data.calib_labels, evaluation, data.eval_labels))
