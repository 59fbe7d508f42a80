"""The ``onnx`` export format: the configuration as an ONNX model with QuantizeLinear/DequantizeLinear (QDQ) nodes.

Route: the engine's *simulated* model of the plan (pruned, BatchNorm folded, weights on their integer grids,
integer activations cast with the calibrated scales by module hooks) is exported with the TorchScript-based
``torch.onnx.export``; before that, every integer weight gets a parametrization that fake-quantizes it with the
scale and zero point the engine computed (recomputed here from the pruned, folded weight and checked to reproduce
the simulated weight exactly). The exporter turns those fake-quantize ops, and the hooks' activation casts, into
QuantizeLinear→DequantizeLinear pairs. A rewrite of the exported graph then replaces each QuantizeLinear applied
to a constant weight by the integer initializer it computes, so weights are stored as int8/uint8 and read through
DequantizeLinear (per-channel along the output axis where the configuration is per-channel), and drops the float
copies. Float layers stay fp32. The result is checked with ``onnx.checker.check_model(full_check=True)``.

Weights of at most 4 bits are stored as ONNX INT4/UINT4 initializers (two per byte); the model is then converted
to opset 21 (onnx.version_converter), the first with those types. Limits, said rather than hidden: 5..7-bit weights
are stored in 8-bit containers (their values are on the narrower grid); weights of more than 8 bits and
fp16/bf16/fp8 weights are stored as fp32 values on their grid; activation casts other than 8-bit integer ones
are exported as the exporter writes them (float ops).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from qtradeoff.core.compression.compress import get_submodule
from qtradeoff.core.compression.quantize import quantize_int, weight_qparams
from qtradeoff.core.precision import bits_of, is_integer

OPSET = 17
INT4_OPSET = 21  # the first opset with INT4/UINT4 tensors (ONNX Runtime 1.18+ dequantizes them)
CONFIG_KEY = "qtradeoff.config"
PREPROCESSING_KEY = "qtradeoff.preprocessing"  # as qtradeoff.core.loading.onnx_io reads it back


class OnnxExportError(RuntimeError):
    """The model could not be written as ONNX; the message says why."""


@dataclass
class OnnxWritten:
    """What :func:`write_onnx` wrote: counts of QDQ weights and activation casts, and notes on what is stored how."""

    path: Path
    file_bytes: int
    int_weights: int
    activation_qdq: int
    notes: list[str] = field(default_factory=list)

    def note(self) -> str:
        text = (f"ONNX: {self.int_weights} integer weight tensors as int8/uint8 initializers + "
                f"DequantizeLinear, {self.activation_qdq} activation QuantizeLinear/DequantizeLinear pairs")
        return "; ".join([text, *self.notes]) + "."


class _WeightQDQ(nn.Module):
    """Parametrization: fake-quantize the (already on-grid) weight, which the exporter writes as Q→DQ."""

    def __init__(self, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None, symmetric: bool):
        super().__init__()
        self.scale = scale.to(torch.float32)
        self.zero_point = zero_point.to(torch.int32)
        self.axis = axis
        self.qmin, self.qmax = (-128, 127) if symmetric else (0, 255)  # the 8-bit container of the grid

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(weight, float(self.scale), int(self.zero_point),
                                                         self.qmin, self.qmax)
        return torch.fake_quantize_per_channel_affine(weight, self.scale.reshape(-1), self.zero_point.reshape(-1),
                                                      self.axis, self.qmin, self.qmax)


def _parametrize_weights(compressor, plan, model: nn.Module) -> tuple[int, list[str], set[str]]:
    count, wide, narrow_inputs = 0, [], set()
    for layer in plan:
        spec = layer.settings.weight
        if layer.settings.skip or not layer.rewrites or not is_integer(spec.precision):
            continue
        bits = bits_of(spec.precision)
        if bits > 8:
            wide.append(layer.name)
            continue
        module = get_submodule(model, layer.name)
        for name in layer.weight_names:
            simulated = getattr(module, name).detach()
            source = compressor.weight(layer.name, name).detach().to(torch.float32)
            mask = layer.masks.get(name)
            if mask is not None:
                source = source * mask
            axis = layer.out_axis if (spec.granularity == "per_channel" and source.dim() > 1) else None
            scale, zero_point = weight_qparams(source, bits, spec.symmetric, axis, spec.range)
            # the simulated weight must lie on the source's grid (nearest rounding, or bias correction, AdaRound
            # and GPTQ, which choose other points of the same grid): re-quantizing it must change nothing
            again = quantize_int(simulated.to(torch.float32), bits, symmetric=spec.symmetric, axis=axis,
                                 scale=scale, zero_point=zero_point)
            if mask is not None:
                again = again * mask
            if not torch.equal(again, simulated):
                raise OnnxExportError(f"layer {layer.name}: the recomputed {spec.precision} weight differs from the "
                                      "simulated one; cannot write its integer grid")
            if axis is not None:
                axis = axis % source.dim()
            parametrize.register_parametrization(module, name, _WeightQDQ(scale, zero_point, axis, spec.symmetric),
                                                 unsafe=True)
            count += 1
            if bits <= 4:  # the exporter names the constant after the parametrized tensor
                narrow_inputs.add(f"{layer.name}.parametrizations.{name}.original")
    notes = []
    if wide:
        notes.append(f"weights wider than 8 bits stored as fp32 values on their grid ({', '.join(wide)})")
    return count, notes, narrow_inputs


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _packed_4bit(name: str, kind: int, values: np.ndarray):
    """An INT4/UINT4 tensor with two values per byte in ``raw_data`` (the first in the low nibble, as ONNX says)."""
    import onnx

    nibbles = (values.astype(np.int16).reshape(-1) & 0x0F).astype(np.uint8)
    if len(nibbles) % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    packed = nibbles[0::2] | (nibbles[1::2] << 4)
    return onnx.helper.make_tensor(name, kind, values.shape, packed.tobytes(), raw=True)


def fold_weight_quantize(model, int4_inputs: set[str] = frozenset()) -> int:
    """Replace each QuantizeLinear of a constant by the integer initializer it computes; drop unused constants.

    Constants named in ``int4_inputs`` (weights on a grid of at most 4 bits) are stored as ONNX INT4/UINT4 (the
    model must be opset 21), their zero points too, as DequantizeLinear requires.
    """
    import onnx
    from onnx import numpy_helper

    constants = _constants(model)
    graph = model.graph
    keep, folded = [], 0
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in constants and node.input[1] in constants:
            x = constants[node.input[0]].astype(np.float32)
            scale = constants[node.input[1]].astype(np.float32)
            zero = constants[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis % x.ndim] = -1
                scale, zero_b = scale.reshape(shape), zero.reshape(shape)
            else:
                zero_b = zero
            info = np.iinfo(zero.dtype)
            q = np.clip(np.rint(x / scale) + zero_b.astype(np.int32), info.min, info.max).astype(zero.dtype)
            if node.input[0] in int4_inputs:
                kind = onnx.TensorProto.INT4 if zero.dtype == np.int8 else onnx.TensorProto.UINT4
                low, high = (-8, 7) if kind == onnx.TensorProto.INT4 else (0, 15)
                if q.min() < low or q.max() > high:
                    raise OnnxExportError(f"{node.input[0]}: values outside the 4-bit grid")
                graph.initializer.append(_packed_4bit(node.output[0], kind, q))
                zero_name = f"{node.output[0]}_zero_point"
                graph.initializer.append(_packed_4bit(zero_name, kind, zero))
                for consumer in graph.node:
                    if consumer.op_type == "DequantizeLinear" and consumer.input[0] == node.output[0]:
                        consumer.input[2] = zero_name
            else:
                graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
            folded += 1
            continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    stored = {init.name for init in graph.initializer}
    kept_info = [info for info in graph.value_info if info.name not in stored]  # stale types of the Q outputs
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    while True:  # dead constants and initializers (the float weights the integer ones replace)
        used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        dead_nodes = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
        dead_inits = [i for i in graph.initializer if i.name not in used]
        if not dead_nodes and not dead_inits:
            break
        for node in dead_nodes:
            graph.node.remove(node)
        for init in dead_inits:
            graph.initializer.remove(init)
    del onnx
    return folded


def _to_opset(proto, version: int):
    from onnx import version_converter

    converted = version_converter.convert_version(proto, version)
    converted.ir_version = max(converted.ir_version, 10)
    return converted



def _example(sample: torch.Tensor) -> torch.Tensor:
    """The traced example: float inputs as float32, integer ids (token models) in their own dtype."""
    return sample.to(torch.float32) if sample.is_floating_point() else sample

def write_onnx(compressor, plan, example_input: torch.Tensor, path: str | Path, *,
               preprocessing: dict | None = None, config_json: str | None = None) -> OnnxWritten:
    """Write ``plan`` (from ``compressor.plan(config)``) as a QDQ ONNX model at ``path`` (atomically).

    ``example_input``: one batch of real inputs (batch first; the batch dimension is exported as dynamic).
    ``preprocessing`` and ``config_json`` are stored in ``metadata_props`` (``qtradeoff.preprocessing``,
    ``qtradeoff.config``), so the file reopens in qtradeoff with the sample data's preprocessing.
    """
    import onnx

    path = Path(path)
    model = compressor.simulate(plan)
    int_weights, notes, int4_inputs = _parametrize_weights(compressor, plan, model)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (_example(example_input[:1]),), str(scratch), dynamo=False,
                              opset_version=OPSET, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, do_constant_folding=True)
        proto = onnx.load(str(scratch))
        if int4_inputs:
            proto = _to_opset(proto, INT4_OPSET)
            notes.append(f"{len(int4_inputs)} weight tensors of at most 4 bits stored as INT4/UINT4 (opset "
                         f"{INT4_OPSET})")
        folded = fold_weight_quantize(proto, int4_inputs)
        if folded != int_weights:
            raise OnnxExportError(f"{int_weights} integer weights were marked but {folded} were stored as integers")
        activation_qdq = sum(node.op_type == "QuantizeLinear" for node in proto.graph.node)
        props = {}
        if preprocessing is not None:
            props[PREPROCESSING_KEY] = json.dumps(preprocessing)
        if config_json is not None:
            props[CONFIG_KEY] = config_json
        if props:
            onnx.helper.set_model_props(proto, props)
        proto.producer_name = "qtradeoff"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(scratch))
        os.replace(scratch, path)
    except Exception as error:
        scratch.unlink(missing_ok=True)
        if isinstance(error, OnnxExportError):
            raise
        raise OnnxExportError(f"cannot write {path} as ONNX ({' '.join(str(error).split())[:200]})") from error
    return OnnxWritten(path, path.stat().st_size, int_weights, activation_qdq, notes)


def write(source, path: Path) -> str:
    """The export registry's writer (``ExportFormat.write``): ``source`` is an ExportSource; returns the note."""
    from qtradeoff.core.config import to_json

    written = write_onnx(source.engine.compressor, source.plan, source.calib_inputs[:1], path,
                         preprocessing=source.loaded.preprocessing, config_json=to_json(source.config))
    return written.note()


