"""One entry point for every kind of evaluation data, with the options the CLI and the GUI's data dialog share
(:class:`DataOptions`): image folders, CSV, ``.npy``, ``.npz``, ``.pt``, audio folders (wav, one sub-folder per
class) and a trusted ``module:callable`` dataset hook; large sources are streamed (:mod:`.streaming`).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qtradeoff.core.loading import data as data_mod
from qtradeoff.core.loading import streaming, tabular
from qtradeoff.core.loading.data import DataLoadError, EvalData
from qtradeoff.core.loading.data_kinds import (
    AUDIO_SUFFIXES,
    HOOK_FORMAT,
    HOOK_PATTERN,
    KIND_LABELS,
    KINDS,
    detect_kind,
    is_hook,
)

_HOOK = HOOK_PATTERN
__all__ = ["AUDIO_SUFFIXES", "HOOK_FORMAT", "KINDS", "KIND_LABELS", "DataOptions", "detect_kind", "is_hook", "load",
           "load_audio_folder", "load_hook", "model_defaults"]


@dataclass(frozen=True)
class DataOptions:
    """How to read evaluation data (plain data; ``to_dict``/``from_dict`` round-trip). ``None`` means the
    default: the model's metadata/manifest where it says, else ImageNet's (images), 16 kHz and one second
    (audio), the split sizes of :func:`~qtradeoff.core.loading.data.load_data`. ``stream``: None streams splits
    larger than :data:`~qtradeoff.core.loading.streaming.STREAM_BYTES`."""

    kind: str = "auto"
    label_column: str | None = None
    image_size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    sample_rate: int | None = None
    audio_samples: int | None = None
    calib_size: int | None = None
    eval_size: int | None = None
    seed: int = 0
    stream: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataLoadError(f"data kind {self.kind!r} is not one of {', '.join(KINDS)}; choose one of those.")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.std is not None and any(v == 0 for v in self.std):
            raise DataLoadError("std must not be 0 (one value, or one per channel; negative inverts the image).")

    def to_dict(self) -> dict:
        return {key: (list(value) if isinstance(value, tuple) else value)
                for key, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values: Mapping | None) -> DataOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values or {}) - known
        if unknown:
            raise DataLoadError(f"unknown data option(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(known))}.")
        return cls(**dict(values or {}))


def model_defaults(loaded) -> dict:
    """The data options a model's metadata or manifest entry implies (image size, channels, mean/std), as
    plain data for the data dialog; empty when the model says nothing."""
    found: dict = {}
    pre = getattr(loaded, "preprocessing", None) or {}
    shape = getattr(loaded, "input_shape", None)
    if pre:
        if "size" in pre:
            found["image_size"] = int(pre["size"])
        if "channels" in pre:
            found["channels"] = int(pre["channels"])
        for key in ("mean", "std"):
            if key in pre:
                value = pre[key]
                found[key] = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    if shape is not None and len(shape) == 3:
        found.setdefault("channels", int(shape[0]))
        found.setdefault("image_size", int(shape[-1]))
    if shape is not None and len(shape) in (1, 2) and "image_size" not in found:
        found.setdefault("audio_samples", int(shape[-1]))
    return found


def load(source: str | Path, options: DataOptions | Mapping | None = None, *, preprocessing: Mapping | None = None,
         trust: bool = False, defaults: Mapping | None = None) -> EvalData:
    """Evaluation data from ``source`` read as ``options`` say (``defaults``: :func:`model_defaults` of the
    model, used where an option is None). Raises DataLoadError (one sentence) or, for an untrusted hook,
    ``model_io.NeedsTrust``."""
    if not isinstance(options, DataOptions):
        options = DataOptions.from_dict(options)
    defaults = dict(defaults or {})
    option = {f.name: getattr(options, f.name) if getattr(options, f.name) is not None else defaults.get(f.name)
              for f in dataclasses.fields(options)}
    sizes = {"calib_size": option["calib_size"], "eval_size": option["eval_size"]}
    if str(source) == "digits":
        return data_mod.load_data("digits", preprocessing=_digits_preprocessing(preprocessing, options), **sizes)
    kind = detect_kind(source) if options.kind == "auto" else options.kind
    if kind == "hook":
        return load_hook(str(source), trust=trust, seed=options.seed, stream=options.stream, **sizes)
    path = Path(source)
    if not path.exists():
        raise DataLoadError(f"{path} does not exist; choose an existing data file or folder.")
    detected = detect_kind(path)
    folder = kind in ("image_folder", "audio_folder")
    if folder != path.is_dir():
        raise DataLoadError(f"{path} is {'a folder' if path.is_dir() else 'a file'}, not "
                            f"{KIND_LABELS[kind].lower()}; choose the kind '{KIND_LABELS[detected]}' or another path.")
    if kind == "audio_folder":
        return load_audio_folder(path, sample_rate=option["sample_rate"] or 16000,
                                 samples=option["audio_samples"] or option["sample_rate"] or 16000,
                                 seed=options.seed, stream=options.stream, **sizes)
    if kind == "image_folder":
        size = int(option["image_size"] or 224)
        channels = int(option["channels"] or 3)
        mean = tuple(option["mean"] or (data_mod.IMAGENET_MEAN if channels == 3 else (0.5,)))
        std = tuple(option["std"] or (data_mod.IMAGENET_STD if channels == 3 else (0.5,)))
        for name, value in (("mean", mean), ("std", std)):
            if len(value) not in (1, channels):
                raise DataLoadError(f"{path}: {name} has {len(value)} values for {channels}-channel images; give one "
                                    f"value or {channels}.")
        if _stream_images(path, options.stream, size, channels):
            return _streamed_images(path, size, channels, mean, std, options.seed, **sizes)
        return data_mod.load_data(path, image_size=size, mean=mean, std=std, channels=channels, seed=options.seed,
                                  **sizes)
    if kind == "csv" and detected != "csv":
        raise DataLoadError(f"{path} is not named .csv; choose the kind '{KIND_LABELS[detected]}' or a CSV file.")
    if kind == "npy" and not tabular.is_npy(path):
        raise DataLoadError(f"{path} is not a .npy array (no NUMPY header); choose its kind or save it with "
                            "numpy.save.")
    if kind == "csv" and (options.stream or path.stat().st_size > tabular.MAX_CSV_BYTES):
        rows, labels = _stream_error(path, lambda: streaming.spool_csv(path, option["label_column"]))
        return _streamed_split(path.stem, rows, labels, options.seed, **sizes)
    if kind == "npy" and (options.stream or (options.stream is None and path.stat().st_size > streaming.STREAM_BYTES)):
        rows = _stream_error(path, lambda: streaming.NpyRows(path))
        return _streamed_split(path.stem, rows, None, options.seed, **sizes)
    return data_mod.load_data(path, preprocessing=_digits_preprocessing(preprocessing, options),
                              label_column=option["label_column"], seed=options.seed, **sizes)


def _digits_preprocessing(preprocessing: Mapping | None, options: DataOptions) -> dict:
    """The preprocessing of the digits (or an archive laid out like them) with the image options the user gave
    over the model's: ``--image-size 32 --channels 3`` makes them 3x32x32 for an RGB model (they were ignored).
    Only one-value mean/std apply: the digits are grey before their channels are repeated."""
    found = dict(preprocessing or data_mod.DIGITS_PREPROCESSING)
    if options.image_size is not None:
        found["size"] = int(options.image_size)
    if options.channels is not None:
        found["channels"] = int(options.channels)
    for name in ("mean", "std"):
        value = getattr(options, name)
        if value is not None:
            if len(value) != 1:
                raise DataLoadError(f"the digits are grey images: give --{name} one value, not {len(value)}.")
            found[name] = float(value[0])
    return found


def _stream_error(path: Path, read):
    try:
        return read()
    except (streaming.StreamError, tabular.TabularError) as error:
        raise DataLoadError(str(error)) from None
    except OSError as error:
        raise DataLoadError(f"{path} could not be read ({error.strerror or error}); check the file.") from None


# -- streamed splits ---------------------------------------------------------------------------------------------
def _streamed_split(name: str, rows: streaming.RowSource, labels: torch.Tensor | None, seed: int,
                    calib_size: int | None, eval_size: int | None, num_classes: int | None = None,
                    where: Path | str | None = None) -> EvalData:
    calib_idx, eval_idx = data_mod._split_indices(len(rows), calib_size, eval_size, seed, where or name)
    calib = streaming.StreamedSamples(rows, calib_idx.numpy())
    evaluation = streaming.StreamedSamples(rows, eval_idx.numpy())
    calib_labels = labels[calib_idx] if labels is not None else None
    eval_labels = labels[eval_idx] if labels is not None else None
    if num_classes is None and labels is not None and labels.numel():
        num_classes = int(labels.max()) + 1
    return EvalData(name=name, calib_inputs=calib, calib_labels=calib_labels, eval_inputs=evaluation,
                    eval_labels=eval_labels, num_classes=num_classes,
                    fingerprint=data_mod.fingerprint(calib, calib_labels, evaluation, eval_labels))


def _stream_images(root: Path, stream: bool | None, size: int, channels: int) -> bool:
    if stream is not None:
        return stream
    count = sum(1 for _ in root.glob("*/*"))
    return count * channels * size * size * 4 > streaming.STREAM_BYTES


def _streamed_images(root: Path, size: int, channels: int, mean, std, seed: int, calib_size, eval_size) -> EvalData:
    from qtradeoff.core import tvcompat

    tv = tvcompat.torchvision()
    t = tv.transforms
    transform = t.Compose([t.Resize(size), t.CenterCrop(size), *([t.Grayscale(1)] if channels == 1 else []),
                           t.ToTensor(), t.Normalize(list(mean), list(std))])
    try:
        folder = tv.datasets.ImageFolder(str(root), transform=transform, loader=data_mod._open_image)
    except (FileNotFoundError, OSError) as error:
        first = str(error).splitlines()[0][:120]
        raise DataLoadError(f"{root} is not an image folder in ImageFolder layout ({first}); "
                            "put images in one sub-folder per class.") from None
    rows = streaming.DatasetRows(folder, str(root), (channels, size, size))
    rows.identity = streaming._identity(root, size, channels, tuple(mean), tuple(std), len(folder))
    labels = torch.tensor(folder.targets, dtype=torch.int64)
    return _streamed_split(root.name, rows, labels, seed, calib_size, eval_size, num_classes=len(folder.classes),
                           where=root)


# -- audio -------------------------------------------------------------------------------------------------------
def read_wav(path: Path, sample_rate: int, samples: int) -> torch.Tensor:
    """One wav file as a float32 ``1×samples`` waveform in [-1, 1]: PCM 8/16/32-bit or float, mixed down to mono,
    resampled to ``sample_rate`` (band-limited, through the FFT) and zero-padded or centre-cropped to
    ``samples``. Read by ``scipy.io.wavfile`` (the ``audio`` extra)."""
    try:
        from scipy.io import wavfile
    except ImportError:
        raise DataLoadError(f"{path}: reading wav files needs SciPy; install qtradeoff[audio].") from None

    try:
        rate, audio = wavfile.read(str(path), mmap=False)
    except (ValueError, OSError, EOFError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise DataLoadError(f"{path} could not be read as a wav file ({first}); save it as PCM or float wav.") \
            from None
    if audio.dtype.kind == "u":  # 8-bit PCM is unsigned around 128
        audio = (audio.astype(np.float32) - 128.0) / 128.0
    elif audio.dtype.kind == "i":
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
    else:
        audio = audio.astype(np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.size == 0:
        raise DataLoadError(f"{path} holds no audio samples; remove it from the folder.")
    if rate != sample_rate:
        audio = _resample(audio, int(rate), int(sample_rate))
    if audio.shape[0] >= samples:
        start = (audio.shape[0] - samples) // 2
        audio = audio[start:start + samples]
    else:
        audio = np.pad(audio, (0, samples - audio.shape[0]))
    if not np.isfinite(audio).all():
        raise DataLoadError(f"{path} holds NaN or infinite samples; remove it from the folder.")
    return torch.from_numpy(np.ascontiguousarray(audio)).unsqueeze(0)


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``audio`` at ``target`` Hz: its spectrum cut (or zero-extended) to the new Nyquist frequency, so
    downsampling does not alias."""
    length = max(1, round(audio.shape[0] * target / rate))
    spectrum = np.fft.rfft(audio)
    kept = length // 2 + 1
    spectrum = spectrum[:kept] if spectrum.shape[0] >= kept else np.pad(spectrum, (0, kept - spectrum.shape[0]))
    return (np.fft.irfft(spectrum, n=length) * (length / audio.shape[0])).astype(np.float32)


