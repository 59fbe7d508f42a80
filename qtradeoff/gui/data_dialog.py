"""The data dialog (File → Load data…, and every dropped data file or folder) with the options the CLI's
``--data`` takes, and the input dialog for models whose file does not say what their input is (``--input`` as a
form). Both produce plain data; loading runs in the worker, never here.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from qtradeoff.core.loading.data_kinds import KIND_LABELS, KINDS, detect_kind

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _numbers(text: str) -> tuple[float, ...] | None:
    text = text.strip()
    if not text:
        return None
    return tuple(float(part) for part in text.replace(";", ",").split(",") if part.strip())


def _text(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


class DataDialog(QDialog):
    """How to read a dataset: kind, CSV label column, image size, channels, mean/std, audio rate and length,
    split sizes and seed, streaming. ``defaults`` are the model's (``ModelSummary.data_defaults``); ``chosen``
    carries ``(source, options)`` when the user clicks Load."""

    chosen = Signal(str, dict)

    def __init__(self, parent: QWidget | None, source: str = "", defaults: dict | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Load data")
        self.defaults = dict(defaults or {})
        self.source = QLineEdit(source)
        self.source.setPlaceholderText("a file, a folder, or package.module:callable")
        self.source.setToolTip("The data: a file or folder, or a dataset hook package.module:callable (imports "
                               "code: you are asked to trust it).")
        browse_file, browse_folder = QPushButton("File…"), QPushButton("Folder…")
        browse_file.clicked.connect(self._browse_file)
        browse_folder.clicked.connect(self._browse_folder)
        source_row = QHBoxLayout()
        source_row.addWidget(self.source, 1)
        source_row.addWidget(browse_file)
        source_row.addWidget(browse_folder)

        self.kind = QComboBox()
        for kind in KINDS:
            self.kind.addItem(KIND_LABELS[kind], kind)
        self.label_column = QLineEdit()
        self.label_column.setPlaceholderText("label, target or y")
        self.image_size = self._spin(1, 4096, int(self.defaults.get("image_size", 224)), "pixels")
        self.channels = QComboBox()
        self.channels.addItem("3 (RGB)", 3)
        self.channels.addItem("1 (grey)", 1)
        self.channels.setCurrentIndex(1 if int(self.defaults.get("channels", 3)) == 1 else 0)
        grey = int(self.defaults.get("channels", 3)) == 1
        self.mean = QLineEdit(_text(self.defaults.get("mean") or ((0.5,) if grey else IMAGENET_MEAN)))
        self.std = QLineEdit(_text(self.defaults.get("std") or ((0.5,) if grey else IMAGENET_STD)))
        for edit in (self.mean, self.std):
            edit.setToolTip("One value, or one per channel, applied after scaling pixels to [0, 1] as "
                            "(pixel - mean) / std; a negative std inverts images stored light-on-dark.")
        self.sample_rate = self._spin(1, 384000, int(self.defaults.get("sample_rate", 16000)), "Hz")
        self.audio_samples = self._spin(1, 1 << 24, int(self.defaults.get("audio_samples", 16000)), "samples")
        self.calib_size = self._spin(0, 1 << 24, 0, "", special="default (≤ 256)")
        self.eval_size = self._spin(0, 1 << 24, 0, "", special="default (≤ 1000)")
        self.seed = self._spin(0, 1 << 30, 0, "")
        self.stream = QComboBox()
        for text, value in (("when large (> 512 MiB)", None), ("always (read in batches)", True),
                            ("never (hold in memory)", False)):
            self.stream.addItem(text, value)
        self.problem = QLabel()
        self.problem.setStyleSheet("color:#7a1010;")
        self.problem.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Data", source_row)
        form.addRow("Kind", self.kind)
        form.addRow("Label column (CSV)", self.label_column)
        form.addRow("Image size", self.image_size)
        form.addRow("Channels", self.channels)
        form.addRow("Mean", self.mean)
        form.addRow("Std", self.std)
        form.addRow("Sample rate (audio)", self.sample_rate)
        form.addRow("Length (audio)", self.audio_samples)
        form.addRow("Calibration samples", self.calib_size)
        form.addRow("Evaluation samples", self.eval_size)
        form.addRow("Split seed", self.seed)
        form.addRow("Streaming", self.stream)
        self.form = form
        buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        self.load_button = buttons.addButton("Load", QDialogButtonBox.AcceptRole)
        self.load_button.setDefault(True)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.problem)
        layout.addWidget(buttons)
        self.kind.currentIndexChanged.connect(self._update_rows)
        self.source.textChanged.connect(self._update_rows)
        self._update_rows()

    @staticmethod
    def _spin(low: int, high: int, value: int, suffix: str, special: str = "") -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        if suffix:
            spin.setSuffix(f" {suffix}")
        if special:
            spin.setSpecialValueText(special)
        return spin

    def set_kind(self, kind: str) -> None:
        self.kind.setCurrentIndex(KINDS.index(kind))

    def effective_kind(self) -> str:
        kind = self.kind.currentData()
        text = self.source.text().strip()
        if kind == "auto" and text:
            try:
                return detect_kind(text)
            except OSError:
                return "pt"
        return kind

    def _update_rows(self) -> None:
        kind = self.effective_kind()
        images, audio = kind == "image_folder", kind == "audio_folder"
        for widget, on in ((self.label_column, kind == "csv"), (self.image_size, images), (self.channels, images),
                           (self.mean, images), (self.std, images), (self.sample_rate, audio),
                           (self.audio_samples, audio)):
            widget.setEnabled(on)

    def options(self) -> dict:
        """The options as plain data (``DataOptions`` fields); raises ValueError naming a bad field."""
        kind = self.effective_kind()
        options: dict = {"kind": self.kind.currentData(), "seed": self.seed.value()}
        if kind == "csv" and self.label_column.text().strip():
            options["label_column"] = self.label_column.text().strip()
        if kind == "image_folder":
            options["image_size"] = self.image_size.value()
            options["channels"] = self.channels.currentData()
            for name, edit in (("mean", self.mean), ("std", self.std)):
                try:
                    values = _numbers(edit.text())
                except ValueError:
                    raise ValueError(f"{name} must be numbers separated by commas (e.g. 0.5 or 0.485, 0.456, "
                                     "0.406).") from None
                if values is not None:
                    if len(values) not in (1, options["channels"]):
                        raise ValueError(f"{name} needs one value or {options['channels']} (one per channel).")
                    if name == "std" and any(v == 0 for v in values):
                        raise ValueError("std values must not be 0 (a negative std inverts the image).")
                    options[name] = list(values)
        if kind == "audio_folder":
            options["sample_rate"] = self.sample_rate.value()
            options["audio_samples"] = self.audio_samples.value()
        for name, spin in (("calib_size", self.calib_size), ("eval_size", self.eval_size)):
            if spin.value():
                options[name] = spin.value()
        if self.stream.currentData() is not None:
            options["stream"] = self.stream.currentData()
        return options

    def _accept(self) -> None:
        source = self.source.text().strip()
        if not source:
            self.problem.setText("Choose a file or folder, or type package.module:callable.")
            return
        try:
            options = self.options()
        except ValueError as error:
            self.problem.setText(str(error))
            return
        self.problem.clear()
        self.accept()
        self.chosen.emit(source, options)

    def _browse_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Data file", self.source.text(),
                                              "Data (*.csv *.npy *.npz *.pt *.pth *.safetensors);;All files (*)")
        if path:
            self.source.setText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Data folder", self.source.text())
        if path:
            self.source.setText(path)


DTYPES = ("float32", "int64", "int32", "float16", "bfloat16", "uint8", "bool")


class InputDialog(QDialog):
    """A model's input in the ``--input`` syntax as a form: name, dtype, shape (batch first) and, for integer
    ids, an exclusive upper bound (a float range otherwise). ``chosen`` carries the text."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None, model_name: str = "", message: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Model input")
        self.name = QLineEdit("x")
        self.dtype = QComboBox()
        self.dtype.addItems(DTYPES)
        self.shape = QLineEdit("1, 3, 224, 224")
        self.shape.setToolTip("The input's shape with the batch dimension first, e.g. 1, 32 for 32 token ids.")
        self.low = QLineEdit()
        self.low.setPlaceholderText("optional")
        self.high = QLineEdit()
        self.high.setPlaceholderText("for ids: the vocabulary size")
        self.preview = QLabel()
        self.problem = QLabel()
        self.problem.setStyleSheet("color:#7a1010;")
        self.problem.setWordWrap(True)
        intro = QLabel(message or f"{model_name or 'The model'} does not say what its input is; describe it. "
                       "Without data, it is evaluated on synthetic inputs drawn from this (fidelity).")
        intro.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Type", self.dtype)
        form.addRow("Shape (batch first)", self.shape)
        form.addRow("Lowest value", self.low)
        form.addRow("Upper bound (exclusive)", self.high)
        form.addRow("As --input", self.preview)
        buttons = QDialogButtonBox(QDialogButtonBox.Cancel)
        ok = buttons.addButton("Load", QDialogButtonBox.AcceptRole)
        ok.setDefault(True)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.problem)
        layout.addWidget(buttons)
        for edit in (self.name, self.shape, self.low, self.high):
            edit.textChanged.connect(self._update_preview)
        self.dtype.currentIndexChanged.connect(self._update_preview)
        self._update_preview()

    def text(self) -> str:
        """The specification text; raises ValueError naming the bad field."""
        name = self.name.text().strip() or "x"
        try:
            shape = [int(part) for part in self.shape.text().replace("×", ",").split(",") if part.strip()]
        except ValueError:
            raise ValueError("the shape must be whole numbers separated by commas, batch first (e.g. 1, 32).") \
                from None
        if not shape or any(n <= 0 for n in shape):
            raise ValueError("the shape needs at least the batch dimension, every size positive (e.g. 1, 32).")
        dtype = self.dtype.currentText()
        low, high = self.low.text().strip(), self.high.text().strip()
        for label, value in (("lowest value", low), ("upper bound", high)):
            if value:
                try:
                    float(value)
                except ValueError:
                    raise ValueError(f"the {label} must be a number.") from None
        integer = dtype.startswith(("int", "uint")) or dtype == "bool"
        if integer and dtype != "bool" and not high:
            raise ValueError("integer inputs (token ids) need an upper bound: the vocabulary size.")
        bounds = ""
        if high:
            bounds = f"<{high}" if not low or float(low) == 0 else f"{low}..{high}"
        return f"{name}:{dtype}[{','.join(map(str, shape))}]{bounds}"

    def _update_preview(self) -> None:
        try:
            self.preview.setText(self.text())
            self.problem.clear()
        except ValueError as error:
            self.preview.setText("—")
            self.problem.setText(str(error))

    def _accept(self) -> None:
        try:
            text = self.text()
        except ValueError as error:
            self.problem.setText(str(error))
            return
        self.accept()
        self.chosen.emit(text)
