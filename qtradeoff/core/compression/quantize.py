"""Numeric primitives of simulated quantization: integer fake-quant, float casts, and activation range calibration.

Pure tensor functions, no modules. The integer grid follows PyTorch's own observers so that a simulated int8 model
agrees with the real int8 model built by ``torch.ao`` (see :func:`int_range` and :func:`int_qparams`).
"""

from __future__ import annotations

import torch

from qtradeoff.core.precision import PRECISIONS, REGISTRY, bits_of, is_integer, torch_dtype

_FLOAT_DTYPES = {name: torch_dtype(name) for name, p in REGISTRY.items() if p.kind == "float" and name != "fp32"}
# Same floor as torch.ao's observers, so an all-zero channel gets a tiny positive scale rather than a division by 0.
_EPS = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps
# Calibration keeps at most this many values per layer for percentile and MSE search (exact min/max are kept apart).
CALIB_SAMPLE = 1 << 20
MSE_STEPS = 61  # candidate clipping ratios from 0.25 to 1.0 (activation calibration and weight ranges alike)
MSE_SAMPLE = 1 << 16
MSE_BLOCK = 1 << 18  # values the weight-range search rounds at once (ratios x the tensor's values)


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer grid of ``bits``: symmetric ``[-2^(b-1), 2^(b-1)-1]`` (zero point 0), asymmetric ``[0, 2^b-1]``.

    The symmetric grid is the full signed range, like torch's ``qint8`` with ``per_channel_symmetric``: int8 is
    -128..127 with ``scale = max|w| / 127.5``, exactly what the x86/fbgemm weight observer computes. The value
    ``+max|w|`` then rounds to 127 with an error of half a step, so every value within ``[-max|w|, max|w|]`` is
    still represented within ``scale / 2``.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"integer quantization supports 2..16 bits, got {bits}")
    if symmetric:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _reduce(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if axis is None:
        return x.min(), x.max()
    flat = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)
    return flat.amin(dim=1), flat.amax(dim=1)


def qparams_from_range(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) covering ``[lo, hi]``, computed as torch.ao's MinMax observers do.

    The range is widened to include 0 so that zero (padding, ReLU output, pruned weights) is exact.
    """
    qmin, qmax = int_range(bits, symmetric)
    lo = torch.as_tensor(lo, dtype=torch.float32).clamp(max=0.0)
    hi = torch.as_tensor(hi, dtype=torch.float32).clamp(min=0.0)
    if symmetric:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        scale = scale.clamp(min=_EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = ((hi - lo) / float(qmax - qmin)).clamp(min=_EPS)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
    return scale, zero_point


def int_qparams(x: torch.Tensor, bits: int, symmetric: bool = True, axis: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point of ``x``: one pair (0-d tensors) or one per index of ``axis``."""
    lo, hi = _reduce(x, axis)
    return qparams_from_range(lo, hi, bits, symmetric)


def _mse_ratios() -> torch.Tensor:
    """The clipping ratios the MSE searches try, from the widest (exactly 1: min-max) down to 0.25."""
    ratios = torch.linspace(0.25, 1.0, MSE_STEPS).flip(0)
    ratios[0] = 1.0
    return ratios


