"""``qtradeoff inspect FILE``: what a model file is, whether loading it needs trust, and its layers.

Exit codes as documented in qtradeoff.core.errors: 0 inspected; 2 bad option; 3 bad file (one line on stderr);
4 the file needs ``--trust`` (the verdict and the globals it wants are still printed on stdout, the refusal on
stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def configure_inspect(parser: argparse.ArgumentParser) -> None:
    from qtradeoff.cli_args import add_model_options

    parser.description = "Show a model file's format, trust verdict, parameter count and layer inventory."
    parser.add_argument("file", help="model file (safetensors, torch.save, TorchScript, torch.export .pt2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_model_options(parser)
    from qtradeoff.cli_io import JoinInputs

    parser.add_argument("--input", dest="input_spec", metavar="SPEC", action=JoinInputs,
                        help="the input as evaluate's --input takes it (e.g. tokens:int64[1,32]<30000): integer "
                             "token ids for the inventory and the outputs (default: what the file says); several "
                             "inputs as evaluate takes them")


def inspect_command(args: argparse.Namespace) -> int:
    """Run ``inspect``; returns the exit code (failures are raised, for qtradeoff.cli's wrapper to report)."""
    from qtradeoff.cli_args import model_options
    from qtradeoff.core.loading.model_io import NeedsTrust, load_model

    report: dict = {"file": args.file}
    try:
        loaded = load_model(args.file, **model_options(args))
    except NeedsTrust as error:  # the verdict is the answer the user asked for; the refusal follows on stderr
        report.update(format=error.format, trust={"required": True, "trusted": False, "globals": error.globals})
        _emit(report, args.json)
        raise
    wanted: list[str] = []
    if loaded.format in ("pickle", "state_dict") and args.trust:
        wanted = _unsafe_globals(loaded.path)
    required = bool(wanted) or loaded.format in ("torchscript", "export")
    report.update(
        format=loaded.format,
        sha256=loaded.sha256,
        file_bytes=loaded.file_bytes,
        trust={"required": required, "trusted": loaded.trusted, "globals": wanted},
        parameters=loaded.parameter_count,
        architecture=loaded.architecture,
        num_classes=loaded.num_classes,
        input_shape=list(loaded.input_shape) if loaded.input_shape else None,
        load_seconds=round(loaded.load_seconds, 3),
        warnings=list(loaded.warnings),
    )
    from qtradeoff.core.loading import input_spec, multi_input

    several = multi_input.specs_for(getattr(args, "input_spec", None), loaded.module)
    if several is not None:  # several named inputs: the inventory runs the packed view on one synthetic sample
        packing = multi_input.Packing(tuple(multi_input.with_bounds(several, loaded.module)))
        view = multi_input.packed_view(loaded.module, packing)
        if packing.static_batch:
            view = input_spec.fixed_batch_view(view, packing.batch)
        example = multi_input.synthetic_data(packing, calib_size=1, eval_size=1).eval_inputs
        report["input"] = packing.to_dict()
        report["inventory_input_shape"], report["inventory_input_shape_guessed"] = list(example.shape[1:]), False
        report["layers"], report["inventory_note"] = _layers(view, example.shape[1:], example)
        report["outputs"], report["outputs_note"] = _outputs(view, example.shape[1:], example)
        _emit(report, args.json)
        return 0
    spec = input_spec.parse(args.input_spec) if getattr(args, "input_spec", None) else \
        input_spec.from_module(loaded.module)
    spec = multi_input.with_bounds([spec], loaded.module)[0] if spec is not None else None
    report["input"] = spec.to_dict() if spec is not None else None
    # a stated input (the user's, or the one an exported program / TorchScript file records) beats a guess
    if spec is not None and (spec.is_integer or getattr(args, "input_spec", None) or loaded.input_shape is None):
        example = input_spec.synthetic(spec, spec.batch if spec.static_batch else 1)
        report["inventory_input_shape"], report["inventory_input_shape_guessed"] = list(spec.sample_shape), False
        report["layers"], report["inventory_note"] = _layers(loaded.module, spec.sample_shape, example)
        report["outputs"], report["outputs_note"] = _outputs(loaded.module, spec.sample_shape, example)
        _emit(report, args.json)
        return 0
    shape, guessed = loaded.input_shape, False
    if shape is None:
        from qtradeoff.core.loading.inventory import guess_input_shape

        shape, guessed = guess_input_shape(loaded.module), True
    report["inventory_input_shape"] = list(shape) if shape else None
    report["inventory_input_shape_guessed"] = guessed
    report["layers"], report["inventory_note"] = _layers(loaded.module, shape)
    report["outputs"], report["outputs_note"] = _outputs(loaded.module, shape)
    _emit(report, args.json)
    return 0


def _input_text(shape, stated: dict | None) -> str:
    if shape:
        return str(tuple(shape))
    if stated:  # the input the file records (exported program, TorchScript) or the user's --input
        sources = {stated.get("source")} if "source" in stated else {i.get("source") for i in stated.get("inputs", ())}
        where = {"user": "--input", "export": "exported program", "torchscript": "TorchScript file"}
        return f"{stated.get('text')} (from the {', '.join(where.get(s, str(s)) for s in sorted(sources, key=str))})"
    return "unknown (pass --input-shape)"


def _unsafe_globals(path) -> list[str]:
    """Globals outside the allow-list that a trusted pickle used (reported so the user sees what they allowed)."""
    import zipfile

    from qtradeoff.core.loading.model_io import ModelLoadError, unsafe_globals

    try:
        return unsafe_globals(path, "torch_zip" if zipfile.is_zipfile(path) else "pickle")
    except ModelLoadError:
        return []


def _layers(module, shape, example=None) -> tuple[list[dict] | None, str]:
    if shape is None:
        return None, "no input shape known; pass --input-shape"
    try:
        from qtradeoff.core.loading.inventory import inventory
    except ImportError:  # pragma: no cover - inventory is part of the package
        return None, "layer inventory unavailable"
    try:
        infos = inventory(module, shape) if example is None else inventory(module, example_input=example)
    except Exception as error:  # noqa: BLE001 - a forward failure is a finding, not a crash
        return None, f"forward with input shape {tuple(shape)} failed ({str(error).splitlines()[0][:120]})"
    return [
        {"name": info.name, "kind": info.kind, "params": info.params, "weight_shape": list(info.weight_shape),
         "macs": info.macs, "output_shape": list(info.output_shape), "compressible": info.compressible,
         "reason": info.reason}
        for info in infos
    ], ""


def _outputs(module, shape, example=None) -> tuple[list[dict] | None, str]:
    """The model's tensor outputs (name, shape, dtype) on one zero sample of ``shape`` (choose one with
    --score-output)."""
    if shape is None:
        return None, "no input shape known; pass --input-shape"
    import torch

    from qtradeoff.core.loading.outputs import probe

    try:
        example = torch.zeros(1, *shape) if example is None else example
        return [info.to_dict() for info in probe(module, example)], ""
    except Exception as error:  # noqa: BLE001 - a forward failure is a finding, not a crash
        return None, f"forward with input shape {tuple(shape)} failed ({str(error).splitlines()[0][:120]})"


def _emit(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    trust = report.get("trust", {})
    if trust.get("required") and not trust.get("trusted"):
        verdict = "needs --trust" + (f" (wants: {', '.join(trust['globals'])})" if trust.get("globals") else "")
    elif trust.get("trusted"):
        verdict = "loaded with --trust" + (f" (it used: {', '.join(trust['globals'])})" if trust.get("globals") else "")
    else:
        verdict = "safe (no code from the file runs)"
    lines = [f"file:         {report['file']}", f"format:       {report.get('format') or 'unknown'}",
             f"trust:        {verdict}"]
    if "parameters" in report:
        shape = report.get("input_shape")
        lines += [
            f"sha256:       {report['sha256']}",
            f"size:         {report['file_bytes']} bytes",
            f"parameters:   {report['parameters']:,}",
            f"architecture: {report.get('architecture') or 'unknown'}",
            f"classes:      {report.get('num_classes') if report.get('num_classes') is not None else 'unknown'}",
            f"input shape:  {_input_text(shape, report.get('input'))}",
        ]
        lines += [f"warning:      {warning}" for warning in report.get("warnings") or ()]
        outputs = report.get("outputs")
        if outputs is None:
            lines.append(f"outputs:      {report.get('outputs_note')}")
        else:
            lines.append("outputs:      " + ", ".join(f"{o['name'] or '(tensor)'} {tuple(o['shape'])} {o['dtype']}"
                                                     for o in outputs))
        layers = report.get("layers")
        if layers is None:
            lines.append(f"layers:       {report.get('inventory_note')}")
        else:
            guessed = " (input shape guessed)" if report.get("inventory_input_shape_guessed") else ""
            lines.append(f"layers:       {len(layers)}{guessed}")
            width = max((len(layer["name"]) for layer in layers), default=4)
            lines.append(f"  {'name':<{width}}  {'kind':<18} {'params':>10} {'MACs':>12}  weight shape")
            for layer in layers:
                mark = "" if layer["compressible"] else f"  [kept: {layer['reason']}]"
                lines.append(f"  {layer['name']:<{width}}  {layer['kind']:<18} {layer['params']:>10,} "
                             f"{layer['macs']:>12,}  {tuple(layer['weight_shape'])}{mark}")
    try:
        print("\n".join(lines))
        sys.stdout.flush()
    except BrokenPipeError:  # `qtradeoff inspect x | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
