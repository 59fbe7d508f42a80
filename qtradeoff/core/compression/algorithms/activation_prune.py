"""Activation-based pruning: remove the output channels whose activations on the calibration data are weakest.

After Hu, Peng, Tai and Tang, "Network Trimming: A Data-Driven Neuron Pruning Approach towards Efficient Deep
Architectures" (2016, APoZ), and the mean-activation criterion of Molchanov, Tyree, Karras, Aila and Kautz,
"Pruning Convolutional Neural Networks for Resource Efficient Inference" (ICLR 2017). Statistics are taken on each
layer's output (BatchNorm folded in, before its activation function) over the calibration split:

- ``mean_abs``: mean |a| per output channel; the smallest are pruned;
- ``apoz``: the fraction of non-positive outputs (zeros after a ReLU) per channel; the largest are pruned.

Whole output channels are zeroed (``round(sparsity * channels)`` of them, lower index first among ties), so the
memory accounting is that of structured pruning.
"""

from __future__ import annotations

import torch

CRITERIA = ("mean_abs", "apoz")


class ChannelStats:
    """Running per-output-channel sums of |a| and of non-positive counts, plus the number of values per channel."""

    def __init__(self):
        self.abs_sum: torch.Tensor | None = None
        self.nonpositive: torch.Tensor | None = None
        self.count = 0

    def observe(self, output: torch.Tensor, channel_axis: int) -> None:
        a = output.detach().to(torch.float32).movedim(channel_axis, -1)
        a = a.reshape(-1, a.shape[-1])
        abs_sum, nonpositive = a.abs().sum(dim=0, dtype=torch.float64), (a <= 0).sum(dim=0, dtype=torch.float64)
        if self.abs_sum is None:
            self.abs_sum, self.nonpositive = abs_sum, nonpositive
        else:
            self.abs_sum, self.nonpositive = self.abs_sum + abs_sum, self.nonpositive + nonpositive
        self.count += a.shape[0]

    def scores(self, criterion: str) -> torch.Tensor:
        """Per channel, how much it is worth keeping (higher = kept longer) under ``criterion``."""
        if self.abs_sum is None or self.count == 0:
            raise ValueError("no activations observed for this layer")
        return channel_scores(self.abs_sum / self.count, self.nonpositive / self.count, criterion)


def channel_scores(mean_abs: torch.Tensor, apoz: torch.Tensor, criterion: str) -> torch.Tensor:
    if criterion == "mean_abs":
        return mean_abs.to(torch.float64)
    if criterion == "apoz":
        return 1.0 - apoz.to(torch.float64)
    raise ValueError(f"unknown activation pruning criterion {criterion!r} ({', '.join(CRITERIA)})")


def activation_mask(shape: torch.Size | tuple[int, ...], scores: torch.Tensor, sparsity: float,
                    out_axis: int = 0) -> torch.Tensor:
    """Keep-mask of a weight of ``shape``: the ``round(sparsity * channels)`` lowest-scoring output channels off."""
    channels = shape[out_axis]
    if scores.numel() != channels:
        raise ValueError(f"{scores.numel()} channel scores for a weight with {channels} output channels")
    count = int(round(sparsity * channels))
    keep = torch.ones(channels, dtype=torch.bool)
    if count > 0:
        keep[torch.argsort(scores, stable=True)[:count]] = False
    view = [1] * len(shape)
    view[out_axis] = channels
    return keep.reshape(view).expand(tuple(shape)).contiguous()