class _AudioFolder:
    """wav files in one sub-folder per class (classes in sorted order, as ImageFolder numbers them)."""

    def __init__(self, root: Path, sample_rate: int, samples: int):
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [(f, label) for label, name in enumerate(self.classes)
                        for f in sorted((root / name).iterdir()) if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()]
        if not self.samples:
            raise DataLoadError(f"{root} has no .wav files in class sub-folders; put the wav files of each class "
                                "in a sub-folder named after it.")
        self.sample_rate, self.length = sample_rate, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        file, label = self.samples[index]
        return read_wav(file, self.sample_rate, self.length), label


def load_audio_folder(root: Path, *, sample_rate: int = 16000, samples: int = 16000, calib_size=None,
                      eval_size=None, seed: int = 0, stream: bool | None = None) -> EvalData:
    """An audio folder as EvalData of ``1×samples`` waveforms (see :func:`read_wav`), split like image folders."""
    if sample_rate <= 0 or samples <= 0:
        raise DataLoadError(f"{root}: the sample rate and the length must be positive.")
    folder = _AudioFolder(Path(root), int(sample_rate), int(samples))
    labels = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    rows = streaming.DatasetRows(folder, str(root), (1, int(samples)))
    rows.identity = streaming._identity(Path(root), sample_rate, samples, len(folder))
    if stream is None:
        stream = len(folder) * samples * 4 > streaming.STREAM_BYTES
    data = _streamed_split(Path(root).name, rows, labels, seed, calib_size, eval_size,
                           num_classes=len(folder.classes), where=root)
    return data if stream else _materialized(data)


