"""Build the model corpus: architectures of every kind users bring (torchvision classifiers, a detector, a
segmentation model, LSTM, GRU, Transformer, 1-D conv audio, seq2seq, multi-output, two-input and
functionally-called weights), random weights (nothing downloaded), each saved as state_dict, full pickle,
TorchScript, torch.export and safetensors where the format allows, with the CLI arguments that load it.

    python sample_models/build_corpus.py OUT_DIR              # build the full corpus (every format)
    python sample_models/build_corpus.py OUT_DIR --check      # ... and run inspect / evaluate fp32 and W8A8 /
                                                              #     a 2-configuration sweep on every file
    python sample_models/build_corpus.py OUT_DIR --check --suite   # the test suite's tiny subset

The test suite (tests/test_corpus.py) builds the ``suite`` subset: the hand-written architectures (the
torchvision ones take 10-90 s per command on a loaded 2-core machine), one format each, the formats rotating
so that each is covered.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from sample_models import corpus_models as cm  # noqa: E402

FORMATS = ("state_dict", "pickle", "torchscript", "export", "safetensors")
SUFFIX = {"state_dict": ".pth", "pickle": ".pt", "torchscript": ".torchscript.pt", "export": ".pt2",
          "safetensors": ".safetensors"}
TOKENS = f"tokens:int64[1,{cm.SEQ}]<{cm.VOCAB}"


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: str  # a callable of sample_models.corpus_models
    inputs: tuple[str, ...]  # --input specs, in forward's order
    suite_format: str | None  # the one format the test suite saves it in (None: too slow for the suite)
    kwargs: dict = field(default_factory=dict)
    score_output: str | None = None
    skip: dict = field(default_factory=dict)  # format -> why it is not written

    @property
    def architecture(self) -> str:
        return f"sample_models.corpus_models:{self.builder}"


ARCHITECTURES = (
    Architecture("resnet18", "resnet18", ("x:float32[1,3,32,32]",), None),
    Architecture("mobilenet_v3_small", "mobilenet_v3_small", ("x:float32[1,3,32,32]",), None),
    Architecture("squeezenet", "squeezenet", ("x:float32[1,3,48,48]",), None),
    Architecture("lraspp_segmentation", "lraspp", ("x:float32[1,3,32,32]",), None, score_output="out"),
    Architecture("tiny_detector", "TinyDetector", ("image:float32[1,3,32,32]",), "state_dict",
                 score_output="scores"),
    Architecture("lstm_classifier", "lstm_classifier", (TOKENS,), "safetensors"),
    Architecture("gru_classifier", "gru_classifier", (TOKENS,), "export"),
    Architecture("transformer_classifier", "TransformerClassifier", (TOKENS,), "pickle"),
    Architecture("audio_conv1d", "AudioConv1d", ("wave:float32[1,1,1600]",), "torchscript"),
    Architecture("seq2seq_gru", "Seq2Seq", (f"src:int64[1,{cm.SEQ}]<{cm.VOCAB}", f"tgt:int64[1,8]<{cm.VOCAB}"),
                 "state_dict"),
    Architecture("multi_head", "MultiHead", ("x:float32[1,20]",), "export", score_output="0"),
    Architecture("patch_transformer", "PatchTransformer", ("image:float32[1,3,16,16]",), "safetensors"),
    Architecture("image_and_tabular", "ImageAndTabular", ("image:float32[1,3,16,16]", "features:float32[1,8]"),
                 "pickle", skip={"torchscript": "TorchScript with several inputs is not simulated yet"}),
    Architecture("tabular_mlp", "TabularMLP", ("x:float32[1,20]",), "torchscript"),
)


@dataclass(frozen=True)
class CorpusFile:
    """One saved file and the CLI arguments that load it."""

    name: str
    format: str
    path: Path
    args: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "format": self.format, "path": str(self.path), "args": list(self.args)}


def _example(arch: Architecture) -> tuple[torch.Tensor, ...]:
    from qtradeoff.core.loading import input_spec

    return tuple(input_spec.synthetic(input_spec.parse(text), 1) for text in arch.inputs)


def _save(model: torch.nn.Module, arch: Architecture, fmt: str, path: Path) -> None:
    example = _example(arch)
    if fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "pickle":
        torch.save(model, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    elif fmt == "torchscript":
        torch.jit.trace(model, example, strict=False, check_trace=False).save(str(path))
    elif fmt == "export":
        torch.export.save(torch.export.export(model, example), str(path))
    else:
        raise ValueError(fmt)


def _args(arch: Architecture, fmt: str, path: Path) -> tuple[str, ...]:
    args = [str(path), "--trust"]
    if fmt in ("state_dict", "safetensors"):
        args += ["--architecture", arch.architecture]
    if fmt != "export":  # an exported program states its inputs (token bounds read off its Embedding)
        for text in arch.inputs:
            args += ["--input", text]
    if arch.score_output is not None:
        args += ["--score-output", arch.score_output]
    return tuple(args)


def build(out_dir: str | Path, *, suite: bool = False, names: tuple[str, ...] | None = None,
          formats: tuple[str, ...] | None = None) -> list[CorpusFile]:
    """Write the corpus into ``out_dir``: every architecture (or ``names``) in every format it allows (or those of
    ``formats``), or in its one ``suite_format`` when ``suite``. Seeded: the same call writes the same weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for index, arch in enumerate(ARCHITECTURES):
        if names is not None and arch.name not in names:
            continue
        torch.manual_seed(index)
        model = getattr(cm, arch.builder)(**arch.kwargs).eval()
        if suite and arch.suite_format is None:
            continue
        for fmt in (arch.suite_format,) if suite else formats or FORMATS:
            if fmt in arch.skip:
                continue
            path = out / f"{arch.name}{SUFFIX[fmt]}"
            _save(model, arch, fmt, path)
            files.append(CorpusFile(arch.name, fmt, path, _args(arch, fmt, path)))
    (out / "corpus.json").write_text(json.dumps([f.to_dict() for f in files], indent=1))
    return files