FP32_CONFIG = {"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "fp32"}}}


def onnx_export_latency(engine, config, folder: str | Path, *, batches=(1, 32), threads: int | None = None,
                        rounds: int = 15, optimization: str = "all", runtime: str = "onnxruntime",
                        runtimes: tuple[str, ...] | None = None) -> dict:
    """Write the fp32 model and ``config`` as ONNX in ``folder`` and time both interleaved on ``runtime`` (or on
    each of ``runtimes``, the files written once).

    Returns plain data: ``fp32_bytes``, ``int8_bytes``, ``paths``, ``stats`` (``{"fp32"|"config": {batch:
    LatencyStats}}``) and ``latency`` (per batch: both ``to_dict()`` figures and the config/fp32 median ratio); with
    ``runtimes``, ``by_runtime`` holds ``stats`` and ``latency`` per runtime. Used by ``qtradeoff evaluate
    --runtime``, the GUI's "also time on" choice and ``benchmarks/bench_export.py``.
    """
    from qtradeoff.core.config import CompressionConfig
    from qtradeoff.core.measurement import runtime_latency

    folder = Path(folder)
    example = engine.data.eval_inputs[:1]
    fp32_plan = engine.plan(CompressionConfig.from_dict(FP32_CONFIG, layer_names=engine.layer_names))
    fp32 = write_onnx(engine.compressor, fp32_plan, example, folder / "fp32.onnx")
    written = write_onnx(engine.compressor, engine.plan(config), example, folder / "config.onnx")
    samples = engine.data.eval_inputs[:64].numpy()
    by_runtime = {}
    for name in runtimes or (runtime,):
        stats = runtime_latency.time_interleaved({"fp32": fp32.path, "config": written.path}, samples, runtime=name,
                                                 batches=batches, threads=threads, rounds=rounds,
                                                 optimization=optimization)
        by_runtime[name] = {
            "stats": stats,
            "latency": {str(b): {"fp32": stats["fp32"][b].to_dict(), "config": stats["config"][b].to_dict(),
                                 "ratio": stats["config"][b].median_ms / stats["fp32"][b].median_ms}
                        for b in batches}}
    first = by_runtime[next(iter(by_runtime))]
    return {"fp32_bytes": fp32.file_bytes, "int8_bytes": written.file_bytes,
            "paths": {"fp32": str(fp32.path), "config": str(written.path)}, "stats": first["stats"],
            "latency": first["latency"], "by_runtime": by_runtime}


def with_runtime_latency(engine, config, result, runtimes, *, batches=(1, 32), threads: int | None = None,
                         rounds: int = 15):
    """``result`` with the configuration's and fp32's latency on each of ``runtimes`` (``"onnxruntime"``,
    ``"openvino"``), from the configuration and the fp32 model exported as ONNX and timed interleaved.

    Keys of ``latency_by_runtime``: ``"<runtime>"`` and ``"<runtime>/fp32"``. Raises UsageError naming the extra to
    install when a runtime is missing.
    """
    import dataclasses
    import tempfile

    from qtradeoff.core.errors import UsageError
    from qtradeoff.core.measurement import runtime_latency

    runtimes = tuple(r for r in runtimes if r != "torch")
    if not runtimes:
        return result
    missing = [r for r in runtimes if not runtime_latency.available(r)]
    if missing:
        raise UsageError(f"timing on {missing[0]} needs it installed: pip install {runtime_latency.EXTRAS[missing[0]]}")
    with tempfile.TemporaryDirectory(prefix="qtradeoff-runtimes-") as folder:
        figures = onnx_export_latency(engine, config, folder, batches=batches, threads=threads, rounds=rounds,
                                      runtimes=runtimes)
    by_runtime = dict(result.latency_by_runtime)
    for name, timed in figures["by_runtime"].items():
        by_runtime[name] = tuple(timed["stats"]["config"][b] for b in batches)
        by_runtime[f"{name}/fp32"] = tuple(timed["stats"]["fp32"][b] for b in batches)
    return dataclasses.replace(result, latency_by_runtime=by_runtime)


def _register() -> None:
    from qtradeoff.core.export import RUNNERS_DIR, ExportFormat, register

    # Verified with ONNX Runtime's graph optimizations off: the QDQ graph then runs node by node and must reproduce
    # the simulation; at level "all" ORT fuses QLinearConv with u8×s8 kernels that saturate on x86 CPUs without
    # VNNI (digits_cnn W8A8: 98.33 % → 89.14 % on an AVX2 EPYC), a property of that runtime on that CPU, which
    # benchmarks/bench_export.py measures at "all".
    register(ExportFormat("onnx", ".onnx", write, RUNNERS_DIR / "run_onnxruntime.py", "int8",
                          description="ONNX with QuantizeLinear/DequantizeLinear for the integer layers (ONNX Runtime)",
                          runner_args=("--optimization", "none")))


_register()