def _materialized(data: EvalData) -> EvalData:
    calib = data.calib_inputs.materialize() if streaming.is_streamed(data.calib_inputs) else data.calib_inputs
    evaluation = data.eval_inputs.materialize() if streaming.is_streamed(data.eval_inputs) else data.eval_inputs
    return dataclasses.replace(data, calib_inputs=calib, eval_inputs=evaluation,
                               fingerprint=data_mod.fingerprint(calib, data.calib_labels, evaluation, data.eval_labels))


# -- the dataset hook --------------------------------------------------------------------------------------------
HOOK_DEFAULT_ITEMS = data_mod.DEFAULT_CALIB_SIZE + data_mod.DEFAULT_EVAL_SIZE


def load_hook(spec: str, *, trust: bool = False, calib_size=None, eval_size=None, seed: int = 0,
              stream: bool | None = None) -> EvalData:
    """The data a trusted ``package.module:callable`` returns: a map-style dataset (``len`` and ``[i]``) or an
    iterable of samples, each ``inputs`` or ``(inputs, label)``. Importing it runs code: without ``trust`` this
    raises ``model_io.NeedsTrust`` (the CLI's ``--trust``, the GUI's consent)."""
    from qtradeoff.core.loading import model_io

    if not _HOOK.match(spec):
        raise DataLoadError(f"{spec!r} is not a dataset hook; write it as package.module:callable.")
    if not trust:
        raise model_io.NeedsTrust(f"the dataset hook {spec} imports and runs code; pass --trust to allow it.",
                                  globals=[spec], format=HOOK_FORMAT)
    module_name, _, attr = spec.partition(":")
    model_io._before_user_code()
    try:
        target = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        # a function or class builds the dataset; a dataset object (or any iterable) is the dataset
        is_data = hasattr(target, "__getitem__") or hasattr(target, "__iter__")
        dataset = target() if callable(target) and (isinstance(target, type) or not is_data) else target
    except Exception as error:  # noqa: BLE001 - the user's code may raise anything
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise DataLoadError(f"the dataset hook {spec} failed ({type(error).__name__}: {first}); fix it or check "
                            "the name.") from None
    try:
        if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            count = len(dataset)
            if count == 0:
                raise DataLoadError(f"the dataset hook {spec} returned an empty dataset; return some samples.")
            first = dataset[0]
            inputs, label = (first[0], first[1]) if isinstance(first, (tuple, list)) and len(first) >= 2 \
                else (first, None)
            shape = tuple(torch.as_tensor(inputs).shape)
            rows = streaming.DatasetRows(dataset, spec, shape)
            labels = None
            if label is not None:
                labels = torch.tensor([int(dataset[i][1]) for i in range(count)], dtype=torch.int64)
            data = _streamed_split(spec, rows, labels, seed, calib_size, eval_size, where=spec)
            if stream is None:
                stream = count * math.prod(shape) * 4 > streaming.STREAM_BYTES
        elif hasattr(dataset, "__iter__"):
            wanted = (calib_size if calib_size is not None else data_mod.DEFAULT_CALIB_SIZE) + \
                (eval_size if eval_size is not None else data_mod.DEFAULT_EVAL_SIZE)
            rows, labels = streaming.spool_iterable(iter(dataset), wanted, spec)
            data = _streamed_split(spec, rows, labels, seed, calib_size, eval_size, where=spec)
            if stream is None:
                stream = rows.array.nbytes > streaming.STREAM_BYTES
        else:
            raise DataLoadError(f"the dataset hook {spec} returned {type(dataset).__name__}, not a dataset or an "
                                "iterable of (inputs, label); return a torch Dataset.")
        return data if stream else _materialized(data)
    except DataLoadError:
        raise
    except streaming.StreamError as error:
        raise DataLoadError(str(error)) from None
    except Exception as error:  # noqa: BLE001 - the user's dataset code may raise anything
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise DataLoadError(f"reading the dataset hook {spec} failed ({type(error).__name__}: {first}); each item "
                            "must be inputs or (inputs, integer label).") from None
