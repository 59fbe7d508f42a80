"""Fitting a checkpoint's tensors to an architecture the way the packages that ship them do (issue 16).

Training code saves weights nested (``state_dict``, ``model``, Lightning's ``.ckpt``) and prefixed by whatever
held the network (``model.``, ``module.``, ``encoder.``, ``net.``), sometimes beside tensors of its own (a loss's
class weights, an EMA counter); packages load them with ``strict=False`` or by stripping the prefix. Here the
prefix is chosen by how many of the architecture's parameters it makes fit, the tensors are loaded leniently,
and what did not fit is *reported*: missing and unexpected keys become warnings of the LoadedModel (so every
Result, the CLI table and the GUI note carry them). Only a missing weight of a compressible layer (a convolution
or a linear layer) refuses the file: its figures would be those of random weights.

Pure functions of key names and shapes; nothing here loads or imports code.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

# Modules whose weight the engine compresses; a file lacking one of those weights cannot be evaluated.
COMPRESSIBLE_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                        nn.ConvTranspose3d, nn.Linear)
MAX_PREFIX_DEPTH = 3
_SHOWN = 3


def compressible_weights(module: nn.Module) -> frozenset[str]:
    """State-dict keys of the weights of ``module``'s convolutions and linear layers (a meta build will do)."""
    return frozenset(f"{name}.weight" if name else "weight" for name, sub in module.named_modules()
                     if isinstance(sub, COMPRESSIBLE_TYPES) and getattr(sub, "weight", None) is not None)


def _ignored(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # BatchNorm's step counter: absent from older checkpoints


@dataclass
class Fit:
    """How a checkpoint's tensors fit an architecture's keys, after stripping ``prefix``."""

    state: OrderedDict  # the tensors to load, under the architecture's names (unexpected ones left out)
    prefix: str
    matched: int  # keys present in both
    missing: list[str] = field(default_factory=list)  # the architecture's keys the file lacks
    unexpected: list[str] = field(default_factory=list)  # the file's keys the architecture lacks (original names)

    def missing_compressible(self, compressible: Iterable[str]) -> list[str]:
        wanted = set(compressible)
        return [key for key in self.missing if key in wanted]

    def warnings(self, file_name: str) -> list[str]:
        """One sentence per kind of misfit (none when everything fit)."""
        found = []
        if self.missing:
            found.append(f"{file_name}: {_count(self.missing)} of the model's are not in the file and keep "
                         f"their initial values ({_names(self.missing)}); loaded with strict=False")
        if self.unexpected:
            found.append(f"{file_name}: {_count(self.unexpected)} in the file are not in the model and were "
                         f"ignored ({_names(self.unexpected)}); loaded with strict=False")
        return found


def _count(keys: list[str]) -> str:
    return f"{len(keys)} tensor{'s' if len(keys) != 1 else ''}"


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (f", and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def candidate_prefixes(keys: Iterable[str]) -> list[str]:
    """``""`` and every leading run of up to ``MAX_PREFIX_DEPTH`` dotted components the keys share, most keys
    first (``model.``, ``model.encoder.`` …)."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for depth in range(1, min(MAX_PREFIX_DEPTH, len(parts) - 1) + 1):
            prefix = ".".join(parts[:depth]) + "."
            counts[prefix] = counts.get(prefix, 0) + 1
    return ["", *sorted(counts, key=lambda p: (-counts[p], len(p)))]


def strip(state: Mapping[str, torch.Tensor], prefix: str) -> tuple[OrderedDict, list[str]]:
    """The tensors under ``prefix`` with it removed, and the keys outside it."""
    inside: OrderedDict = OrderedDict()
    outside = []
    for key, value in state.items():
        if key.startswith(prefix):
            inside[key[len(prefix):]] = value
        else:
            outside.append(key)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:  # torch.save's per-module versions travel with the tensors (see unwrap_state_dict)
        root = prefix.rstrip(".")
        inside._metadata = OrderedDict(("" if k == root else k[len(prefix):], v) for k, v in metadata.items()
                                       if not prefix or k == root or k.startswith(prefix))
    return inside, outside


def fit(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> Fit:
    """Strip the prefix under which most of ``expected``'s keys are found (names only: a head of another size
    still counts, its shape is the caller's to judge) and sort the rest into missing and unexpected."""
    wanted = {key for key in expected if not _ignored(key)}
    prefix, best = "", -1
    for candidate in candidate_prefixes(state):  # "" first, then by how many keys share it: ties keep the first
        score = sum(1 for key in state if key.startswith(candidate) and key[len(candidate):] in wanted)
        if score > best:
            prefix, best = candidate, score
    inside, outside = strip(state, prefix)
    unexpected = [key for key in outside if not _ignored(key)]
    unexpected += [prefix + key for key in inside if key not in expected and not _ignored(key)]
    kept = OrderedDict((key, value) for key, value in inside.items() if key in expected or _ignored(key))
    if hasattr(inside, "_metadata"):
        kept._metadata = inside._metadata
    missing = [key for key in expected if key not in inside and not _ignored(key)]
    return Fit(kept, prefix, sum(1 for key in kept if not _ignored(key)), missing, unexpected)


def refusal(file_name: str, architecture: str, missing: list[str]) -> str:
    """The one sentence refusing a file that lacks a compressible layer's weights."""
    layer = missing[0].removesuffix(".weight")
    more = f" (and {len(missing) - 1} more layers)" if len(missing) > 1 else ""
    return (f"{file_name} has no weights for the layer {layer}{more} of {architecture}; "
            "choose the matching architecture or a complete checkpoint.")