W8A8 = {"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int8"},
                                                    "activation": {"precision": "int8"}}}


def check(files: list[CorpusFile], out_dir: str | Path, *, eval_size: int = 16, sweep: bool = True,
          latency: str = "none") -> list[dict]:
    """Run each file through ``inspect``, ``evaluate`` at fp32 and W8A8 and (``sweep``) a 2-configuration sweep,
    in-process; one row per file and command with the exit code and the one-line message of a failure."""
    import contextlib
    import io

    from qtradeoff import cli

    out = Path(out_dir)
    config = out / "w8a8.json"
    config.write_text(json.dumps(W8A8))
    rows = []
    for item in files:
        commands = {
            "inspect": ["inspect", *item.args[:1], *[a for a in item.args[1:] if a != "--score-output"
                                                     and a != _score(item)], "--json"],
            "fp32": ["evaluate", *item.args, "--eval-size", str(eval_size), "--calib-size", str(eval_size),
                     "--latency", latency],
            "w8a8": ["evaluate", *item.args, "--eval-size", str(eval_size), "--calib-size", str(eval_size),
                     "--latency", latency, "--config", str(config)],
        }
        if sweep:
            # random, not greedy: the weights are random, so a drop bound would only say the model is untrained
            commands["sweep"] = ["sweep", *item.args, "--strategy", "random", "--budget", "2",
                                 "--eval-size", str(eval_size),
                                 "--calib-size", str(eval_size), "--quiet", "--overwrite", "--backend", "local",
                                 "--out", str(out / f"{item.name}.{item.format}.sweep.jsonl")]
        for command, argv in commands.items():
            stdout, stderr = io.StringIO(), io.StringIO()
            started = time.perf_counter()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    code = cli.main(argv)
                except SystemExit as exit_:  # argparse usage errors
                    code = exit_.code
            rows.append({"name": item.name, "format": item.format, "command": command, "code": code,
                         "seconds": round(time.perf_counter() - started, 2),
                         "stdout": stdout.getvalue(), "stderr": stderr.getvalue().strip()})
    return rows


def _score(item: CorpusFile) -> str | None:
    args = list(item.args)
    return args[args.index("--score-output") + 1] if "--score-output" in args else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--suite", action="store_true", help="the test suite's subset (one format per model)")
    parser.add_argument("--check", action="store_true", help="run inspect, evaluate fp32/W8A8 and a short sweep")
    parser.add_argument("--only", nargs="*", help="architecture names (default: all)")
    parser.add_argument("--eval-size", type=int, default=64)
    parser.add_argument("--no-sweep", action="store_true", help="skip the 2-configuration sweeps")
    parser.add_argument("--latency", default="none", choices=("none", "measured", "estimated", "both"))
    args = parser.parse_args(argv)
    files = build(args.out_dir, suite=args.suite, names=tuple(args.only) if args.only else None)
    print(f"wrote {len(files)} files of {len({f.name for f in files})} architectures to {args.out_dir}")
    if not args.check:
        return 0
    failed = 0
    for item in files:
        for row in check([item], args.out_dir, eval_size=args.eval_size, latency=args.latency,
                         sweep=not args.no_sweep):
            failed += row["code"] != 0
            message = row["stderr"].splitlines()[-1] if row["code"] and row["stderr"] else ""
            print(f"{row['name']:24} {row['format']:12} {row['command']:8} exit {row['code']} "
                  f"{row['seconds']:6.1f}s {message}", flush=True)
    print(f"{failed} command(s) failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
