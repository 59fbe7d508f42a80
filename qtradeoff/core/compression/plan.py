"""The per-layer plan of a configuration: what each compressible layer is set to, and which weights are kept.

A configuration is resolved once per evaluation into a :class:`Plan`. The simulation, memory accounting, the
real-kernel model, the roofline and the GUI's labels all read it, so what the UI says is what is applied, counted
and timed. Masks are computed on the tensors compression really rewrites: the weights with BatchNorm folded in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from qtradeoff.core.config import CompressionConfig, LayerSettings


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One compressible layer under a configuration.

    ``masks`` maps each compressible weight name to its keep-mask (None: nothing pruned); ``kept``/``numel`` count
    the weights the masks keep, over every compressible weight of the layer. ``folded`` says that a BatchNorm is
    folded into this layer's weights (so masks and thresholds apply to the folded values).
    """

    name: str
    kind: str
    settings: LayerSettings
    weight_names: tuple[str, ...]
    out_axis: int
    in_axis: int
    masks: Mapping[str, torch.Tensor | None]
    numel: int
    kept: int
    folded: bool
    # the float transform of this layer's weights before compression (compression/algorithms): () for none, else
    # (equalized by CLE, SmoothQuant alpha or None). A transformed layer is rewritten even at fp32 or skipped.
    transform: tuple = ()

    @property
    def rewrites(self) -> bool:
        """Whether the layer's weights differ from the base model's (quantized, pruned or transformed)."""
        settings = self.settings
        return bool(self.transform) or (
            not settings.skip and (settings.weight.precision != "fp32" or settings.prune.method != "none"))

    @property
    def pruned(self) -> bool:
        return any(mask is not None for mask in self.masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's compressible weights the plan prunes."""
        return 1.0 - self.kept / self.numel if self.numel else 0.0


@dataclass(frozen=True, eq=False)
class Plan:
    """Every compressible layer of a model under ``config``, in execution order."""

    config: CompressionConfig
    layers: tuple[LayerPlan, ...]
    transform: tuple = ()  # the Compressor's key of the model-wide float transform (CLE, SmoothQuant); () for none

    def __iter__(self) -> Iterator[LayerPlan]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, name: str) -> LayerPlan:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def settings(self) -> dict[str, LayerSettings]:
        """Layer name -> resolved settings."""
        return {layer.name: layer.settings for layer in self.layers}

    def masks(self) -> dict[str, torch.Tensor | None]:
        """``"<layer>.<weight name>"`` -> keep-mask (None where nothing is pruned)."""
        return {f"{layer.name}.{name}": mask for layer in self.layers for name, mask in layer.masks.items()}

    @property
    def pruned(self) -> bool:
        return any(layer.pruned for layer in self.layers)

    def sparsity(self) -> dict[str, float]:
        """Layer name -> fraction of its weights pruned."""
        return {layer.name: layer.sparsity for layer in self.layers}
