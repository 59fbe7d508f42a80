"""Writing the chosen configuration as a deployable model file, and checking the file in a fresh process.

A *format* is a small :class:`ExportFormat` value registered by name: how to write the file from an
:class:`ExportSource` (the engine's base model, plan, simulated and real-kernel models, calibration inputs), its
file suffix, the standalone runner script that reloads it in a fresh process, and which check its outputs must
pass. Formats live one per module; :data:`FORMAT_MODULES` lists the modules that register one (a new format is one
module plus one entry there). :func:`export_iter` writes atomically, verifies (see :mod:`.verify`) and yields
Progress then an :class:`~qtradeoff.core.export.verify.ExportReport`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qtradeoff.core.errors import InputError, QtradeoffError

RUNNERS_DIR = Path(__file__).resolve().parent / "runners"
# Modules that call register() on import, in the order formats are listed.
FORMAT_MODULES = ("qtradeoff.core.export.torch_int8", "qtradeoff.core.export.packed",
                  "qtradeoff.core.export.onnx_format")
# What a format's outputs are checked against (verify.check_outputs): "int8" real kernels must reproduce the
# simulated accuracy within the bound; "exact" files must reproduce the simulated outputs to float error.
CHECKS = ("int8", "exact")


class ExportError(QtradeoffError):
    """The export could not be written, or the written file failed its verification (the message says which)."""


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    ``write(source, path)`` writes the file at ``path`` (a temporary name in the destination folder; the caller
    renames it into place) and returns a one-sentence note on what was written ("" when nothing to say).
    ``runner`` is the script verification runs as ``python RUNNER MODEL INPUTS.npy OUTPUTS.npy [--threads N]
    [--latency-batches 1,32] [--repeats K]`` (see ``runners/run_torch.py``); ``check`` is one of :data:`CHECKS`.
    ``standalone`` runners run with qtradeoff unimportable (the file must need only its runtime);
    ``max_bytes(weight_bytes)``, when given, bounds the file's size by the counted weight bytes.
    """

    name: str
    suffix: str
    write: Callable[[ExportSource, Path], str]
    runner: Path
    check: str
    description: str = ""
    standalone: bool = True
    max_bytes: Callable[[int], int] | None = None
    runner_args: tuple[str, ...] = ()  # extra options for the runner (e.g. ONNX Runtime's optimization level)
    # plan -> the configuration the file really computes when it is not the plan's own (None when it is), whose
    # simulation the report shows beside the configured one (torch-int8 on a CPU without VNNI: 7-bit activations)
    as_run: Callable[[object], object] | None = None

    def __post_init__(self):
        if self.check not in CHECKS:
            raise ValueError(f"check must be one of {CHECKS}, got {self.check!r}")


_FORMATS: dict[str, ExportFormat] = {}
_loaded = False


def register(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the registry (a format module calls this on import); the same name replaces."""
    _FORMATS[fmt.name] = fmt
    return fmt


def _load_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in FORMAT_MODULES:
        with contextlib.suppress(ImportError):  # a format whose optional dependency is missing is not offered
            importlib.import_module(module)
    _loaded = True


def format_names() -> tuple[str, ...]:
    """The registered formats (those whose dependencies import here)."""
    _load_modules()
    return tuple(_FORMATS)


def get_format(name: str) -> ExportFormat:
    _load_modules()
    try:
        return _FORMATS[name]
    except KeyError:
        raise ExportError(f"unknown export format {name!r}; choose one of {', '.join(_FORMATS)}") from None


@dataclass(eq=False)
class ExportSource:
    """What a format writer may read: the engine of the model and data, and the configuration resolved once.

    The simulated and real-kernel models come from the engine's own caches (the real int8 model is the one the
    engine times), so the exported file is built from exactly what was measured.
    """

    engine: object  # qtradeoff.core.engine.engine.Engine (typed loosely: export sits above engine)
    config: object  # CompressionConfig
    plan: object = field(init=False)

    def __post_init__(self):
        self.plan = self.engine.plan(self.config)

    @property
    def loaded(self):
        return self.engine.loaded

    @property
    def calib_inputs(self):
        return self.engine.data.calib_inputs

    def simulated(self):
        """The simulated (fake-quantized, pruned) model of the configuration."""
        return self.engine.simulated(self.plan)

    def real_model(self):
        """The RealModel the engine runs on real kernels for the configuration (converted by realquant)."""
        return self.engine.real_model(self.plan)


def default_output(model_path: str | Path, fmt: ExportFormat) -> Path:
    """``<model stem>.<format><suffix>`` beside nothing in particular: the caller's folder."""
    return Path(f"{Path(model_path).stem}.{fmt.name}{fmt.suffix}")


