"""The data and model-I/O options that evaluate and sweep share: which CSV column holds the labels (and, as the
engine learns them, which model output is scored and what the inputs are). One group, so both commands accept
and refuse the same things; :func:`qtradeoff.cli_args.io_options` turns them into EngineSpec fields."""

from __future__ import annotations

import argparse


class JoinInputs(argparse.Action):
    """``--input`` given several times: the specs joined with commas, as one comma-separated ``--input``."""

    def __call__(self, parser, namespace, values, option_string=None):
        previous = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{previous},{values}" if previous else values)


def add_io_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data and model I/O")
    group.add_argument("--label-column", metavar="NAME",
                       help="--data CSV: the column holding the labels (default: one named label, target or y; "
                            "every other column is a numeric feature)")
    group.add_argument("--data-kind", choices=("image_folder", "audio_folder", "csv", "npy", "npz", "pt", "hook"),
                       help="what --data is (default: detected from the path; a package.module:callable is a "
                            "dataset hook, which imports code: needs --trust)")
    group.add_argument("--image-size", type=int, metavar="PIXELS",
                       help="--data image folder: side of the centre crop (default: the model's input size, else 224)")
    group.add_argument("--channels", type=int, choices=(1, 3),
                       help="--data image folder: 1 reads images as grey, 3 as RGB (default: the model's channels)")
    group.add_argument("--mean", type=_floats, metavar="M[,M,M]",
                       help="--data image folder: per-channel mean after scaling to [0, 1] (default: ImageNet's)")
    group.add_argument("--std", type=_floats, metavar="S[,S,S]",
                       help="--data image folder: per-channel std (default: ImageNet's)")
    group.add_argument("--sample-rate", type=int, metavar="HZ",
                       help="--data audio folder: wav files are resampled to this rate (default 16000)")
    group.add_argument("--audio-samples", type=int, metavar="N",
                       help="--data audio folder: waveforms are padded or cropped to N samples (default: one second)")
    group.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                       help="read --data in batches instead of holding the splits in memory (default: when they "
                            "would take more than 512 MiB)")
    group.add_argument("--score-output", dest="score_output", metavar="NAME_OR_INDEX",
                       help="which output of a model returning a tuple, list, dict, dataclass or namedtuple is "
                            "scored: a key, field or index path such as logits, 0 or heads.age (default: the "
                            "first tensor output; 'inspect' lists them)")
    group.add_argument("--input", dest="input_spec", metavar="SPEC", action=JoinInputs,
                       help="the model's input: name:dtype[shape with batch first] and, for integer ids, "
                            "an exclusive upper bound, e.g. tokens:int64[1,32]<30000 or x:float32[1,3,64,64] "
                            "(float range: x:float32[1,8]-1..1); without --data, evaluation runs on seeded "
                            "synthetic inputs drawn from it (fidelity on synthetic inputs). Default: what the file "
                            "says (torch.export example inputs, traced TorchScript types). Several inputs: repeat "
                            "--input or separate them with commas, in the order forward takes them, e.g. "
                            "tokens:int64[1,32]<30000,mask:bool[1,32]; --data is then a .npz/.pt dict with one "
                            "array per name")


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers (e.g. 0.5 or "
                                         "0.485,0.456,0.406)") from None
    return values


DATA_OPTIONS = {"data_kind": "kind", "image_size": "image_size", "channels": "channels", "mean": "mean",
                "std": "std", "sample_rate": "sample_rate", "audio_samples": "audio_samples", "stream": "stream"}


def data_options(args: argparse.Namespace) -> dict:
    """The --data reading options given (qtradeoff.core.loading.datasets.DataOptions fields)."""
    return {field: getattr(args, name) for name, field in DATA_OPTIONS.items() if getattr(args, name, None) is not None}
