"""The model's graph as plain data: the compressible layers and the glue ops between them (adds, pooling,
flatten, ...) as a DAG, traced with ``torch.fx`` and one shape-propagating forward at batch 1.

What the GUI's graph view draws (it never sees the model): :func:`model_graph` runs where the model lives (the
worker process) and returns a :class:`ModelGraph` of frozen dataclasses. Nodes that carry no tensor (``x.size()``,
attribute reads) are contracted away, keeping the data flow through them. By default the BatchNorm and
activation modules that directly follow a layer (or an op) with no other consumer are folded into it, as int8
conversion fuses them. A model FX cannot trace (TorchScript, dynamic control flow) becomes the chain of its
layers in execution order, and the graph says so.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Modules and functions that follow a layer elementwise and that int8 conversion fuses into it (or that do
# nothing at inference): folded into the node before them when that node feeds nothing else.
FOLDABLE_KINDS = frozenset({
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "ReLU", "ReLU6", "LeakyReLU", "Hardswish", "Hardsigmoid", "SiLU",
    "GELU", "Sigmoid", "Tanh", "Dropout", "Dropout2d", "Identity", "relu", "relu_", "relu6", "hardswish",
    "hardsigmoid", "silu", "gelu", "sigmoid", "tanh", "dropout",
})
# Above this many nodes the view still draws every one; the graph itself has no limit. Traced models of a few
# thousand ops take about a second to lay out.
MAX_NODES = 5000


@dataclass(frozen=True)
class GraphNode:
    """One node: ``op`` is "input", "layer" (a compressible layer), "module" (another module call), "function",
    "method" or "output". ``layer`` names the compressible layer of a "layer" node and ``layer_index`` is its
    row among the compressible layers (execution order, what the layer table lists); ``folded`` names the
    modules/ops folded into it; ``shape`` is its output's per-sample shape when known."""

    id: int
    name: str
    op: str
    kind: str
    layer: str = ""
    layer_index: int | None = None
    folded: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelGraph:
    """A layered DAG's input: nodes, directed ``edges`` (source id, target id), and how it was obtained."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[int, int], ...]
    traced: bool  # False: FX could not trace the model; the nodes are its layers in execution order
    note: str = ""  # one sentence for the view: how the graph was made, or why it is only a chain
    folded: bool = True
    extra: dict = field(default_factory=dict)

    def layer_nodes(self) -> dict[str, int]:
        """Compressible layer name -> node id."""
        return {node.layer: node.id for node in self.nodes if node.layer}

    def successors(self, node_id: int) -> list[int]:
        return [b for a, b in self.edges if a == node_id]

    def predecessors(self, node_id: int) -> list[int]:
        return [a for a, b in self.edges if b == node_id]


def _function_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    if target in (operator.add, operator.iadd):
        return "add"
    if target in (operator.mul, operator.imul):
        return "mul"
    name = getattr(target, "__name__", None) or str(target)
    return name.split(".")[-1]


def _per_sample(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    return shape[1:] if shape and shape[0] == 1 else shape


class _LayerTracer(torch.fx.Tracer):
    """FX's tracer, keeping every layer holding parameters as one call (a custom layer is not traced into)."""

    def __init__(self, layer_names: set[str]):
        super().__init__()
        self._layer_names = layer_names

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self._layer_names or super().is_leaf_module(m, module_qualified_name)


def model_graph(module: Any, layers: Sequence[Any], example_input: torch.Tensor | None = None, *,
                fold: bool = True) -> ModelGraph:
    """The graph of ``module`` with ``layers`` (the inventory's LayerInfo, execution order) marked on it.

    ``example_input`` (with its batch dimension, batch 1 is enough) gives every node its output shape and lets
    shape-only nodes be dropped; without it every traced node is kept. Never raises for a model FX cannot
    trace: the result is then the chain of ``layers`` with ``traced`` False and the reason in ``note``.
    """
    compressible = [layer for layer in layers if getattr(layer, "compressible", True)]
    rows = {layer.name: row for row, layer in enumerate(compressible)}
    try:
        if isinstance(module, torch.jit.ScriptModule):
            raise TypeError("a TorchScript model has no Python code to trace")
        graph = _traced(module, {layer.name for layer in layers}, rows, example_input)
    except Exception as error:  # noqa: BLE001 - FX refuses many real models; the chain still links to the table
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        return chain_graph(layers, f"torch.fx could not trace this model ({type(error).__name__}: {reason}); its "
                                   "layers are shown in execution order, without the ops between them.")
    return fold_followers(graph) if fold else graph


def chain_graph(layers: Sequence[Any], note: str) -> ModelGraph:
    """The fallback: input → each layer in execution order → output."""
    compressible = [layer for layer in layers if getattr(layer, "compressible", True)]
    rows = {layer.name: row for row, layer in enumerate(compressible)}
    nodes = [GraphNode(0, "input", "input", "input")]
    for layer in layers:
        index = rows.get(layer.name)
        nodes.append(GraphNode(len(nodes), layer.name, "layer" if index is not None else "module", layer.kind,
                               layer.name if index is not None else "", index,
                               shape=tuple(getattr(layer, "output_shape", ()) or ())))
    nodes.append(GraphNode(len(nodes), "output", "output", "output"))
    edges = tuple((i, i + 1) for i in range(len(nodes) - 1))
    return ModelGraph(tuple(nodes), edges, traced=False, note=note, folded=False)


