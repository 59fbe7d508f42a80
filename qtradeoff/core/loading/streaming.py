"""Splits that are read from their source in batches instead of held whole: :class:`StreamedSamples` stands where
an EvalData holds its calibration or evaluation inputs, and the sources it reads (``.npy`` through a memory map,
image folders and audio folders decoded per sample, CSV tables and iterable datasets spooled to a temporary
memory-mapped file in chunks, map-style datasets indexed).

The engine only ever slices its inputs (``inputs[start:start + chunk]``, ``inputs[:n]``): a slice of at most
``limit`` samples is read into a tensor then, a longer one is another view. So the samples alive at once are
bounded by the engine's chunk sizes, whatever the split's size.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import tempfile
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from qtradeoff.core.errors import InputError

# A slice of a streamed split of at most this many samples is a tensor (the engine's chunks: EVAL_BATCH 64,
# calibration batches 32, rounding statistics' batches); a longer slice stays a view.
MATERIALIZE_LIMIT = 256
# Splits whose inputs would take more than this as float32 are streamed when the caller does not say.
STREAM_BYTES = 512 << 20
CSV_CHUNK_ROWS = 4096


class StreamError(InputError):
    """A streamed source could not be read; one sentence naming the file and what to do."""


class RowSource:
    """Samples by index: ``len``, ``sample_shape`` and ``read(indices) -> float32 batch``; ``identity`` names the
    source's content for fingerprints (path, size, modification time and the options that shape the samples)."""

    sample_shape: tuple[int, ...] = ()
    identity: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError


class StreamedSamples:
    """A split of ``source`` (the samples at ``indices``) that looks like a batch tensor to the code that slices
    it: ``len``, ``shape``, ``dtype``, ``numel``; ``split[a:b]`` is a tensor when it holds at most ``limit``
    samples. ``on_read`` (tests) sees every batch read."""

    def __init__(self, source: RowSource, indices: Sequence[int], *, limit: int = MATERIALIZE_LIMIT,
                 dtype: torch.dtype = torch.float32, on_read: Callable[[torch.Tensor], None] | None = None):
        self.source = source
        self.indices = np.asarray(indices, dtype=np.int64)
        self.limit = int(limit)
        self.dtype = dtype
        self.on_read = on_read

    # -- what the split is -------------------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.indices), *self.source.sample_shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.indices)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.source.identity.encode())
        digest.update(str(self.dtype).encode())
        digest.update(self.indices.tobytes())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"StreamedSamples({tuple(self.shape)}, {self.source.identity[:60]!r})"

    # -- reading ----------------------------------------------------------------------------------------------
    def _view(self, indices: np.ndarray) -> StreamedSamples:
        return StreamedSamples(self.source, indices, limit=self.limit, dtype=self.dtype, on_read=self.on_read)

    def _read(self, indices: np.ndarray) -> torch.Tensor:
        if len(indices) == 0:
            return torch.empty((0, *self.source.sample_shape), dtype=self.dtype)
        batch = self.source.read(indices.tolist())
        if batch.dtype != self.dtype:
            batch = batch.to(self.dtype)
        if self.on_read is not None:
            self.on_read(batch)
        return batch

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._read(self.indices[[int(key)]])[0]
        if isinstance(key, slice):
            chosen = self.indices[key]
        elif isinstance(key, (torch.Tensor, np.ndarray, list)):
            chosen = self.indices[np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key, dtype=np.int64)]
        else:
            raise TypeError(f"a streamed split is indexed by samples (an int, a slice or indices), not {key!r}")
        return self._read(chosen) if len(chosen) <= self.limit else self._view(chosen)

    def batches(self, size: int | None = None):
        """The split in order, ``size`` (default ``limit``) samples at a time."""
        size = min(size or self.limit, self.limit)
        for start in range(0, len(self), size):
            yield self._read(self.indices[start:start + size])

    def to(self, dtype: torch.dtype) -> StreamedSamples:
        view = self._view(self.indices)
        view.dtype = dtype
        return view

    def float(self) -> StreamedSamples:
        return self.to(torch.float32)

    def contiguous(self) -> StreamedSamples:
        return self

    def materialize(self) -> torch.Tensor:
        """The whole split as one tensor: only for code that cannot take batches (and small splits)."""
        return torch.cat(list(self.batches())) if len(self) else self._read(self.indices)


