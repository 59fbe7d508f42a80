"""The model graph (issue 18): the layered DAG the graph view draws, as plain data from torch.fx (no Qt)."""

from __future__ import annotations

import pickle

import torch
from torch import nn

from qtradeoff.core.loading import inventory
from qtradeoff.core.loading.graph import model_graph
from qtradeoff.core.loading.model_io import load_sample_model


class Residual(nn.Module):
    """stem → a (+relu) → b, then stem + b (a skip connection), flatten, fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.b(self.relu(self.a(x)))
        z = x + y
        return self.fc(torch.flatten(z, 1).view(x.size(0), -1))


class Branchy(nn.Module):
    """Control flow on a tensor's value: FX cannot trace it."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 2)

    def forward(self, x):
        x = self.first(x)
        if x.sum() > 0:
            x = -x
        return self.second(x)


def _named_edges(graph):
    name = {node.id: node.layer or node.kind for node in graph.nodes}
    return sorted((name[a], name[b]) for a, b in graph.edges)


def test_digits_cnn_is_a_chain_of_its_layers_with_batchnorm_and_relu_folded():
    loaded = load_sample_model("digits_cnn")
    layers = inventory.inventory(loaded.module, loaded.input_shape)
    graph = model_graph(loaded.module, layers, torch.zeros(1, *loaded.input_shape))
    assert graph.traced and graph.folded
    kinds = [node.kind for node in graph.nodes]
    assert kinds == ["input", *["Conv2d"] * 6, "AdaptiveAvgPool2d", "Flatten", "Linear", "output"]
    assert graph.edges == tuple((i, i + 1) for i in range(len(kinds) - 1))  # one straight chain
    compressible = [layer.name for layer in layers if layer.compressible]
    assert [(n.layer, n.layer_index) for n in graph.nodes if n.layer] == [(n, i) for i, n in enumerate(compressible)]
    conv = graph.nodes[1]
    assert conv.folded == ("BatchNorm2d (features.0.bn)", "ReLU (features.0.relu)") and conv.shape == (16, 32, 32)
    assert pickle.loads(pickle.dumps(graph)) == graph  # plain data: it crosses the worker process's pipe


def test_a_residual_add_has_both_inputs_and_shape_ops_are_contracted():
    model = Residual().eval()
    layers = inventory.inventory(model, (1, 6, 6))
    graph = model_graph(model, layers, torch.zeros(1, 1, 6, 6))
    assert [n.kind for n in graph.nodes] == ["input", "Conv2d", "Conv2d", "Conv2d", "add", "flatten", "view",
                                             "Linear", "output"]
    assert _named_edges(graph) == sorted([("input", "stem"), ("stem", "a"), ("a", "b"), ("stem", "add"),
                                          ("b", "add"), ("add", "flatten"), ("flatten", "view"), ("view", "fc"),
                                          ("fc", "output")])
    assert graph.nodes[2].folded == ("ReLU (relu)",)  # a's relu; x.size(0) left no node behind
    unfolded = model_graph(model, layers, torch.zeros(1, 1, 6, 6), fold=False)
    assert "ReLU" in [n.kind for n in unfolded.nodes] and len(unfolded.nodes) == len(graph.nodes) + 1


def test_a_model_fx_cannot_trace_falls_back_to_its_layers_in_order_and_says_so():
    model = Branchy().eval()
    layers = inventory.inventory(model, (4,))
    graph = model_graph(model, layers, torch.zeros(1, 4))
    assert not graph.traced and "could not trace" in graph.note and "execution order" in graph.note
    assert [n.layer for n in graph.nodes] == ["", "first", "second", ""]
    assert graph.edges == ((0, 1), (1, 2), (2, 3))
