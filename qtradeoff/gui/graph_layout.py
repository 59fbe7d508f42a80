"""A layered drawing of a DAG (no Qt, no graphviz): longest-path layering, dummy nodes on edges that skip layers,
barycentre ordering sweeps to reduce crossings, then integer slots per layer.

``layered_layout(n, edges)`` returns each node's (slot, layer) and each edge's polyline through its dummy nodes,
in the same units; the graph view scales them to pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SWEEPS = 6  # down and up passes of the barycentre heuristic: a few are enough on the chains and diamonds of CNNs


@dataclass(frozen=True)
class Layout:
    positions: tuple[tuple[float, int], ...]  # node -> (x slot, centred on 0; layer, 0 at the top)
    edge_paths: tuple[tuple[tuple[float, float], ...], ...]  # one polyline per input edge, in the edges' order
    layers: int  # number of layers
    width: float  # widest layer's slot count

    def layer_of(self, node: int) -> int:
        return self.positions[node][1]


def _topological(n: int, succ: list[list[int]], pred: list[list[int]]) -> list[int]:
    """Kahn's order; nodes on a cycle (not expected from FX) are appended in index order."""
    indegree = [len(p) for p in pred]
    ready = [v for v in range(n) if indegree[v] == 0]
    order: list[int] = []
    while ready:
        v = ready.pop(0)
        order.append(v)
        for w in succ[v]:
            indegree[w] -= 1
            if indegree[w] == 0:
                ready.append(w)
    if len(order) < n:
        seen = set(order)
        order += [v for v in range(n) if v not in seen]
    return order


def longest_path_layers(n: int, edges: Iterable[tuple[int, int]]) -> list[int]:
    """Layer of each node: 0 for sources, else one more than its deepest predecessor (back edges ignored)."""
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    order = _topological(n, succ, pred)
    position = {v: i for i, v in enumerate(order)}
    layer = [0] * n
    for v in order:
        for p in pred[v]:
            if position[p] < position[v]:
                layer[v] = max(layer[v], layer[p] + 1)
    return layer


def layered_layout(n: int, edges: Sequence[tuple[int, int]]) -> Layout:
    if n == 0:
        return Layout((), (), 0, 0.0)
    layer = longest_path_layers(n, edges)
    # every edge becomes a chain of unit-length edges through dummy nodes (ids n, n+1, ...)
    total = n
    node_layer = list(layer)
    chains: list[list[int]] = []
    unit_edges: list[tuple[int, int]] = []
    for a, b in edges:
        chain = [a]
        if layer[b] <= layer[a]:  # a back edge (a cycle): drawn straight, not layered
            chains.append([a, b])
            continue
        for depth in range(layer[a] + 1, layer[b]):
            node_layer.append(depth)
            chain.append(total)
            total += 1
        chain.append(b)
        chains.append(chain)
        unit_edges += list(zip(chain, chain[1:], strict=False))
    up: list[list[int]] = [[] for _ in range(total)]
    down: list[list[int]] = [[] for _ in range(total)]
    for a, b in unit_edges:
        down[a].append(b)
        up[b].append(a)
    depth_count = max(node_layer) + 1
    rows: list[list[int]] = [[] for _ in range(depth_count)]
    for v in range(total):  # initial order: node index (FX's execution order), dummies after their layer's nodes
        rows[node_layer[v]].append(v)
    slot = [0.0] * total

    def renumber(row: list[int]) -> None:
        for i, v in enumerate(row):
            slot[v] = float(i)

    for row in rows:
        renumber(row)
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        sequence = range(1, depth_count) if downward else range(depth_count - 2, -1, -1)
        for depth in sequence:
            row = rows[depth]
            neighbours = up if downward else down

            def barycentre(v: int, neighbours: list[list[int]] = neighbours) -> float:
                near = neighbours[v]
                return sum(slot[u] for u in near) / len(near) if near else slot[v]

            row.sort(key=lambda v: (barycentre(v), slot[v]))
            renumber(row)
    # centre each layer on 0, then pull each node towards its neighbours' mean where the layer leaves room
    # (a chain stays a straight line, a branch sits between its parents)
    x = [0.0] * total
    for row in rows:
        offset = (len(row) - 1) / 2.0
        for i, v in enumerate(row):
            x[v] = i - offset
    for _ in range(2):
        for depth in range(1, depth_count):
            row = rows[depth]
            for i, v in enumerate(row):
                if not up[v]:
                    continue
                want = sum(x[u] for u in up[v]) / len(up[v])
                low = x[row[i - 1]] + 1.0 if i > 0 else -1e9
                high = x[row[i + 1]] - 1.0 if i + 1 < len(row) else 1e9
                x[v] = min(max(want, low), high)
    positions = tuple((x[v], node_layer[v]) for v in range(n))
    paths = tuple(tuple((x[v], float(node_layer[v])) for v in chain) for chain in chains)
    width = max(len(row) for row in rows)
    return Layout(positions, paths, depth_count, float(width))


__all__ = ["Layout", "layered_layout", "longest_path_layers"]