def is_streamed(value) -> bool:
    return isinstance(value, StreamedSamples)


def _identity(path: Path, *extra) -> str:
    info = path.stat()
    return f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}|{extra!r}"


def _finite(where, batch: torch.Tensor) -> torch.Tensor:
    if batch.is_floating_point() and not torch.isfinite(batch).all():
        raise StreamError(f"{where} holds NaN or infinite values; remove those samples or fix the preprocessing.")
    return batch


# -- sources -----------------------------------------------------------------------------------------------------
class NpyRows(RowSource):
    """The rows of an ``.npy`` array through a read-only memory map: only the rows read are in memory."""

    def __init__(self, path: Path, *, owned: bool = False):
        self.path = Path(path)
        try:
            self.array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            first = (str(error).splitlines() or [type(error).__name__])[0][:120]
            raise StreamError(f"{self.path} could not be memory-mapped as a .npy array ({first}); save it with "
                              "numpy.save.") from None
        if self.array.dtype.kind not in "biuf" or self.array.ndim < 2 or self.array.shape[0] == 0:
            raise StreamError(f"{self.path} holds {self.array.dtype} of shape {self.array.shape}; save a numeric "
                              "batch of samples (N×…).")
        self.sample_shape = tuple(int(n) for n in self.array.shape[1:])
        self.identity = _identity(self.path)
        if owned:  # a spooled temporary file: removed when the last split reading it is gone
            weakref.finalize(self, _remove, str(self.path))

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        rows = np.asarray(self.array[np.asarray(indices, dtype=np.int64)], dtype=np.float32)
        return _finite(self.path, torch.from_numpy(rows))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class DatasetRows(RowSource):
    """A map-style dataset's samples (``dataset[i]`` -> inputs or ``(inputs, label)``), read on demand."""

    def __init__(self, dataset, name: str, sample_shape: tuple[int, ...], transform: Callable | None = None):
        self.dataset = dataset
        self.name = name
        self.sample_shape = tuple(sample_shape)
        self.transform = transform
        self.identity = f"dataset:{name}:{len(dataset)}"

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        samples = []
        for index in indices:
            item = self.dataset[index]
            inputs = item[0] if isinstance(item, (tuple, list)) else item
            if self.transform is not None:
                inputs = self.transform(inputs)
            samples.append(torch.as_tensor(inputs, dtype=torch.float32))
        return _finite(self.name, torch.stack(samples))


class SpoolWriter:
    """Rows appended in chunks to a temporary raw float32 file that becomes an :class:`NpyRows` source."""

    def __init__(self, sample_shape: tuple[int, ...], directory: str | None = None):
        self.sample_shape = tuple(sample_shape)
        handle, self.path = tempfile.mkstemp(prefix="qtradeoff-spool-", suffix=".npy", dir=directory)
        self.handle = os.fdopen(handle, "w+b")
        self.rows = 0
        self._header_bytes = 128  # rewritten with the final shape at close (fixed-size 1.0 header)
        self.handle.write(b"\0" * self._header_bytes)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, *self.sample_shape)
        self.handle.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> NpyRows:
        header = {"descr": "<f4", "fortran_order": False, "shape": (self.rows, *self.sample_shape)}
        text = repr(header).encode("latin1")
        body = b"\x93NUMPY\x01\x00"
        padding = self._header_bytes - len(body) - 2 - len(text) - 1
        if padding < 0:
            raise StreamError("a spooled array's shape does not fit its header; use fewer dimensions.")
        block = text + b" " * padding + b"\n"
        self.handle.seek(0)
        self.handle.write(body + len(block).to_bytes(2, "little") + block)
        self.handle.close()
        if self.rows == 0:
            _remove(self.path)
            raise StreamError("the data holds no samples.")
        return NpyRows(Path(self.path), owned=True)


