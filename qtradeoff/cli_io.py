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
