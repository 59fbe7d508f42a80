"""The layered layout of the graph view (issue 18): pure Python, no Qt."""

from __future__ import annotations

from qtradeoff.gui.graph_layout import layered_layout, longest_path_layers


def test_longest_path_layering_puts_a_skip_target_below_both_inputs():
    # 0 → 1 → 2 → 3 and 0 → 3 (a residual add): 3 is on layer 3, the long edge goes through two dummies
    edges = [(0, 1), (1, 2), (2, 3), (0, 3)]
    assert longest_path_layers(4, edges) == [0, 1, 2, 3]
    layout = layered_layout(4, edges)
    assert layout.layers == 4 and layout.width == 2
    skip = layout.edge_paths[3]
    assert len(skip) == 4 and [y for _, y in skip] == [0.0, 1.0, 2.0, 3.0]
    assert all(x != layout.positions[1][0] for x, _ in skip[1:3])  # the dummies stand beside the chain


def test_barycentre_ordering_uncrosses_two_branches():
    # two sources whose children were listed crossed: 0 → 3, 1 → 2; ordering puts 2 under 1 and 3 under 0
    layout = layered_layout(4, [(0, 3), (1, 2)])
    x = [p[0] for p in layout.positions]
    assert (x[0] < x[1]) == (x[3] < x[2])


def test_a_chain_is_a_straight_line():
    layout = layered_layout(5, [(i, i + 1) for i in range(4)])
    assert {p[0] for p in layout.positions} == {0.0} and [p[1] for p in layout.positions] == [0, 1, 2, 3, 4]
