"""Opening ONNX model files: checks for hostile files, then conversion to a torch.fx module the engine compresses.

Approach (issue 14): an ONNX file is converted to PyTorch with ``onnx2torch`` (a torch.fx ``GraphModule`` whose
Conv/Gemm nodes become ``nn.Conv2d``/``nn.Linear``), so the *same* engine quantizes, prunes, calibrates and times it
as any PyTorch model, and every figure (accuracy with its CI, counted bytes, latency) means the same thing for both
formats. The alternative, evaluating through ONNX Runtime's own quantization, would give a second, differently
defined set of numbers (its own calibration, op coverage and rounding), no per-layer sensitivity from our engine and
no pruning, so the trade-off curves of an ONNX file and of the same model saved by PyTorch would not be comparable.
ONNX Runtime is used instead as a second *timed runtime* and as the target of the ``onnx`` export.

``onnx2torch`` imports torchvision for two detection operators; it is imported after :mod:`tvcompat` has declared
the missing operator schemas, so it loads on the CPU torch this project pins.

ONNX is protobuf (no code runs on load), but a file is refused in one sentence naming it when:

- it is over the protobuf limit of 2 GiB (such models must keep their weights in external data);
- it is truncated or not a protobuf ``ModelProto``;
- an initializer's external data points outside the model's folder (absolute path, ``..``, or a symlink out),
  or the external file is missing or shorter than the data it should hold;
- it uses an operator the converter does not implement (the operators are named).

The input shape comes from the graph input (batch dimension first); the bundled-data preprocessing, when the file
was written for it, from the ``metadata_props`` entry ``qtradeoff.preprocessing`` (JSON, as in the sample manifest).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

from torch import nn

from qtradeoff.core import tvcompat
from qtradeoff.core.errors import InputError

PROTOBUF_LIMIT = 2 * 1024**3  # protobuf refuses to parse a single message of 2 GiB or more
PREPROCESSING_KEY = "qtradeoff.preprocessing"  # metadata_props entry: the digits preprocessing as JSON
_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


class OnnxLoadError(InputError):
    """An ONNX file that cannot be opened; the message names the file and what to do."""


@functools.cache
def _onnx2torch():
    tvcompat.torchvision()  # declare torchvision's missing C++ op schemas before onnx2torch imports torchvision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import onnx2torch
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
    return onnx2torch, frozenset((key.domain, key.operation_type) for key in _CONVERTER_REGISTRY)


def _onnx():
    try:
        import onnx
    except ImportError:
        return None
    return onnx


def read_model(path: Path, size: int):
    """Parse ``path`` as an ONNX ModelProto with its external data, refusing hostile or damaged files."""
    onnx = _onnx()
    if onnx is None:
        raise OnnxLoadError(f"{path} is an ONNX model but the onnx package is not installed; "
                            "install qtradeoff[onnx] to open it.")
    if size >= PROTOBUF_LIMIT:
        raise OnnxLoadError(
            f"{path} is over the 2 GiB protobuf limit; save it with its weights as external data "
            "(onnx.save(..., save_as_external_data=True)) and open that file."
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ValueError…
        raise OnnxLoadError(
            f"{path} is not a readable ONNX model ({_short(error)}); it may be truncated or damaged, export it again."
        ) from None
    if not model.graph.node and not model.graph.initializer:
        raise OnnxLoadError(f"{path} is not a readable ONNX model (its graph is empty); export it again.")
    _load_external_data(path, model)
    return model


def _load_external_data(path: Path, model) -> None:
    """Read each external initializer from a file inside the model's folder; refuse any that leaves it."""
    folder = path.resolve().parent
    for tensor in _all_tensors(model):
        if tensor.data_location != _EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        target = (folder / location).resolve()
        inside = target == folder or folder in target.parents
        if not location or os.path.isabs(location) or not inside:
            raise OnnxLoadError(
                f"{path}: tensor {tensor.name!r} takes its data from {location!r}, outside the model's folder; "
                "refusing it — keep external data files next to the model."
            )
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
            with open(target, "rb") as handle:
                handle.seek(offset)
                data = handle.read() if length is None else handle.read(length)
        except (OSError, ValueError) as error:
            raise OnnxLoadError(
                f"{path}: external data {location!r} of tensor {tensor.name!r} cannot be read ({_short(error)}); "
                "copy it next to the model."
            ) from None
        if length is not None and len(data) != length:
            raise OnnxLoadError(
                f"{path}: external data {location!r} is shorter than tensor {tensor.name!r} needs; copy it again."
            )
        tensor.raw_data = data
        tensor.data_location = 0
        del tensor.external_data[:]


def _all_tensors(model):
    from onnx.external_data_helper import _get_all_tensors

    yield from _get_all_tensors(model)


def unsupported_operators(model) -> list[str]:
    """Operator types of ``model`` the converter has no implementation for (any opset), sorted."""
    _, known = _onnx2torch()
    used = {(node.domain or "", node.op_type) for node in model.graph.node}
    return sorted(f"{domain}.{op}" if domain else op for domain, op in used if (domain, op) not in known)


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value_info.type.tensor_type.shape.dim]


