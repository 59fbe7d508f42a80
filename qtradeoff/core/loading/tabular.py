"""Data files beyond tensor dicts: NumPy ``.npy`` arrays (inputs only), CSV tables (numeric feature columns and a
named label column) and ``.npz`` archives laid out like the bundled digits sample or with common key names.

Every reader is bounded before it allocates: an ``.npy`` header's shape is checked against the memory budget
(as ``_files.check_claimed`` checks a pickle's tensors), a CSV against a size and row limit; nothing is unpickled
(``allow_pickle=False``). Errors are :class:`~qtradeoff.core.loading.data.DataLoadError`-compatible
:class:`TabularError` messages of one line naming the file (and the row and column of a bad cell).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from qtradeoff.core.errors import InputError
from qtradeoff.core.loading import _files

NPY_MAGIC = b"\x93NUMPY"
# A CSV is parsed into Python objects before it becomes an array (about 60 bytes per cell): beyond this it is no
# evaluation table but a dataset to convert to .npy/.npz first.
MAX_CSV_BYTES = 64 * _files.MIB
MAX_CSV_ROWS = 2_000_000
MAX_CSV_COLUMNS = 100_000
# Column names taken as the label when --label-column is not given (case-insensitive, first match wins).
DEFAULT_LABEL_COLUMNS = ("label", "target", "y")
# Names under which an .npz (or .pt/safetensors dict) may hold the inputs and the labels, in order of preference.
INPUT_KEYS = ("inputs", "x", "X", "data", "features", "images")
LABEL_KEYS = ("labels", "y", "targets", "target")
# The bundled digits archive's layout: raw 8x8 images (0-16), labels and fixed split indices.
DIGITS_KEYS = frozenset({"images", "labels", "calib_idx", "test_idx"})


class TabularError(InputError):
    """A .npy/.csv/.npz data file could not be read; one sentence naming the file and what to do."""


def is_npy(path: Path) -> bool:
    try:
        with _files.open_binary(path) as handle:
            return handle.read(len(NPY_MAGIC)) == NPY_MAGIC
    except OSError:
        return False


def read_npy(path: Path, budget: int) -> torch.Tensor:
    """The array of an ``.npy`` file as inputs (N×…); its header's shape and dtype are checked before the data is
    read, object arrays are refused (they would need pickle)."""
    with _files.open_binary(path) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except (ValueError, OSError) as error:
            first = (str(error).splitlines() or ["bad header"])[0][:120]
            raise TabularError(f"{path} is not a readable .npy array ({first}); save it with numpy.save.") from None
    if dtype.hasobject:
        raise TabularError(f"{path} holds Python objects, not numbers; save a numeric array (numpy.save of a "
                           "float or integer array).")
    claimed = math.prod(shape) * dtype.itemsize
    try:
        _files.check_claimed(path, "its array", claimed, tuple(shape), budget)
    except _files.FileCheckError as error:
        raise TabularError(str(error)) from None
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise TabularError(f"{path} could not be read as a .npy array ({first}); it may be truncated.") from None
    return _as_tensor(path, array)


def _as_tensor(path: Path, array: np.ndarray) -> torch.Tensor:
    if array.dtype.kind not in "biuf":
        raise TabularError(f"{path} holds {array.dtype} values, not real numbers; save float or integer inputs.")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array))


def read_csv(path: Path, budget: int, label_column: str | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[str, ...]]:
    """``(inputs N×F float32, labels N int64 or None, class names)`` of a CSV table with a header row.

    Every column but the label column is a numeric feature. The label column is ``label_column`` (an error if
    absent), else the first of :data:`DEFAULT_LABEL_COLUMNS` present, else none (fidelity only). Integer labels
    are class indices; text labels become indices in sorted order (``class names`` says which is which).
    """
    size = path.stat().st_size
    if size > min(MAX_CSV_BYTES, budget):
        raise TabularError(f"{path} is {_files.human_bytes(size)}, more than the "
                           f"{_files.human_bytes(min(MAX_CSV_BYTES, budget))} a CSV table may be; convert it to "
                           ".npy/.npz (numpy.save) or use fewer rows.")
    with _files.open_binary(path) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TabularError(f"{path} is not UTF-8 text (byte {error.start}); save the CSV as UTF-8.") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise TabularError(f"{path} has no header row; the first line must name the columns.") from None
    header = [name.strip() for name in header]
    if len(header) > MAX_CSV_COLUMNS:
        raise TabularError(f"{path} has {len(header)} columns, more than {MAX_CSV_COLUMNS}; use .npy instead.")
    if all(_is_number(name) for name in header if name):
        raise TabularError(f"{path}: the first line holds numbers, not column names; add a header row naming the "
                           "columns (and the label column).")
    label_index = _label_index(path, header, label_column)
    feature_columns = [i for i in range(len(header)) if i != label_index]
    if not feature_columns:
        raise TabularError(f"{path} has no feature columns besides the label column {header[label_index]!r}.")
    features: list[list[float]] = []
    label_cells: list[str] = []
    try:
        for row_number, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(features) >= MAX_CSV_ROWS:
                raise TabularError(f"{path} has more than {MAX_CSV_ROWS:,} rows; convert it to .npy/.npz or use "
                                   "fewer rows.")
            if len(row) != len(header):
                raise TabularError(f"{path}: row {row_number} has {len(row)} cells but the header names "
                                   f"{len(header)} columns; fix that row.")
            values = []
            for index in feature_columns:
                cell = row[index].strip()
                try:
                    value = float(cell)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise TabularError(f"{path}: row {row_number}, column {header[index]!r} holds {cell[:40]!r}, "
                                       "not a finite number; feature columns must be numeric (name the label "
                                       "column with --label-column).")
                values.append(value)
            features.append(values)
            if label_index is not None:
                label_cells.append(row[label_index].strip())
    except csv.Error as error:
        raise TabularError(f"{path}: line {reader.line_num} is not valid CSV ({error}); fix that line.") from None
    if not features:
        raise TabularError(f"{path} has a header but no data rows.")
    inputs = torch.tensor(features, dtype=torch.float32)
    if label_index is None:
        return inputs, None, ()
    labels, classes = _labels(path, header[label_index], label_cells)
    return inputs, labels, classes


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_index(path: Path, header: list[str], label_column: str | None) -> int | None:
    if label_column is not None:
        if label_column in header:
            return header.index(label_column)
        raise TabularError(f"{path} has no column named {label_column!r} (columns: {', '.join(header[:12])}"
                           f"{', ...' if len(header) > 12 else ''}); name an existing label column.")
    lowered = [name.lower() for name in header]
    for candidate in DEFAULT_LABEL_COLUMNS:
        if candidate in lowered:
            return lowered.index(candidate)
    return None


def _labels(path: Path, column: str, cells: list[str]) -> tuple[torch.Tensor, tuple[str, ...]]:
    if any(not cell for cell in cells):
        row = cells.index("") + 2
        raise TabularError(f"{path}: row {row} has no value in the label column {column!r}; fill it in.")
    try:
        numbers = [float(cell) for cell in cells]
    except ValueError:
        classes = tuple(sorted(set(cells)))
        index = {name: i for i, name in enumerate(classes)}
        return torch.tensor([index[cell] for cell in cells], dtype=torch.int64), classes
    for row, value in enumerate(numbers, start=2):
        if not math.isfinite(value) or value != int(value) or value < 0:
            raise TabularError(f"{path}: row {row}, label column {column!r} holds {cells[row - 2]!r}, not a "
                               "0-based class index; use integer classes or class names.")
    return torch.tensor([int(value) for value in numbers], dtype=torch.int64), ()


def pick_named(content: dict) -> dict:
    """A dict of arrays/tensors with its inputs under ``inputs`` and labels under ``labels``, taken from the
    common key names (:data:`INPUT_KEYS`, :data:`LABEL_KEYS`) when those two are absent; otherwise unchanged."""
    if "inputs" in content:
        return content
    inputs = next((key for key in INPUT_KEYS if key in content), None)
    if inputs is None:
        return content
    labels = next((key for key in LABEL_KEYS if key in content), None)
    picked = {"inputs": content[inputs]}
    if labels is not None:
        picked["labels"] = content[labels]
    return picked


def npz_keys(path: Path) -> frozenset[str]:
    """The array names of an ``.npz`` archive (read from its zip directory; nothing is decompressed)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return frozenset(archive.files)
    except Exception:  # noqa: BLE001 - not an npz: the tensor-file reader says what it is
        return frozenset()


def is_digits_layout(path: Path) -> bool:
    """Whether ``path`` is an ``.npz`` laid out like the bundled digits sample (raw images + split indices)."""
    return path.suffix.lower() == ".npz" and DIGITS_KEYS <= npz_keys(path)
