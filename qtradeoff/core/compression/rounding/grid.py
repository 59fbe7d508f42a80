"""The shared vocabulary of the rounding algorithms: a layer's weight seen as per-group matrices, the integer grid
its values are rounded onto, and the second-order statistics of the layer's calibration inputs.

A Conv2d weight ``(out, in/groups, kh, kw)`` is ``groups`` matrices ``(out/groups, in/groups*kh*kw)`` acting on
the unfolded input patches (``F.unfold`` order); a Linear weight ``(out, in)`` is one matrix. Every algorithm
works on that ``(G, R, K)`` stack, so depthwise and grouped convolutions need no special case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_KINDS = ("Linear", "Conv2d")
# Unfolded patches per accumulation step at most this many values (a 3x3 conv on large maps unfolds 9x its input).
_UNFOLD_VALUES = 1 << 24


@dataclass(frozen=True)
class Geometry:
    """How a layer applies its weight to its input: what is needed to unfold inputs and reshape weights."""

    kind: str  # "Linear" | "Conv2d"
    groups: int = 1
    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] | str = ()
    dilation: tuple[int, ...] = ()
    padding_mode: str = "zeros"

    @classmethod
    def of(cls, module: nn.Module, kind: str) -> Geometry | None:
        """The geometry of ``module`` (inventory kind ``kind``), or None when no rounding algorithm supports it."""
        if kind == "Linear" and isinstance(getattr(module, "weight", None), torch.Tensor):
            return cls("Linear")
        if kind == "Conv2d" and isinstance(module, nn.Conv2d):
            return cls("Conv2d", module.groups, tuple(module.kernel_size), tuple(module.stride),
                       module.padding if isinstance(module.padding, str) else tuple(module.padding),
                       tuple(module.dilation), module.padding_mode)
        return None

    def matrices(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` as the ``(G, R, K)`` stack of per-group matrices (a view when possible)."""
        return weight.reshape(self.groups, weight.shape[0] // self.groups, -1)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input ``x`` as ``(G, M, K)``: M input vectors per group, in the weight matrices' order."""
        if self.kind == "Linear":
            return x.reshape(1, -1, x.shape[-1])
        cols = self._unfolded(x)
        n, groups, k, length = cols.shape
        return cols.permute(1, 0, 3, 2).reshape(groups, n * length, k)

    def _unfolded(self, x: torch.Tensor) -> torch.Tensor:
        """A conv input's patches as ``(N, G, K, L)``: the layout ``F.unfold`` writes (L positions per sample)."""
        padding = self.padding
        if self.padding_mode != "zeros" or padding == "same":
            pad = _same_padding(self) if padding == "same" else [p for p in reversed(padding) for _ in (0, 1)]
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, pad, mode=mode)
            padding = 0
        elif padding == "valid":
            padding = 0
        cols = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=padding, stride=self.stride)
        n, ck, length = cols.shape
        return cols.reshape(n, self.groups, ck // self.groups, length)

    def patch_sums(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(Σ x, M)``: the sum of the ``M`` input vectors per group ``(G, K)`` of the batch ``x``, from the
        patches of the batch's sum (unfolding and padding are linear: one image unfolded, not ``len(x)``)."""
        if self.kind == "Linear":
            return x.reshape(-1, x.shape[-1]).sum(dim=0).unsqueeze(0), x.numel() // x.shape[-1]
        cols = self._unfolded(x.sum(dim=0, keepdim=True))
        return cols.sum(dim=(0, 3)), len(x) * cols.shape[3]

    def patch_gram(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ x xᵀ`` over the input vectors of the batch ``x``, per group ``(G, K, K)``, in ``x``'s dtype.

        One GEMM per group on a layout that needs a single copy of the patches: an ungrouped conv's patches are
        gathered channels-last (one row per position, ``rows.T @ rows`` reads it in place) and the small Gram is
        reordered to ``F.unfold``'s order; grouped convs use ``F.unfold``'s own layout when the batch is one
        sample, else one copy of it grouped by row.
        """
        if self.kind == "Linear":
            rows = x.reshape(-1, x.shape[-1])
            return (rows.T @ rows).unsqueeze(0)
        if self.groups == 1:
            rows, positions = self._rows_channels_last(x)
            channels = x.shape[1]
            gram = rows.T @ rows
            return gram.reshape(positions, channels, positions, channels).permute(1, 0, 3, 2).reshape(
                1, channels * positions, channels * positions)
        cols = self._unfolded(x)
        n, groups, k, length = cols.shape
        by_row = cols[0] if n == 1 else cols.permute(1, 2, 0, 3).reshape(groups, k, n * length)
        return by_row @ by_row.transpose(1, 2)

    def _rows_channels_last(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A conv input's patches as ``(M, kh·kw·C)`` rows, kernel position major, and ``kh·kw``: a strided view
        of the padded channels-last input, copied once."""
        x = self._padded(x)
        padded = x.permute(0, 2, 3, 1).contiguous()
        n, height, width, channels = padded.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        out_h, out_w = (height - dh * (kh - 1) - 1) // sh + 1, (width - dw * (kw - 1) - 1) // sw + 1
        sn, sy, sx, sc = padded.stride()
        view = padded.as_strided((n, out_h, out_w, kh, kw, channels), (sn, sh * sy, sw * sx, dh * sy, dw * sx, sc))
        return view.reshape(n * out_h * out_w, kh * kw * channels), kh * kw

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the conv's padding applied (zeros, reflect, replicate, circular; ``"same"``/``"valid"``)."""
        padding = self.padding
        if padding == "valid":
            return x
        pad = _same_padding(self) if padding == "same" else [p for p in reversed(padding) for _ in (0, 1)]
        if not any(pad):
            return x
        return F.pad(x, pad, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)


def _same_padding(geometry: Geometry) -> list[int]:
    pad = []
    for size, dilation in zip(reversed(geometry.kernel_size), reversed(geometry.dilation), strict=True):
        total = dilation * (size - 1)
        pad += [total // 2, total - total // 2]
    return pad


@dataclass(frozen=True)
class Grid:
    """An integer grid per output row: ``value = (code - zero_point) * scale``, ``code`` in ``[qmin, qmax]``.

    ``scale``/``zero_point`` are ``(G, R, 1)`` (one per output channel, or the same for all under per-tensor
    granularity); the grid is exactly the one nearest rounding (:func:`~qtradeoff.core.compression.quantize.
    fake_quantize`) uses, so an algorithm changes which grid point a weight takes, never the grid.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int

    @classmethod
    def for_rows(cls, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, shape: torch.Size
                 ) -> Grid:
        """The grid of a ``(G, R, K)`` stack from per-channel (``out`` values) or per-tensor (one) qparams."""
        groups, rows = shape[0], shape[1]
        scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        zero_point = torch.as_tensor(zero_point).reshape(-1).to(torch.float32)
        if scale.numel() == 1:
            scale, zero_point = scale.expand(groups * rows), zero_point.expand(groups * rows)
        return cls(scale.reshape(groups, rows, 1).contiguous(), zero_point.reshape(groups, rows, 1).contiguous(),
                   qmin, qmax)

    def codes_nearest(self, w: torch.Tensor) -> torch.Tensor:
        """Nearest grid codes (round half to even, then clamp, as torch's fake-quantize ops)."""
        # x * (1 / scale), as torch's fake-quantize kernels compute it (x / scale can differ at ties)
        return torch.clamp(torch.round(w * (1.0 / self.scale)) + self.zero_point, self.qmin, self.qmax)

    def value(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.zero_point) * self.scale

    def nearest(self, w: torch.Tensor) -> torch.Tensor:
        return self.value(self.codes_nearest(w))


@dataclass
class InputStats:
    """Statistics of a layer's calibration inputs, per group: ``mean = E[x]`` ``(G, K)`` and, unless only first
    order was collected, ``hessian = E[x xᵀ]`` ``(G, K, K)``, over every input vector (every sample, every spatial
    position), in float64 while accumulating. ``count`` input vectors were seen.

    Bias correction needs the mean alone; it costs one unfold of the batch's *sum* per batch (the patch operator is
    linear), where the second moment unfolds every sample and multiplies the patches: first-order statistics are
    the cheap pass, and their mean is computed the same way in both, so it is the same to the bit either way.
    """

    hessian: torch.Tensor | None
    mean: torch.Tensor
    count: int
    samples: int = 0  # input tensors' batch entries seen (count / samples: input vectors per sample)

    @classmethod
    def empty(cls, groups: int, k: int, *, second_order: bool = True) -> InputStats:
        hessian = torch.zeros(groups, k, k, dtype=torch.float64) if second_order else None
        return cls(hessian, torch.zeros(groups, k, dtype=torch.float64), 0)

    @property
    def second_order(self) -> bool:
        return self.hessian is not None

    def add(self, geometry: Geometry, x: torch.Tensor) -> None:
        """Accumulate a batch of the layer's inputs (the tensor its forward receives)."""
        # The Gram in float32 (as GPTQ's reference implementation keeps H), accumulated in float64 between chunks;
        # the mean from float64 patches of the batch's sum (one image unfolded: cheap, and the same to the bit as
        # the first-order pass's)
        x = x.detach()
        x32, x64 = x.to(torch.float32), x.to(torch.float64)
        per_sample = max(1, x[:1].numel() * (int(torch.tensor(geometry.kernel_size).prod()) if
                                              geometry.kind == "Conv2d" else 1))
        step = max(1, _UNFOLD_VALUES // per_sample) if geometry.kind == "Conv2d" else max(1, len(x))
        for start in range(0, len(x), step):
            sums, vectors = geometry.patch_sums(x64[start:start + step])
            total = self.count + vectors
            # running means: stable for any number of batches
            if self.hessian is not None:
                gram = geometry.patch_gram(x32[start:start + step]).to(torch.float64)
                self.hessian += (gram - vectors * self.hessian) / total
            self.mean += (sums - vectors * self.mean) / total
            self.count = total
        self.samples += len(x)

    @classmethod
    def of(cls, geometry: Geometry, inputs: torch.Tensor, *, second_order: bool = True) -> InputStats:
        """Statistics of ``inputs`` (a batch of the layer's inputs)."""
        cols = geometry.patches(inputs.detach().to(torch.float32)[:1])
        stats = cls.empty(cols.shape[0], cols.shape[2], second_order=second_order)
        stats.add(geometry, inputs)
        return stats

    def float32(self) -> InputStats:
        hessian = None if self.hessian is None else self.hessian.to(torch.float32)
        return InputStats(hessian, self.mean.to(torch.float32), self.count, self.samples)


def output_error(delta: torch.Tensor, stats: InputStats) -> torch.Tensor:
    """``E ||Δw·x||²`` summed over output rows, for a ``(G, R, K)`` weight change, from the input statistics."""
    hessian = stats.hessian.to(delta.dtype)
    return ((delta @ hessian) * delta).sum()
