"""Model architectures that can be built without trusting a file.

A safetensors or ``state_dict`` file holds only tensors; the architecture comes
from here: the bundled sample networks (``qtradeoff.digits_mlp``,
``qtradeoff.digits_cnn``) or any torchvision builder (``torchvision.resnet18``).
Building from this registry imports no code named by the file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from qtradeoff.core import tvcompat


class ConvBNReLU(nn.Module):
    """Convolution, batch norm and ReLU, named so that layer names read ``features.N.conv``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        padding = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class DigitsCNN(nn.Module):
    """Small CNN for 1×32×32 digits: plain, strided, depthwise, pointwise and grouped convolutions."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            ConvBNReLU(1, 16, 3),
            ConvBNReLU(16, 32, 3, stride=2),
            ConvBNReLU(32, 32, 3, groups=32),  # depthwise
            ConvBNReLU(32, 64, 1),  # pointwise
            ConvBNReLU(64, 64, 3, stride=2, groups=4),  # grouped
            ConvBNReLU(64, 128, 3, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class DigitsMLP(nn.Module):
    """Linear-heavy network for flattened 64-pixel digits: 64 → 512 → 512 → classes."""

    def __init__(self, num_classes: int = 10, hidden: int = 512):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DigitsGRU(nn.Module):
    """Sequence model: an 8×8 digit read row by row (8 steps of 8 pixels) by a GRU; its last state → classes.

    Takes the image batch the sample data gives, ``(N, 1, 8, 8)``: the channel and row axes merge into the
    time axis.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 96):
        super().__init__()
        self.gru = nn.GRU(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(x.flatten(1, -2))
        return self.head(states[:, -1])


_BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "qtradeoff.digits_cnn": DigitsCNN,
    "qtradeoff.digits_mlp": DigitsMLP,
    "qtradeoff.digits_gru": DigitsGRU,
}

# Classes a pickled module may reference without the user's trust (our own, plain nn.Module subclasses).
SAFE_CLASSES: tuple[type, ...] = (ConvBNReLU, DigitsCNN, DigitsMLP, DigitsGRU)


def is_known(name: str) -> bool:
    """Whether ``name`` can be built from this registry (no code from elsewhere)."""
    if name in _BUILTIN:
        return True
    prefix, _, builder = name.partition(".")
    return prefix == "torchvision" and builder in tvcompat.models().list_models()


def build(name: str, **kwargs) -> nn.Module:
    """Build a freshly initialised model by registry name, e.g. ``build("torchvision.resnet18", num_classes=10)``."""
    if name in _BUILTIN:
        return _BUILTIN[name](**kwargs)
    prefix, _, builder = name.partition(".")
    if prefix == "torchvision" and builder in tvcompat.models().list_models():
        models = tvcompat.models()
        if "weights_backbone" in inspect.signature(models.get_model_builder(builder)).parameters:
            kwargs.setdefault("weights_backbone", None)  # its default is a download; nothing may be fetched
        return models.get_model(builder, weights=None, **kwargs)
    raise KeyError(f"unknown architecture {name!r}")
