"""Evaluation data: the bundled digits sample and its preprocessing, split into calibration and evaluation sets.

The calibration split (used to set activation ranges) and the evaluation split
(used for accuracy) never share a sample.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qtradeoff.core import runtime
from qtradeoff.core.errors import InputError
from qtradeoff.core.loading import _files, tabular

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_models"
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
    synthetic: bool = False  # drawn from an input specification: figures are fidelity on synthetic inputs
    input_spec: dict | None = None  # the input specification the inputs follow (input_spec.InputSpec.to_dict)

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
        if not isinstance(tensor, torch.Tensor):  # a streamed split: its source's identity and its indices
            digest.update(str(tensor.fingerprint).encode())
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


def digits_split(split: str, preprocessing: Mapping, file: Path = DIGITS_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of one fixed split of the bundled digits set (or an archive laid out like it, ``file``):
    ``train``, ``calib`` or ``test``."""
    with np.load(file, allow_pickle=False) as archive:
        indices = archive[f"{split}_idx"]
        images, labels = archive["images"][indices], archive["labels"][indices]
    return preprocess_digits(images, preprocessing), torch.from_numpy(labels.astype(np.int64))


def load_digits(preprocessing: Mapping, *, calib_size: int | None = None, eval_size: int | None = None,
                file: Path = DIGITS_FILE) -> EvalData:
    """The bundled digits sample: calibration split and test split, optionally cut to the first N (fixed order)."""
    calib_inputs, calib_labels = digits_split("calib", preprocessing, file)
    eval_inputs, eval_labels = digits_split("test", preprocessing, file)
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


# ----------------------------------------------------------------------------------------------------------------
# User data: image folders and tensor files, checked like model files (see qtradeoff.core.loading._files)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CALIB_SIZE = 256
DEFAULT_EVAL_SIZE = 1000
# The bundled sample's default preprocessing: that of the default sample model (digits_cnn).
DIGITS_PREPROCESSING = {"size": 32, "channels": 1, "flatten": False, "mean": 0.3, "std": 0.4}


class DataLoadError(InputError):
    """A dataset could not be loaded or does not fit the model; one sentence naming the file and what to do."""


def load_data(
    source: str | Path,
    *,
    preprocessing: Mapping | None = None,
    image_size: int = 224,
    crop_size: int | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    calib_size: int | None = None,
    eval_size: int | None = None,
    seed: int = 0,
    memory_budget: int | None = None,
    isolate: bool = True,
    label_column: str | None = None,
    channels: int = 3,
) -> EvalData:
    """Load evaluation data: ``"digits"`` (the bundled sample), an ImageFolder directory, or a tensor file.

    - ``"digits"``: fixed calibration/test splits with ``preprocessing`` (a manifest entry's; default 1×32×32).
    - A directory in ImageFolder layout (``root/<class>/<image>``): images resized so the short side is
      ``image_size``, centre-cropped to ``crop_size`` (default ``image_size``), converted to ``channels`` (3: RGB,
      1: grey), normalised with ``mean``/``std``.
    - A ``.pt`` (read with ``weights_only=True``), ``.npz`` or safetensors file holding ``inputs`` and optional
      ``labels`` (or a bare tensor of inputs; ``x``/``y``, ``data``/``target``... are taken too); the format is
      recognised from content, not extension. An ``.npz`` laid out like the bundled digits archive (``images``,
      ``labels``, ``calib_idx``, ``test_idx``) is read as the digits sample is, with ``preprocessing``.
    - A ``.npy`` array: inputs only (fidelity against fp32, no accuracy).
    - A ``.csv`` table with a header row: numeric feature columns and the label column ``label_column`` (default:
      a column named label/target/y when there is one); see :mod:`~qtradeoff.core.loading.tabular`.

    A tensor file is first read in the loader's child process with a memory limit (``isolate``, the default), as
    model files are; the pickle of a ``.pt`` is estimated before anything is allocated (stride-0 views at full size).

    Image folders and tensor files are split by a seeded permutation into disjoint calibration (first
    ``calib_size``, default min(256, 20 %)) and evaluation (next ``eval_size``, default the rest up to 1000) sets.
    """
    if str(source) == "digits":
        return load_digits(preprocessing or DIGITS_PREPROCESSING, calib_size=calib_size, eval_size=eval_size)
    path = Path(source)
    budget = memory_budget or _files.memory_budget()
    if path.is_dir():
        return _load_image_folder(path, image_size, crop_size or image_size, mean, std, calib_size, eval_size, seed,
                                  channels)
    if isolate:
        _probe_isolated(path, budget, label_column)
    inputs, labels = _read_checked(path, budget, label_column)
    if tabular.is_digits_layout(path):
        return replace(load_digits(preprocessing or DIGITS_PREPROCESSING, calib_size=calib_size,
                                   eval_size=eval_size, file=path), name=path.stem)
    return _split(path.stem, inputs, labels, None, calib_size, eval_size, seed, path)