def weight_qparams(x: torch.Tensor, bits: int, symmetric: bool = True, axis: int | None = None,
                   method: str = "minmax") -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a weight grid, as :func:`int_qparams` returns them, by ``method``:

    - ``minmax``: the grid covers every value (:func:`int_qparams`);
    - ``mse``: per channel (or for the whole tensor), the min-max range shrunk by the ratio (1 down to 0.25,
      :data:`MSE_STEPS` steps) whose grid gives the least squared rounding error ``Σ (q(x) - x)²`` over *all* the
      channel's values (clipped ones included); ties go to the widest range, so min-max is kept unless a
      narrower grid is strictly better. The error is that of :func:`quantize_int` (torch's fake-quantize) on
      that grid, the rounding a nearest-rounded weight gets.
    """
    if method == "minmax":
        return int_qparams(x, bits, symmetric, axis)
    if method != "mse":
        raise ValueError(f"unknown weight range method {method!r} (minmax, mse)")
    x = x.detach().to(torch.float32)
    lo, hi = _reduce(x, axis)
    rows = x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.shape[axis], -1)
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    qmin, qmax = int_range(bits, symmetric)
    ratios = _mse_ratios()
    # Several ratios at once for small tensors (a block of candidate grids broadcast over the rows, at most about
    # MSE_BLOCK values), and the fake-quantization written out: torch's per-channel fake-quantize kernel was 6x
    # slower than these elementwise ops, which compute the same float32 values (round half to even of x * (1 /
    # scale), plus the zero point, clamped, minus it, times the scale; checked bit for bit in the tests).
    block = max(1, min(len(ratios), MSE_BLOCK // max(rows.numel(), 1)))
    errors, scales, zeros = [], [], []
    for start in range(0, len(ratios), block):
        chunk = ratios[start:start + block, None]
        scale, zero_point = qparams_from_range(lo * chunk, hi * chunk, bits, symmetric)  # (block, channels)
        scale = scale.to(torch.float32)
        zero = zero_point.to(torch.float32)[..., None]
        codes = torch.round(rows * scale.reciprocal()[..., None]).add_(zero).clamp_(qmin, qmax)
        difference = codes.sub_(zero).mul_(scale[..., None]).sub_(rows)
        errors.append(difference.to(torch.float64).square_().sum(dim=-1))
        scales.append(scale)
        zeros.append(zero_point)
    best = torch.cat(errors).argmin(dim=0, keepdim=True)  # the first of equal errors: the widest range
    best_scale = torch.cat(scales).gather(0, best).reshape(-1)
    best_zero = torch.cat(zeros).gather(0, best).reshape(-1)
    if axis is None:
        return best_scale.reshape(()), best_zero.reshape(())
    return best_scale, best_zero


def quantize_int(x: torch.Tensor, bits: int, *, symmetric: bool = True, axis: int | None = None,
                 scale: torch.Tensor | None = None, zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """Fake-quantize ``x`` to a ``bits``-bit integer grid and return the dequantized float32 tensor.

    Per-tensor when ``axis`` is None, else one scale per index along ``axis`` (the output channel). Without
    ``scale``/``zero_point`` they come from the min-max of ``x`` (:func:`int_qparams`). Uses torch's own
    ``fake_quantize_per_{tensor,channel}_affine`` (round half to even, then clamp), as the real kernels do.
    """
    qmin, qmax = int_range(bits, symmetric)
    x = x.detach().to(torch.float32)
    if scale is None or zero_point is None:
        scale, zero_point = int_qparams(x, bits, symmetric, axis)
    scale = torch.as_tensor(scale, dtype=torch.float32)
    zero_point = torch.as_tensor(zero_point).to(torch.int32)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, scale.reshape(()), zero_point.reshape(()), qmin, qmax)
    axis = axis % x.dim()
    return torch.fake_quantize_per_channel_affine(x, scale.reshape(-1), zero_point.reshape(-1), axis, qmin, qmax)


def cast_float(x: torch.Tensor, precision: str) -> torch.Tensor:
    """Round ``x`` through a float format and back to float32: exactly ``x.to(dtype).to(torch.float32)``.

    The fp8 formats saturate: values beyond the format's largest finite number become that number (float8_e5m2
    would otherwise give inf, and e4m3fn has no inf), as deployment converters do.
    """
    if precision == "fp32":
        return x.detach().to(torch.float32)
    dtype = _FLOAT_DTYPES.get(precision)
    if dtype is None:
        raise ValueError(f"{precision!r} is not a float precision (fp32, {', '.join(_FLOAT_DTYPES)})")
    x = x.detach().to(torch.float32)
    if precision.startswith("fp8"):
        limit = torch.finfo(dtype).max
        x = x.clamp(-limit, limit)
    return x.to(dtype).to(torch.float32)


def fake_quantize(x: torch.Tensor, precision: str, *, symmetric: bool = True, axis: int | None = None,
                  scale: torch.Tensor | None = None, zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """Simulate storing ``x`` at ``precision`` (``int2``..``int16``, ``fp16``, ``bf16``, ``fp8_*``, ``fp32``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{precision!r} is not a precision")
    if is_integer(precision):
        return quantize_int(x, bits_of(precision), symmetric=symmetric, axis=axis, scale=scale,
                            zero_point=zero_point)
    return cast_float(x, precision)


# ---------------------------------------------------------------------------------------------------------------
# Activation calibration


class RangeObserver:
    """Accumulates what calibration needs about one activation: exact min/max and a bounded value sample.

    Feed it batches with :meth:`observe`; then :meth:`range` gives ``(lo, hi)`` for a method. The sample keeps
    every value up to :data:`CALIB_SAMPLE` and a deterministic strided subset beyond, so percentiles and the
    MSE search stay cheap on large activations.
    """

    def __init__(self, sample_limit: int = CALIB_SAMPLE):
        self.sample_limit = sample_limit
        self.lo = float("inf")
        self.hi = float("-inf")
        self._chunks: list[torch.Tensor] = []
        self._count = 0
        self._sample: torch.Tensor | None = None

    def observe(self, x: torch.Tensor) -> None:
        flat = x.detach().to(torch.float32).reshape(-1)
        if flat.numel() == 0:
            return
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        self._chunks.append(flat.clone())
        self._count += flat.numel()
        self._sample = None
        if self._count > 4 * self.sample_limit:
            self._chunks = [self.sample()]
            self._count = self._chunks[0].numel()

    def sample(self) -> torch.Tensor:
        if self._sample is None:
            values = torch.cat(self._chunks) if self._chunks else torch.zeros(1)
            if values.numel() > self.sample_limit:
                stride = -(-values.numel() // self.sample_limit)
                values = values[::stride].contiguous()
            self._sample = values
        return self._sample

    def range(self, method: str, *, percentile: float = 99.99, bits: int = 8, symmetric: bool = False
              ) -> tuple[float, float]:
        """Clipping range by ``method``: ``minmax``, ``percentile`` or ``mse`` (see :func:`calibrate_range`)."""
        if self._count == 0:
            raise ValueError("no activations observed; run calibration inputs through the model first")
        if method == "minmax":
            return self.lo, self.hi
        return calibrate_range(self.sample(), method, percentile=percentile, bits=bits, symmetric=symmetric,
                               lo=self.lo, hi=self.hi)


def _quantile(values: torch.Tensor, q: float) -> float:
    # kthvalue works on any size, unlike torch.quantile (limited to 16M elements)
    k = min(values.numel(), max(1, int(round(q * (values.numel() - 1))) + 1))
    return float(values.kthvalue(k).values)


def calibrate_range(values: torch.Tensor, method: str, *, percentile: float = 99.99, bits: int = 8,
                    symmetric: bool = False, lo: float | None = None, hi: float | None = None
                    ) -> tuple[float, float]:
    """Clipping range ``(lo, hi)`` for activations ``values``.

    - ``minmax``: the observed extremes.
    - ``percentile``: symmetric grids clip at the ``percentile`` of ``|x|``; asymmetric at the
      ``100 - percentile`` and ``percentile`` tails.
    - ``mse``: the min-max range shrunk by the ratio (0.25..1, 61 steps) that minimizes the mean squared error
      of quantizing ``values`` (at most :data:`MSE_SAMPLE` of them, strided) to ``bits``; ties go to the widest
      range.
    """
    values = values.detach().to(torch.float32).reshape(-1)
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if method == "minmax":
        return lo, hi
    if method == "percentile":
        q = percentile / 100.0
        if symmetric:
            bound = _quantile(values.abs(), q)
            return -bound, bound
        return _quantile(values, 1.0 - q), _quantile(values, q)
    if method == "mse":
        if values.numel() > MSE_SAMPLE:  # a strided subset: the error curve over ratios barely moves
            values = values[:: -(-values.numel() // MSE_SAMPLE)]
        candidates = torch.linspace(0.25, 1.0, MSE_STEPS)
        ratios = candidates.unsqueeze(1)
        qmin, qmax = int_range(bits, symmetric)
        scale, zero_point = qparams_from_range(lo * candidates, hi * candidates, bits, symmetric)
        scale, zero_point = scale.unsqueeze(1), zero_point.unsqueeze(1).to(torch.float32)
        # all candidate ranges at once, same arithmetic as fake_quantize_per_tensor_affine
        grid = torch.clamp(torch.round(values.unsqueeze(0) * (1.0 / scale) + zero_point), qmin, qmax)
        errors = ((grid - zero_point) * scale - values.unsqueeze(0)).square().mean(dim=1)
        best = int(torch.argmin(errors.flip(0)))  # flipped: among equal errors prefer the widest range
        ratio = float(ratios.flip(0)[best])
        return lo * ratio, hi * ratio
    raise ValueError(f"unknown calibration method {method!r} (minmax, percentile, mse)")
