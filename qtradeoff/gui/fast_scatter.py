"""A pyqtgraph scatter item whose points are replaced in a few NumPy operations instead of per-point Python work.

pyqtgraph's ``ScatterPlotItem.setData`` allocates its record array with ``np.empty`` (about 1.4 µs a point for its
object fields), builds one symbol-atlas key per point in a Python loop and recomputes the data bounds at the next
paint. :class:`FastScatter` keeps the same record array, atlas, hover, tool tips, clicks and export, but fills the
array with ``np.zeros`` and vectorised assignments, looks a style up in the atlas once (not once per point) and
sets the data bounds from NumPy. A point's colour is an index into a small list of cached brushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg

__all__ = ["FastScatter"]

_OBJECT_FIELDS = ("symbol", "pen", "brush", "item")  # None: "use the item's default" (and no SpotItem yet)


class FastScatter(pg.ScatterPlotItem):
    """A :class:`pyqtgraph.ScatterPlotItem` with :meth:`set_points`, a fast replacement of all its points."""

    _given: tuple | None = None  # what the last set_points drew: the same again changes nothing

    def set_points(self, x: Any, y: Any, data: Any = None, *, brush_index: np.ndarray | None = None,
                   brushes: Sequence[Any] = (), symbol: str | None = None) -> None:
        """Replace every point: positions ``x``/``y``, ``data`` per point (what tips and clicks receive) and, when
        ``brush_index`` is given, each point's brush as an index into ``brushes`` (QBrush objects, reused: the atlas
        renders each style once). ``symbol`` changes the item's default symbol. Same picture as ``setData``."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        n = len(x)
        if symbol is not None and symbol != self.opts["symbol"]:
            self.opts["symbol"] = symbol
            self._given = None
        given = (np.asarray(data) if data is not None else None,
                 None if brush_index is None else np.asarray(brush_index), tuple(map(id, brushes)))
        if self._same_as_given(x, y, given):
            return  # the same points again (a redraw for something else): no repaint, no bounds change
        self._given = (x.copy(), y.copy(), *given)
        if not (self.opts["pxMode"] and self.opts["useCache"]):  # the atlas is what this shortcut is about
            kwargs: dict[str, Any] = {"x": x, "y": y}
            if data is not None:
                kwargs["data"] = data
            if brush_index is not None:
                kwargs["brush"] = [brushes[i] for i in brush_index]
            self.setData(**kwargs)
            return
        records = np.zeros(n, dtype=self.data.dtype)  # np.zeros, not np.empty: 10x faster with object fields
        for name in _OBJECT_FIELDS:
            records[name] = None
        records["x"], records["y"] = x, y
        records["size"] = -1.0
        records["visible"] = True
        if data is not None:
            records["data"] = data
        # the style of a point is (symbol, size, pen, brush): only the brush may differ between points here
        symbol_now, size, pen = self.opts["symbol"], self.opts["size"], self.opts["pen"]
        if brush_index is None or not len(brushes):
            keys = [(symbol_now, size, pen, self.opts["brush"])]
            index = np.zeros(n, dtype=np.int64)
        else:
            keys = [(symbol_now, size, pen, brush) for brush in brushes]
            index = np.asarray(brush_index, dtype=np.int64)
            palette = np.empty(len(brushes), dtype=object)
            palette[:] = list(brushes)
            records["brush"] = palette[index]
        if n:
            rects = np.array(self.fragmentAtlas[keys], dtype=records.dtype["sourceRect"])
            records["sourceRect"] = rects[index]
        self.data = records
        self._maxSpotWidth = 0
        self._maxSpotPxWidth = 0
        self.prepareGeometryChange()
        self.informViewBoundsChanged()
        self.invalidate()
        self._maybeRebuildAtlas()
        self._updateMaxSpotSizes(data=records)
        self.bounds = [self._span(x), self._span(y)]  # what dataBounds would compute at the next paint
        self.sigPlotChanged.emit(self)

    def clear(self) -> None:
        self._given = None  # points set some other way: the next set_points sets its own
        super().clear()

    def _same_as_given(self, x: np.ndarray, y: np.ndarray, given: tuple) -> bool:
        last = getattr(self, "_given", None)
        if last is None or len(last[0]) != len(x) or last[4] != given[2]:
            return False
        if not (np.array_equal(last[0], x, equal_nan=True) and np.array_equal(last[1], y, equal_nan=True)):
            return False
        for old, new in ((last[2], given[0]), (last[3], given[1])):
            if (old is None) != (new is None) or (new is not None and not np.array_equal(old, new)):
                return False
        return True

    @staticmethod
    def _span(values: np.ndarray) -> tuple[float, float] | None:
        finite = values[np.isfinite(values)]
        if not len(finite):
            return None  # pyqtgraph's "not known yet": dataBounds computes it (as (None, None) when empty)
        return float(finite.min()), float(finite.max())
