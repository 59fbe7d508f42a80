"""The ``torch-int8`` format: the real int8 model the engine times, saved as frozen TorchScript that plain
PyTorch loads (``torch.jit.load``) and runs with no qtradeoff import.

The model is the one :func:`qtradeoff.core.measurement.realquant.build_real_model` converts (torch.ao FX int8
kernels with per-layer qconfigs, the plan's pruned weights zeroed, bf16/fp16 layers cast), taken from the
engine's cache. Why TorchScript: ``torch.export`` cannot serialise it (the converted modules hold their weights in
``torch.classes.quantized.*PackedParamsBase`` script objects, which ``torch.export`` refuses to flatten:
"does not have a field with name '__obj_flatten__'"), and ``torch.jit.script`` rejects the FX-generated forward
(its annotations name ``torch.Tensor`` in a form the TorchScript compiler does not parse). ``torch.jit.trace``
round-trips bit for bit: the FX graph is already straight-line code, so tracing loses nothing, and the traced
module keeps a free batch dimension. It is then frozen (``torch.jit.freeze``: one graph, weights as constants,
one code file instead of one per layer) and saved without its ``.debug_pkl`` entries (source-position tables used
only to point error messages at Python lines); the code entries are deflated. On digits_cnn W8A8 that is 28 % of the
fp32 safetensors file (105755 of 373968 bytes), 93 % of it the counted weight bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path

import torch

import qtradeoff
from qtradeoff.core import runtime
from qtradeoff.core.export import RUNNERS_DIR, ExportError, ExportFormat, ExportSource, register
from qtradeoff.core.measurement.realquant import ENGINE, as_executed, quantized_engine

META_NAME = "qtradeoff.json"  # extra file in the archive: configuration, quantized engine, what ran where


def trace_frozen(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``module`` traced on ``example`` and frozen (the plain traced module when freezing fails)."""
    with quantized_engine(), torch.no_grad(), runtime.running(), _quiet():
        traced = torch.jit.trace(module, example, check_trace=False)
        try:
            return torch.jit.freeze(traced.eval())
        except Exception:  # noqa: BLE001 - freezing is an optimisation; the traced module is already correct
            return traced


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def without_debug_info(archive: bytes) -> bytes:
    """A TorchScript zip without its ``.debug_pkl`` entries, code and pickles deflated, tensor data stored."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename.endswith(".debug_pkl"):
                continue
            stored = "/data/" in info.filename or "/constants/" in info.filename or info.file_size < 64
            target.writestr(info.filename, source.read(info),
                            compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return out.getvalue()


def save_torchscript(module: torch.jit.ScriptModule, path: Path, meta: dict) -> None:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer, _extra_files={META_NAME: json.dumps(meta, sort_keys=True)})
    Path(path).write_bytes(without_debug_info(buffer.getvalue()))


def write(source: ExportSource, path: Path) -> str:
    real = source.real_model()
    if not real.converted:
        raise ExportError(f"{source.loaded.path}: this configuration has no real int8 model to export "
                          f"({real.note}); export it as 'packed' instead")
    module = trace_frozen(real.module, source.calib_inputs[:2])
    meta = {"schema": "qtradeoff.torch-int8/1", "qtradeoff": qtradeoff.__version__, "torch": torch.__version__,
            "quantized_engine": ENGINE, "config": source.config.to_dict(),
            "executed_precisions": dict(real.executed_precisions), "note": real.note,
            "model": {"file": Path(str(source.loaded.path)).name, "sha256": source.loaded.sha256}}
    save_torchscript(module, path, meta)
    return real.note


register(ExportFormat("torch-int8", ".pt", write, RUNNERS_DIR / "run_torch.py", "int8",
                      "frozen TorchScript of the real int8 model (torch.jit.load, no qtradeoff needed)",
                      as_run=as_executed))
