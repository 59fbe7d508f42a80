"""Evaluation data: the bundled digits sample and its preprocessing, split into calibration and evaluation sets.

The calibration split (used to set activation ranges) and the evaluation split
(used for accuracy) never share a sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_models"
DIGITS_FILE = SAMPLE_DIR / "digits.npz"


@dataclass(frozen=True, eq=False)
class EvalData:
    """Preprocessed inputs (and labels, when known) for calibration and evaluation."""

    name: str
    calib_inputs: torch.Tensor
    calib_labels: torch.Tensor | None
    eval_inputs: torch.Tensor
    eval_labels: torch.Tensor | None
    num_classes: int | None
    fingerprint: str  # sha256 of the tensors: identifies the data in caches and provenance

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(self.eval_inputs.shape[1:])

    @property
    def labelled(self) -> bool:
        return self.eval_labels is not None


def fingerprint(*tensors: torch.Tensor | None) -> str:
    """sha256 over the raw bytes and shapes of the given tensors."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        array = tensor.detach().contiguous().cpu().numpy()
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def preprocess_digits(images: np.ndarray, preprocessing: Mapping) -> torch.Tensor:
    """Turn raw 8×8 digit images (values 0–16) into model inputs as described by a manifest entry.

    ``preprocessing`` keys: ``size`` (side after bilinear upscaling; 8 keeps it), ``channels``
    (1, or 3 to repeat grey), ``flatten`` (bool), ``mean`` and ``std`` (applied after scaling to [0, 1]).
    """
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 16.0).unsqueeze(1)
    size = int(preprocessing.get("size", 8))
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - float(preprocessing.get("mean", 0.0))) / float(preprocessing.get("std", 1.0))
    channels = int(preprocessing.get("channels", 1))
    if channels != 1:
        x = x.repeat(1, channels, 1, 1)
    if preprocessing.get("flatten", False):
        x = x.flatten(1)
    return x.contiguous()


def digits_split(split: str, preprocessing: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of one fixed split of the bundled digits set: ``train``, ``calib`` or ``test``."""
    with np.load(DIGITS_FILE) as archive:
        indices = archive[f"{split}_idx"]
        images, labels = archive["images"][indices], archive["labels"][indices]
    return preprocess_digits(images, preprocessing), torch.from_numpy(labels.astype(np.int64))


def load_digits(preprocessing: Mapping, *, calib_size: int | None = None, eval_size: int | None = None) -> EvalData:
    """The bundled digits sample: calibration split and test split, optionally cut to the first N (fixed order)."""
    calib_inputs, calib_labels = digits_split("calib", preprocessing)
    eval_inputs, eval_labels = digits_split("test", preprocessing)
    calib_inputs, calib_labels = calib_inputs[:calib_size], calib_labels[:calib_size]
    eval_inputs, eval_labels = eval_inputs[:eval_size], eval_labels[:eval_size]
    return EvalData(
        name="digits",
        calib_inputs=calib_inputs,
        calib_labels=calib_labels,
        eval_inputs=eval_inputs,
        eval_labels=eval_labels,
        num_classes=10,
        fingerprint=fingerprint(calib_inputs, calib_labels, eval_inputs, eval_labels),
    )