def _traced(module: nn.Module, layer_names: set[str], rows: dict[str, int],
            example_input: torch.Tensor | None) -> ModelGraph:
    tracer = _LayerTracer(layer_names)
    fx_graph = tracer.trace(module)
    graph_module = torch.fx.GraphModule(tracer.root, fx_graph)
    shaped = False
    if example_input is not None:
        from torch.fx.passes.shape_prop import ShapeProp

        try:
            with torch.no_grad():
                ShapeProp(graph_module).propagate(example_input)
            shaped = True
        except Exception:  # noqa: BLE001 - shapes are a nicety; the structure stands without them
            shaped = False
    # The parameters each function node reads (get_attr), so an exported program's aten.conv2d on "conv1.weight"
    # is the layer "conv1" like a module call would be.
    param_owner: dict[str, str] = {}
    for fx_node in fx_graph.nodes:
        if fx_node.op == "get_attr":
            owner = str(fx_node.target).rsplit(".", 1)[0]
            if owner in rows:
                param_owner[fx_node.name] = owner

    kept: dict[str, int] = {}
    nodes: list[GraphNode] = []
    inputs_of: dict[str, list[str]] = {}
    claimed: set[str] = set()
    for fx_node in fx_graph.nodes:
        inputs_of[fx_node.name] = [n.name for n in fx_node.all_input_nodes]
        meta = fx_node.meta
        if fx_node.op == "get_attr" or (shaped and fx_node.op not in ("placeholder", "output", "call_module")
                                        and "tensor_meta" not in meta):
            continue  # parameters, sizes and other non-tensor values: not data flow
        shape: tuple[int, ...] = ()
        tensor_meta = meta.get("tensor_meta")
        if tensor_meta is not None and hasattr(tensor_meta, "shape"):
            shape = _per_sample(tensor_meta.shape)
        op, kind, layer = fx_node.op, "", ""
        if op == "placeholder":
            op, kind = "input", "input"
        elif op == "output":
            op, kind = "output", "output"
        elif op == "call_module":
            target = str(fx_node.target)
            from qtradeoff.core.loading.inventory import module_kind

            kind = module_kind(module.get_submodule(target))
            if target in rows:
                op, layer = "layer", target
            else:
                op = "module"
        else:
            kind = _function_name(fx_node.target)
            owners = [param_owner[n] for n in inputs_of[fx_node.name] if n in param_owner]
            owner = next((o for o in owners if o not in claimed), None)
            if owner is not None:  # the first op reading a layer's weight is that layer
                claimed.add(owner)
                op, layer = "layer", owner
            else:
                op = "function" if fx_node.op == "call_function" else "method"
        name = layer or (str(fx_node.target) if fx_node.op == "call_module" else fx_node.name)
        kept[fx_node.name] = len(nodes)
        nodes.append(GraphNode(len(nodes), name, op, kind, layer, rows.get(layer) if layer else None, shape=shape))
        if len(nodes) > MAX_NODES:
            raise ValueError(f"the traced graph has more than {MAX_NODES} nodes")

    # Only tensors flow along edges: a dropped node (a parameter, or x.size(0) feeding a view) is a dependency
    # on a shape or a constant, not data, so nothing is connected through it.
    edges = {(kept[parent], target) for name, target in kept.items() for parent in inputs_of.get(name, ())
             if parent in kept and kept[parent] != target}
    return ModelGraph(tuple(nodes), tuple(sorted(edges)), traced=True,
                      note="traced with torch.fx" + ("" if shaped else " (no output shapes: the shape pass failed)"),
                      folded=False)


def fold_followers(graph: ModelGraph) -> ModelGraph:
    """Fold each BatchNorm/activation node into the node before it when that node feeds nothing else (what
    int8 fusion does to conv → bn → relu); node ids are renumbered, edges kept through the folded nodes."""
    succ: dict[int, list[int]] = {node.id: [] for node in graph.nodes}
    pred: dict[int, list[int]] = {node.id: [] for node in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
        pred[b].append(a)
    into: dict[int, int] = {}  # folded node -> the node it is folded into (transitively resolved below)
    folded: dict[int, list[str]] = {node.id: [] for node in graph.nodes}
    shapes: dict[int, tuple[int, ...]] = {node.id: node.shape for node in graph.nodes}
    for node in graph.nodes:  # FX order is topological: a chain conv → bn → relu folds left to right
        if node.kind not in FOLDABLE_KINDS or node.op in ("input", "output", "layer") or len(pred[node.id]) != 1:
            continue
        parent = pred[node.id][0]
        host = into.get(parent, parent)
        parent_node = graph.nodes[parent]
        if parent_node.op in ("input", "output") or len(succ[parent]) != 1:
            continue
        into[node.id] = host
        folded[host].append(f"{node.kind} ({node.name})")
        shapes[host] = node.shape or shapes[host]
    keep = [node for node in graph.nodes if node.id not in into]
    new_id = {node.id: i for i, node in enumerate(keep)}
    for old, host in into.items():
        new_id[old] = new_id[host]
    nodes = tuple(GraphNode(new_id[node.id], node.name, node.op, node.kind, node.layer, node.layer_index,
                            tuple(folded[node.id]), shapes[node.id]) for node in keep)
    edges = sorted({(new_id[a], new_id[b]) for a, b in graph.edges if new_id[a] != new_id[b]})
    return ModelGraph(nodes, tuple(edges), graph.traced, graph.note, folded=True, extra=dict(graph.extra))


__all__ = ["FOLDABLE_KINDS", "GraphNode", "ModelGraph", "chain_graph", "fold_followers", "model_graph"]