def spool_csv(path: Path, label_column: str | None = None) -> tuple[NpyRows, torch.Tensor | None]:
    """A CSV table read row by row and written in chunks of :data:`CSV_CHUNK_ROWS` rows to a memory-mapped
    temporary file (no size limit beyond the disk's); labels as CSV reading gives them (see ``tabular``)."""
    from qtradeoff.core.loading import tabular

    with open(path, newline="", encoding="utf-8-sig") as handle:
        try:
            sample = handle.read(4096)
            handle.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.reader(handle, dialect)
            header = [name.strip() for name in next(reader)]
        except (StopIteration, UnicodeDecodeError):
            raise StreamError(f"{path} has no UTF-8 header row; the first line must name the columns.") from None
        label_index = tabular._label_index(path, header, label_column)
        columns = [i for i in range(len(header)) if i != label_index]
        if not columns:
            raise StreamError(f"{path} has no feature columns besides the label column.")
        spool = SpoolWriter((len(columns),))
        chunk: list[list[float]] = []
        labels: list[str] = []
        try:
            for row_number, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise StreamError(f"{path}: row {row_number} has {len(row)} cells but the header names "
                                      f"{len(header)} columns; fix that row.")
                try:
                    values = [float(row[i]) for i in columns]
                except ValueError:
                    raise StreamError(f"{path}: row {row_number} holds a cell that is not a number in a feature "
                                      "column; feature columns must be numeric (name the label column).") from None
                if not all(math.isfinite(v) for v in values):
                    raise StreamError(f"{path}: row {row_number} holds NaN or infinite values; fix that row.")
                chunk.append(values)
                if label_index is not None:
                    labels.append(row[label_index].strip())
                if len(chunk) >= CSV_CHUNK_ROWS:
                    spool.append(np.asarray(chunk, dtype=np.float32))
                    chunk = []
        except UnicodeDecodeError:
            raise StreamError(f"{path} is not UTF-8 text; save the CSV as UTF-8.") from None
        except csv.Error as error:
            raise StreamError(f"{path}: line {reader.line_num} is not valid CSV ({error}); fix that line.") from None
        if chunk:
            spool.append(np.asarray(chunk, dtype=np.float32))
    rows = spool.close()
    if label_index is None:
        return rows, None
    label_tensor, _classes = tabular._labels(path, header[label_index], labels)
    return rows, label_tensor


def spool_iterable(items: Iterable, count: int, name: str) -> tuple[NpyRows, torch.Tensor | None]:
    """The first ``count`` items of an iterable of ``inputs`` or ``(inputs, label)`` spooled to a temporary
    memory-mapped file in chunks; labels (when every item has one) as a tensor."""
    spool = None
    chunk: list[np.ndarray] = []
    labels: list[int] = []
    labelled = True
    for position, item in enumerate(items):
        if position >= count:
            break
        inputs, label = (item[0], item[1]) if isinstance(item, (tuple, list)) and len(item) >= 2 else (item, None)
        array = np.asarray(torch.as_tensor(inputs, dtype=torch.float32))
        if spool is None:
            spool = SpoolWriter(tuple(array.shape))
        elif tuple(array.shape) != spool.sample_shape:
            raise StreamError(f"{name}: item {position} has shape {tuple(array.shape)} but the first had "
                              f"{spool.sample_shape}; every sample must have the same shape.")
        chunk.append(array)
        if label is None:
            labelled = False
        else:
            labels.append(int(label))
        if len(chunk) >= CSV_CHUNK_ROWS:
            spool.append(np.stack(chunk))
            chunk = []
    if spool is None:
        raise StreamError(f"{name} yielded no samples; return a dataset with at least a few.")
    if chunk:
        spool.append(np.stack(chunk))
    rows = spool.close()
    return rows, torch.tensor(labels, dtype=torch.int64) if labelled and labels else None