def check_destination(path: Path) -> Path:
    """``path`` as an export destination: not a folder, its folder exists and is writable (InputError if not)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the export a file name (e.g. {path / 'model.pt'})")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist; create it or choose another output")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{path}: folder {folder} is not writable; choose another output")
    return path


@contextlib.contextmanager
def atomic_path(path: Path):
    """A temporary file name in ``path``'s folder; renamed onto ``path`` when the block succeeds, removed if not."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(handle)
    temp = Path(temp)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def export_iter(engine, config, fmt_name: str, out: str | Path, *, verify: bool = True,
                should_stop: Callable[[], bool] = lambda: False, **verify_options) -> Iterator:
    """Write ``config`` of ``engine``'s model as ``fmt_name`` to ``out``, then verify it; yields Progress, then
    the ExportReport (also written to ``OUT.verify.json``). A failed check is in the report (``passed`` False)
    and never hidden; :func:`raise_for_report` turns it into an ExportError. ``verify_options`` go to
    :func:`qtradeoff.core.export.verify.verify_export` (threads, latency_batches, repeats, eval_size)."""
    from qtradeoff.core.export import verify as verify_mod
    from qtradeoff.core.measurement.result import Progress

    total = 3 if verify else 2
    source, fmt, out = _prepare(engine, config, fmt_name, out)
    yield Progress(0, total, "export: writing")
    note = _write(source, fmt, out)
    if should_stop():
        return
    yield Progress(1, total, "export: verifying" if verify else "export: written")
    report = verify_mod.verify_export(source, fmt, out, note=note, run=verify, should_stop=should_stop,
                                      **verify_options)
    if report is None:
        return
    write_atomic(verify_mod.report_path(out), (report.to_json() + "\n").encode())
    yield Progress(total, total, "export: done")
    yield report


def _prepare(engine, config, fmt_name: str, out) -> tuple[ExportSource, ExportFormat, Path]:
    fmt = get_format(fmt_name)
    out = check_destination(Path(out))
    spec = getattr(engine.data, "input_spec", None)
    if isinstance(spec, dict) and spec.get("packed"):
        raise ExportError(f"{engine.loaded.path} takes {len(spec.get('inputs') or ())} inputs ({spec.get('text')}); "
                          "exporting a several-input model is not supported yet (the file would take one packed "
                          "tensor, not the model's inputs); write its configuration with "
                          "qtradeoff evaluate --export PATH instead")
    source = ExportSource(engine, config)
    refused = unsupported_algorithms(source.plan, fmt.name)
    if refused:
        raise ExportError(f"{fmt.name} export does not support {refused} yet; export as packed, or choose "
                          "integer or float weights without equalization or SmoothQuant")
    return source, fmt, out


def _write(source: ExportSource, fmt: ExportFormat, out: Path) -> str:
    with atomic_path(out) as temp:
        return fmt.write(source, temp)


def export_many(jobs, *, verify: bool = True, **verify_options) -> list:
    """Write each ``(engine, config, fmt_name, out)`` of ``jobs`` as :func:`export_iter` does (atomically, same
    refusals), then verify them all in ONE fresh process (:func:`qtradeoff.core.export.verify.verify_many`: each
    file still reloaded with only its runtime importable); returns the ExportReports in order, each also written to
    ``OUT.verify.json``. For a set of exports of one model (tests, several formats of a point), where starting an
    interpreter and torch per file would cost more than the checks."""
    from qtradeoff.core.export import verify as verify_mod

    items = []
    for engine, config, fmt_name, out in jobs:
        source, fmt, out = _prepare(engine, config, fmt_name, out)
        items.append((source, fmt, out, _write(source, fmt, out)))
    if verify:
        reports = verify_mod.verify_many(items, **verify_options)
        if reports is None:
            from qtradeoff.core.errors import CancelledError

            raise CancelledError("export cancelled before its verification finished")
    else:
        reports = [verify_mod.verify_export(source, fmt, out, note=note, run=False,
                                            eval_size=verify_options.get("eval_size"))
                   for source, fmt, out, note in items]
    for report in reports:
        write_atomic(verify_mod.report_path(report.file), (report.to_json() + "\n").encode())
    return reports


# Formats that store lookup-table weights (indices + codebooks) and the float transforms (CLE, SmoothQuant's
# input divisors); the others rebuild the model from the base weights on int8/float kernels, which have no
# codebook lookup.
LUT_FORMATS = ("packed",)


def unsupported_algorithms(plan, fmt_name: str = "") -> str:
    """What in ``plan`` format ``fmt_name`` does not write yet (lookup-table weights, cross-layer equalization and
    SmoothQuant outside :data:`LUT_FORMATS`), as a phrase naming a first layer, or "" when it can write the plan."""
    for layer in plan:
        precision = layer.settings.weight.precision
        if not layer.settings.skip and precision.startswith("lut") and fmt_name not in LUT_FORMATS:
            return f"lookup-table weights ({precision} on {layer.name}; the packed format stores them)"
    if fmt_name in LUT_FORMATS:
        return ""
    if getattr(plan.config, "equalization", "none") != "none":
        return "cross-layer equalization (the packed format stores it)"
    for layer in plan:
        if layer.transform and layer.transform[1] is not None:
            return f"SmoothQuant (alpha {layer.transform[1]:g} on {layer.name}; the packed format stores it)"
    return ""


def export(engine, config, fmt_name: str, out: str | Path, **kwargs):
    """:func:`export_iter` run to its end: the ExportReport."""
    report = None
    for item in export_iter(engine, config, fmt_name, out, **kwargs):
        report = item
    from qtradeoff.core.export.verify import ExportReport

    if not isinstance(report, ExportReport):
        from qtradeoff.core.errors import CancelledError

        raise CancelledError("export cancelled before its verification finished")
    return report


def raise_for_report(report) -> None:
    """ExportError naming the failed checks when ``report`` did not pass (the file and its report stay)."""
    if not report.passed:
        raise ExportError(f"{report.file} failed its verification: {'; '.join(report.failures)} "
                          f"(the file and {verify_report_name(report.file)} are kept for inspection)")


def verify_report_type() -> type:
    """The ExportReport class (imported on demand: it pulls in torch)."""
    from qtradeoff.core.export.verify import ExportReport

    return ExportReport


def verify_report_name(path: str | Path) -> str:
    return Path(f"{path}.verify.json").name