def _read_checked(path: Path, budget: int, label_column: str | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A tensor file's inputs and labels, after the checks every user file passes (see ``_files``) and an
    estimate of what its pickle will allocate, made before anything is allocated."""
    try:
        size = _files.check_regular_file(path, budget, what="data")
        if tabular.is_npy(path):
            return _checked_content(path, {"inputs": tabular.read_npy(path, budget)})
        if path.suffix.lower() in (".csv", ".tsv"):
            inputs, labels, _classes = tabular.read_csv(path, budget, label_column)
            return _checked_content(path, {"inputs": inputs, "labels": labels})
        sniffed = _files.sniff(path, size, budget)
        if sniffed.kind in ("torch_zip", "pickle"):
            scan = _files.scan_file(path, sniffed.kind)
            if scan.protocol >= 4:
                raise DataLoadError(f"{path} was saved with pickle protocol {scan.protocol}, which safe loading "
                                    "cannot read; re-save it with the default protocol (torch.save without "
                                    "pickle_protocol).")
            if scan.allocating_calls():
                raise DataLoadError(f"{path} asks to allocate memory of a size it chooses "
                                    f"({', '.join(scan.allocating_calls())} called with a size), which torch.save "
                                    "never writes; save plain tensors instead.")
            _files.check_claimed(path, "its storages", scan.storage_bytes, None, budget, ratio=False)
            _files.check_claimed(path, "its tensors' shapes", scan.tensor_bytes, scan.largest, budget)
    except (_files.FileCheckError, tabular.TabularError) as error:
        raise DataLoadError(str(error)) from None
    return _read_tensor_file(path, sniffed)


def probe_data_file(path: str, memory_budget: int, label_column: str | None = None) -> dict:
    """Read a data file as :func:`load_data` would (run in the loader's child: see :func:`_probe_isolated`);
    the verdict is plain data."""
    try:
        inputs, labels = _read_checked(Path(path), memory_budget, label_column)
    except DataLoadError as error:
        return {"ok": False, "error": "DataLoadError", "message": str(error)}
    except MemoryError:
        return {"ok": False, "error": "DataLoadError",
                "message": f"{path} needs more memory than the loader may use; use a smaller file."}
    return {"ok": True, "samples": int(inputs.shape[0]), "input_shape": list(inputs.shape[1:]),
            "labelled": labels is not None}


def _probe_isolated(path: Path, budget: int, label_column: str | None = None) -> None:
    """Read the file first in the loader's child process, with the memory limit and timeout model files get, so
    that a hostile data file exhausts or crashes the child, not this process."""
    from qtradeoff.core.loading import _load_child
    from qtradeoff.core.loading.model_io import DEFAULT_TIMEOUT, ModelLoadError

    try:
        verdict = _load_child.run_isolated({"path": str(path), "memory_budget": budget, "label_column": label_column},
                                           timeout=DEFAULT_TIMEOUT,
                                           memory_bytes=budget, label=str(path), target=PROBE_TARGET)
    except ModelLoadError as error:
        raise DataLoadError(str(error)) from None
    if not verdict.get("ok"):
        raise DataLoadError(verdict.get("message") or f"{path} could not be read as data.")
    used = verdict.get("loader_bytes")
    if used is not None and used > budget:
        raise DataLoadError(f"{path}: reading it took {_files.human_bytes(used)} in the loader process, more than "
                            f"the memory budget of {_files.human_bytes(budget)}; use a smaller file.")


PROBE_TARGET = "qtradeoff.core.loading.data:probe_data_file"


TENSOR_FILE_KINDS = ("npz", "safetensors", "torch_zip", "pickle")


def _read_tensor_file(path: Path, sniffed) -> tuple[torch.Tensor, torch.Tensor | None]:
    return _checked_content(path, read_tensor_content(path, sniffed))


def read_tensor_content(path: Path, sniffed):
    """What a sniffed tensor file holds (a tensor, a tuple or a dict of tensors), unchecked; one-sentence errors."""
    try:
        if sniffed.kind == "npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {name: torch.from_numpy(archive[name].copy()) for name in archive.files}
        elif sniffed.kind == "safetensors":
            from safetensors.torch import load_file

            with _files.utf8_name(path) as name:
                content = load_file(name)
        elif sniffed.kind in ("torch_zip", "pickle"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                content = torch.load(path, map_location="cpu", weights_only=True)
        elif sniffed.kind in ("torchscript", "export"):
            raise DataLoadError(f"{path} is a model, not data; load it as the model instead.")
        else:
            what = sniffed.description or "not a recognised data file"
            raise DataLoadError(
                f"{path} is {what}; use an image folder or a .pt/.npz/safetensors file with 'inputs' (and 'labels')."
            )
    except DataLoadError:
        raise
    except Exception as error:  # noqa: BLE001 - unpickling and parsing failures of every kind
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        if "Weights only load failed" in str(error) or "allow_pickle" in str(error):
            raise DataLoadError(f"{path} contains Python objects beyond tensors; save plain tensors instead.") \
                from None
        raise DataLoadError(f"{path} could not be read as data ({first}); it may be truncated or damaged.") from None
    return content


def _checked_content(path: Path, content) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A file's content (a tensor, an (inputs, labels) pair or a dict) as checked ``(inputs, labels)``."""
    if isinstance(content, Mapping):
        content = tabular.pick_named(dict(content))
    if isinstance(content, torch.Tensor):
        content = {"inputs": content}
    if isinstance(content, (tuple, list)) and len(content) == 2 and all(isinstance(t, torch.Tensor) for t in content):
        content = {"inputs": content[0], "labels": content[1]}
    if not isinstance(content, Mapping) or not isinstance(content.get("inputs"), torch.Tensor):
        raise DataLoadError(f"{path} has no 'inputs' tensor; save a dict with 'inputs' and optional 'labels'.")
    inputs, labels = content["inputs"], content.get("labels")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise DataLoadError(f"{path}: 'inputs' must be a batch of samples (shape N×…), got {tuple(inputs.shape)}.")
    not_real = DataLoadError(f"{path}: 'inputs' are {str(inputs.dtype).removeprefix('torch.')}, not real "
                             "numbers; save real-valued (float or integer) inputs.")
    if inputs.is_complex() or inputs.is_quantized:
        # Casting complex to float drops the imaginary part without a word; quantized tensors need their scale.
        raise not_real
    if not inputs.is_floating_point():
        try:
            inputs = inputs.float()
        except (RuntimeError, TypeError):  # bit-packed and other dtypes with no numeric meaning
            raise not_real from None
    _check_finite(path, inputs)
    if labels is not None:
        if isinstance(labels, torch.Tensor) and labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]  # a column vector of labels, as scikit-learn and CSV exports often write them
        if (not isinstance(labels, torch.Tensor) or labels.shape != inputs.shape[:1] or labels.is_floating_point()
                or labels.is_complex() or labels.dtype == torch.bool):
            raise DataLoadError(
                f"{path}: 'labels' must be N integer class indices matching 'inputs' ({inputs.shape[0]} samples)."
            )
        labels = labels.long()
        if labels.min() < 0:
            raise DataLoadError(f"{path}: 'labels' contains negative class indices; use 0-based class indices.")
    return inputs.float(), labels


_FINITE_CHUNK = 1 << 24  # elements checked at a time: the check's own mask stays small beside the data


def _check_finite(path: Path, inputs: torch.Tensor) -> None:
    """Refuse inputs holding NaN or ±Inf: every accuracy, calibration range and SQNR computed from them would be
    meaningless (a NaN range poisons every layer's quantization grid), so no number is better than a wrong one."""
    per_sample = max(1, inputs[0].numel())
    step = max(1, _FINITE_CHUNK // per_sample)
    bad = torch.zeros(inputs.shape[0], dtype=torch.bool)
    for start in range(0, inputs.shape[0], step):
        chunk = inputs[start:start + step].reshape(min(step, inputs.shape[0] - start), -1)
        bad[start:start + step] = ~torch.isfinite(chunk).all(dim=1)
    count = int(bad.sum())
    if count:
        first = int(bad.nonzero()[0])
        raise DataLoadError(f"{path}: 'inputs' hold NaN or infinite values in {count} of {inputs.shape[0]} samples "
                            f"(the first is sample {first}); remove those samples or fix the preprocessing.")


def _split_indices(count: int, calib_size: int | None, eval_size: int | None, seed: int,
                   where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if calib_size is None:
        calib_size = min(DEFAULT_CALIB_SIZE, max(1, count // 5))
    if eval_size is None:
        eval_size = min(DEFAULT_EVAL_SIZE, count - calib_size)
    if calib_size < 0 or eval_size < 1 or calib_size + eval_size > count:
        raise DataLoadError(
            f"{where} has {count} samples, not enough for {calib_size} calibration + {eval_size} evaluation samples; "
            "choose smaller split sizes."
        )
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:calib_size], order[calib_size:calib_size + eval_size]


def _split(name: str, inputs: torch.Tensor, labels: torch.Tensor | None, num_classes: int | None,
           calib_size: int | None, eval_size: int | None, seed: int, where: Path) -> EvalData:
    calib_idx, eval_idx = _split_indices(inputs.shape[0], calib_size, eval_size, seed, where)
    calib_inputs, eval_inputs = inputs[calib_idx].contiguous(), inputs[eval_idx].contiguous()
    calib_labels = labels[calib_idx] if labels is not None else None
    eval_labels = labels[eval_idx] if labels is not None else None
    if num_classes is None and labels is not None:
        num_classes = int(labels.max()) + 1
    return EvalData(
        name=name,
        calib_inputs=calib_inputs,
        calib_labels=calib_labels,
        eval_inputs=eval_inputs,
        eval_labels=eval_labels,
        num_classes=num_classes,
        fingerprint=fingerprint(calib_inputs, calib_labels, eval_inputs, eval_labels),
    )


def _load_image_folder(root: Path, image_size: int, crop_size: int, mean, std, calib_size, eval_size,
                       seed: int, channels: int = 3) -> EvalData:
    from qtradeoff.core import tvcompat

    tv = tvcompat.torchvision()
    transforms = tv.transforms
    if channels not in (1, 3):
        raise DataLoadError(f"{root}: images can be read with 1 (grey) or 3 (RGB) channels, not {channels}.")
    transform = transforms.Compose([
        transforms.Resize(image_size),
        transforms.CenterCrop(crop_size),
        *([transforms.Grayscale(1)] if channels == 1 else []),
        transforms.ToTensor(),
        transforms.Normalize(list(mean), list(std)),
    ])
    try:
        folder = tv.datasets.ImageFolder(str(root), transform=transform, loader=_open_image)
    except (FileNotFoundError, OSError) as error:
        raise DataLoadError(
            f"{root} is not an image folder in ImageFolder layout ({str(error).splitlines()[0][:120]}); "
            "put images in one sub-folder per class."
        ) from None
    calib_idx, eval_idx = _split_indices(len(folder), calib_size, eval_size, seed, root)
    # Only the selected samples are decoded, so large folders cost only what the splits use.
    calib_inputs, calib_labels = _decode(folder, calib_idx)
    eval_inputs, eval_labels = _decode(folder, eval_idx)
    return EvalData(
        name=root.name,
        calib_inputs=calib_inputs,
        calib_labels=calib_labels,
        eval_inputs=eval_inputs,
        eval_labels=eval_labels,
        num_classes=len(folder.classes),
        fingerprint=fingerprint(calib_inputs, calib_labels, eval_inputs, eval_labels),
    )


# An image file larger than this is no evaluation sample (a 24-megapixel photo is ~10 MB as JPEG, ~70 MB as PNG);
# PIL's own pixel limit (Image.MAX_IMAGE_PIXELS) still bounds what a small file may decode to.
MAX_IMAGE_BYTES = 128 << 20


def _open_image(file: str):
    """An image file as RGB, opened only once it is known to be a regular file: a FIFO or device named like an
    image (``x.png``) would block ``open`` forever. Opened non-blocking and checked through the descriptor, so a
    file swapped for a pipe after a first look cannot block either."""
    from PIL import Image

    try:
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise DataLoadError(f"{file} cannot be opened ({error.strerror}); check its permissions.") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise DataLoadError(f"{file} is not a regular file (a pipe, socket or device) although it is named like "
                                "an image; remove it from the folder.")
        if info.st_size > MAX_IMAGE_BYTES:
            raise DataLoadError(f"{file} is {info.st_size >> 20} MiB, more than the {MAX_IMAGE_BYTES >> 20} MiB an "
                                "evaluation image may be; remove it from the folder or shrink it.")
        image = Image.open(handle)
        return image.convert("RGB")


def _decode(folder, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for index in indices.tolist():
        file, label = folder.samples[index]
        try:
            image, _ = folder[index]
        except DataLoadError:
            raise
        except Exception as error:  # noqa: BLE001 - PIL raises many types for damaged images
            raise DataLoadError(
                f"{file} could not be read as an image ({type(error).__name__}); remove or replace it."
            ) from None
        images.append(image)
        labels.append(label)
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def check_compatible(model, data: EvalData) -> None:
    """Raise DataLoadError unless ``model`` (LoadedModel or nn.Module) accepts ``data``'s inputs and classes.

    Runs one evaluation sample through the model; the output's last dimension must cover every class index.
    """
    module = getattr(model, "module", model)
    where = getattr(model, "path", None) or type(module).__name__
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(data.input_shape):
        raise DataLoadError(
            f"{where} expects inputs of shape {tuple(expected)} but {data.name} has {tuple(data.input_shape)}; "
            "change the data's preprocessing (size, channels, flatten)."
        )
    try:
        with torch.no_grad(), runtime.running():
            output = module(data.eval_inputs[:1])
    except Exception as error:  # noqa: BLE001 - user model code may raise anything
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise DataLoadError(
            f"{where} cannot run on {data.name}'s inputs of shape {tuple(data.input_shape)} ({first}); "
            "change the data's preprocessing or choose the matching model."
        ) from None
    if not isinstance(output, torch.Tensor):
        raise DataLoadError(f"{where} returns {type(output).__name__}, not one tensor; choose which output is "
                            "scored (CLI --score-output NAME_OR_INDEX, e.g. logits or 0).")
    if output.ndim == 0 or output.shape[0] != 1:
        raise DataLoadError(f"{where} returns {tuple(output.shape)} for one sample, not a batch (batch dimension "
                            "first); choose a model whose outputs are batched.")
    if data.eval_labels is None or output.ndim != 2:
        return  # fidelity (and MSE/cosine) against fp32: any batched tensor will do
    classes = output.shape[1]
    needed = data.num_classes
    if data.eval_labels is not None and data.eval_labels.numel():
        needed = max(needed or 0, int(data.eval_labels.max()) + 1)
    if needed is not None and classes < needed:
        raise DataLoadError(
            f"{where} predicts {classes} classes but {data.name} has {needed}; choose data labelled for this model."
        )
