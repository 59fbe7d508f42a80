"""FastScatter.set_points fills pyqtgraph's record array as setData does (positions, data, brushes, atlas
rectangles, bounds), so hover, tips, clicks and export see the same points."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg

from qtradeoff.gui.fast_scatter import FastScatter


def test_set_points_matches_set_data(qtbot):
    brushes = [pg.mkBrush(20 * i, 100, 200 - 20 * i) for i in range(5)]
    item = FastScatter(size=11, pen=pg.mkPen((40, 40, 40)), brush=brushes[0], hoverable=True)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 3, 50), rng.uniform(60, 99, 50)
    rows, colour = np.arange(100, 150), rng.integers(0, 5, 50)
    item.setData(x=x, y=y, data=rows, brush=[brushes[i] for i in colour])
    expected = item.data.copy()
    expected_rect = item.boundingRect()
    item.set_points([], [], [])  # emptied in between, so nothing is left over from setData
    assert len(item.data) == 0
    item.set_points(x, y, rows, brush_index=colour, brushes=brushes)
    got = item.data
    for name in ("x", "y", "size", "visible", "hovered", "sourceRect"):
        assert np.array_equal(got[name], expected[name]), name
    assert list(got["data"]) == list(expected["data"]) and all(got["brush"][i] is brushes[c]
                                                                for i, c in enumerate(colour))
    assert item.boundingRect() == expected_rect and item.dataBounds(0) == (x.min(), x.max())
    assert [int(p.data()) for p in item.points()] == rows.tolist()
    records = item.data
    item.set_points(x.copy(), y, rows.tolist(), brush_index=colour, brushes=brushes)  # the same points again
    assert item.data is records  # left alone: no repaint
    item.set_points(x, y, rows + 1, brush_index=colour, brushes=brushes)
    assert item.data is not records and item.data["data"][0] == 101
    item.set_points(x[:3], y[:3], rows[:3], symbol="t")  # one brush for all: the item's own
    assert item.opts["symbol"] == "t" and list(item.data["brush"]) == [None] * 3
    rects = item.data["sourceRect"].copy()
    item.setData(x=x[:3], y=y[:3], data=rows[:3])
    assert np.array_equal(item.data["sourceRect"], rects)