def convert(path: Path, size: int) -> tuple[nn.Module, int | None, dict]:
    """Load and convert ``path``; returns (module, num_classes or None, metadata with ``input_shape``)."""
    model = read_model(path, size)
    missing = unsupported_operators(model)
    quantized = sorted({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"} & set(missing))
    if quantized:
        raise OnnxLoadError(
            f"{path} is already quantized ({', '.join(quantized)} nodes); open the float model it was made from."
        )
    if missing:
        raise OnnxLoadError(
            f"{path} uses ONNX operators qtradeoff cannot convert ({', '.join(missing)}); "
            "export the model without them."
        )
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise OnnxLoadError(f"{path} has {len(inputs)} graph inputs; qtradeoff needs a model with one input tensor.")
    onnx2torch, _ = _onnx2torch()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch.convert(model)
    except NotImplementedError as error:
        raise OnnxLoadError(f"{path} uses an ONNX operator qtradeoff cannot convert ({_short(error)}); "
                            "export the model without it.") from None
    except Exception as error:  # noqa: BLE001 - the converter raises anything on malformed graphs
        raise OnnxLoadError(f"{path} is an ONNX model that could not be converted ({_short(error)}); "
                            "export it again (opset 11-20, batch dimension first).") from None
    readable_layer_names(module, model)
    metadata: dict = {"opset": str(max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                                       default=0))}
    props = {prop.key: prop.value for prop in model.metadata_props}
    if PREPROCESSING_KEY in props:
        metadata["preprocessing"] = props[PREPROCESSING_KEY]
    shape = _dims(inputs[0])[1:]
    if shape and all(d is not None for d in shape):
        metadata["input_shape"] = json.dumps(shape)
    outputs = [_dims(value) for value in model.graph.output]
    num_classes = outputs[0][-1] if len(outputs) == 1 and len(outputs[0]) == 2 else None
    return module, num_classes, metadata


def _converter_name(node) -> str:
    """The module name onnx2torch gives ``node`` (before its de-duplicating suffix): the node's name, or its op type
    when unnamed, after its domain, with dots as slashes (torch module names cannot hold dots)."""
    return (f"{node.domain}/" + (node.name.replace(".", "/") or node.op_type)).lstrip("/")


def _scope_path(node) -> tuple[str, str]:
    """(module path, op) of ``node`` from its name: torch.onnx names a node by its module scopes,
    ``/features/features.1/block/block.0/block.0.0/Conv``, each scope the full dotted path of that module inside
    its parent, so ``features.1.block.0.0`` and ``Conv``. Names of other exporters keep their components."""
    parts = [part for part in (node.name or node.op_type).split("/") if part]
    if node.domain:
        parts.insert(0, node.domain)
    *scopes, op = parts or [node.op_type]
    path: list[str] = []
    for scope in scopes:
        if path and scope.startswith(path[-1] + "."):
            path[-1] = scope  # "block" then "block.0": the same branch, one level deeper
        else:
            path.append(scope)
    return ".".join(path), op


def readable_layer_names(module: nn.Module, model) -> None:
    """Rename ``module``'s submodules (an onnx2torch GraphModule, in place) from the converter's slash paths
    (``features/features/1/block/block/0/block/0/0/Conv``) to the PyTorch module paths the nodes came from
    (``features.1.block.0.0``), so that a model exported by ``torch.onnx.export`` shows and takes in a
    configuration the layer names of its PyTorch source. A name whose module path is shared with another node or
    holds other nodes' paths keeps its op (``features.1.block.1.Mul``). Left as converted if anything does not
    match (another converter version, clashing names)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return
    counts: dict[str, int] = {}
    scoped: dict[str, tuple[str, str]] = {}
    for node in model.graph.node:  # onnx2torch's de-duplication: the k-th repeat of a name gets "_k"
        name = _converter_name(node)
        seen = counts.get(name, 0)
        counts[name] = seen + 1
        scoped[name + (f"_{seen}" if seen else "")] = _scope_path(node)
    calls = [node for node in graph.nodes if node.op == "call_module"]
    if not calls or any(node.target not in scoped for node in calls):
        return
    paths = [scoped[node.target][0] for node in calls]
    uses = {path: paths.count(path) for path in paths}
    prefixes = {".".join(path.split(".")[:end]) for path in paths for end in range(1, path.count(".") + 1)}
    names = [path if path and uses[path] == 1 and path not in prefixes else
             ".".join(filter(None, (path, scoped[node.target][1]))) for node, path in zip(calls, paths, strict=True)]
    taken = {name for name, _ in module.named_children()} - {node.target for node in calls}
    heads = {name.split(".")[0] for name in names}
    clash = len(set(names)) != len(names) or heads & taken or any(
        ".".join(name.split(".")[:end]) in names for name in names for end in range(1, name.count(".") + 1))
    if clash:
        return
    for node, name in zip(calls, names, strict=True):
        child = module.get_submodule(node.target)
        delattr(module, node.target)
        module.add_submodule(name, child)
        node.target = name
    module.recompile()


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
