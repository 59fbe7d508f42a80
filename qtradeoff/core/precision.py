"""What a precision *is*: one frozen :class:`Precision` per name (bits, kind, storage dtype, compute family, UI
label, display order), in one registry every module and the GUI read.

A base module: it imports no core subpackage and not torch at import time (:func:`torch_dtype` imports it when
asked), so the configuration, the headless CLI and the GUI can all depend on it. It also defines
:class:`ConfigError`, re-exported by :mod:`qtradeoff.core.config`, so that an unknown precision is a
configuration error without an import cycle between the two modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from qtradeoff.core.errors import InputError


class ConfigError(InputError, ValueError):
    """An invalid configuration; ``path`` is the JSON path of the problem (``$`` is the document root)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self):  # errors cross process boundaries (worker processes): rebuild from both fields
        return (type(self), (self.path, self.problem))


@dataclass(frozen=True)
class Precision:
    """Every fact about one precision.

    ``dtype`` is the torch dtype (its attribute name on ``torch``) float values are stored and cast in; integer
    grids have none (their codes are bit-packed, see ``measurement.memory``). ``family`` is the CPU kernel
    family that computes in this precision, the key of the roofline's measured peaks: the fp8 formats and the
    integer grids wider than 8 bits have no kernel of their own and are computed in fp32.
    """

    name: str
    bits: int
    kind: Literal["float", "int", "lut"]
    dtype: str | None
    family: str
    label: str
    order: int  # position in menus and sliders: widest first, floats before integers of the same width

    @property
    def is_integer(self) -> bool:
        return self.kind == "int"

    @property
    def is_lut(self) -> bool:
        return self.kind == "lut"


INT_BITS = range(2, 17)
# Lookup-table (k-means codebook) weight precisions: 2^bits fp32 centroids per tensor, bits-wide indices.
LUT_BITS = range(2, 9)


def _build() -> dict[str, Precision]:
    floats = (("fp32", 32, "float32", "fp32"), ("fp16", 16, "float16", "fp16"), ("bf16", 16, "bfloat16", "bf16"),
              ("fp8_e4m3", 8, "float8_e4m3fn", "fp32"), ("fp8_e5m2", 8, "float8_e5m2", "fp32"))
    found = {name: Precision(name, bits, "float", dtype, family, name, order)
             for order, (name, bits, dtype, family) in enumerate(floats)}
    # Integers are listed narrowest first (the configuration's historical order) but shown widest first.
    for bits in INT_BITS:
        name = f"int{bits}"
        found[name] = Precision(name, bits, "int", None, "int8" if bits <= 8 else "fp32", name,
                                len(floats) + INT_BITS.stop - 1 - bits)
    # LUT precisions compute in fp32 (no CPU kernel looks codebooks up): shown after the integers, widest first.
    for bits in LUT_BITS:
        name = f"lut{bits}"
        found[name] = Precision(name, bits, "lut", None, "fp32", name,
                                len(floats) + len(INT_BITS) + LUT_BITS.stop - 1 - bits)
    return found


REGISTRY: Mapping[str, Precision] = MappingProxyType(_build())
# Canonical order (the JSON schema's enum, sweeps): fp32, fp16, bf16, fp8_e4m3, fp8_e5m2, int2..int16, lut2..lut8.
PRECISIONS: tuple[str, ...] = tuple(REGISTRY)
# Menu and slider order: fp32 first, down to int2, then lut8 down to lut2.
DISPLAY_ORDER: tuple[str, ...] = tuple(sorted(REGISTRY, key=lambda name: REGISTRY[name].order))
# The float compute families with a real CPU kernel, whose peaks the roofline measures.
FLOAT_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(p.family for p in REGISTRY.values() if p.kind == "float"))
HINT = (f"int{INT_BITS.start}..int{INT_BITS.stop - 1}, "
        + ", ".join(name for name, p in REGISTRY.items() if p.kind == "float")
        + f", lut{LUT_BITS.start}..lut{LUT_BITS.stop - 1} (weights only)")


def get(name: Any, path: str = "$") -> Precision:
    """The precision called ``name``; :class:`ConfigError` at JSON path ``path`` if there is none."""
    found = REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(path, f"{name!r} is not a precision ({HINT})")
    return found


def bits_of(name: str) -> int:
    """Storage bits per element: fp32 32, fp16/bf16 16, fp8_* 8, intN N."""
    return get(name).bits


def is_integer(name: str) -> bool:
    """Whether ``name`` is a uniform integer grid (int2..int16); False for anything else, unknown names included."""
    found = REGISTRY.get(name) if isinstance(name, str) else None
    return found is not None and found.kind == "int"


def is_lut(name: str) -> bool:
    """Whether ``name`` is a lookup-table (k-means codebook) precision (lut2..lut8); False for anything else."""
    found = REGISTRY.get(name) if isinstance(name, str) else None
    return found is not None and found.kind == "lut"


def label(name: str) -> str:
    """What the UI shows for ``name``."""
    return get(name).label


def family(name: str) -> str:
    """The CPU kernel family that computes in ``name`` (``fp32``, ``bf16``, ``fp16`` or ``int8``)."""
    return get(name).family


def integer(bits: int) -> str:
    """The integer precision of ``bits`` bits (``integer(4) == "int4"``)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in INT_BITS:
        raise ConfigError("$", f"{bits!r} bits is not an integer precision ({HINT.split(',')[0]})")
    return f"int{bits}"


def torch_dtype(name: str):
    """The ``torch.dtype`` float values of ``name`` are stored in; ValueError for integer grids (no such dtype)."""
    precision = get(name)
    if precision.dtype is None:
        raise ValueError(f"{name!r} is an integer grid or a lookup table: its codes are bit-packed, it has no torch "
                         "dtype")
    import torch  # deferred: the registry is read by modules (config, CLI parsing) that must not pay for torch

    return getattr(torch, precision.dtype)
