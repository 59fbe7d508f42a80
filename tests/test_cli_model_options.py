"""One model-option group for every subcommand that opens a model (issue 16): --architecture, --arch-kwargs,
--trust, --input-shape, defined once in cli_args and reaching the architecture's builder."""

from __future__ import annotations

import json

import pytest
import torch

from qtradeoff import cli
from qtradeoff.cli_args import engine_spec
from qtradeoff.core.errors import UsageError
from qtradeoff.core.loading import architectures

MODEL_OPTIONS = ["--architecture", "qtradeoff.digits_mlp", "--arch-kwargs", '{"hidden": 32, "num_classes": 10}',
                 "--trust", "--input-shape", "64"]
REQUIRED = {"inspect": ["m.pt"], "evaluate": ["m.pt"], "sweep": ["m.pt", "--out", "o.jsonl"],
            "apply": ["m.pt", "-o", "out.pt"], "recover": ["m.pt", "-o", "w.safetensors"]}


def test_every_model_subcommand_takes_the_same_model_options():
    assert {"inspect", "evaluate", "sweep", "apply"} <= set(cli.SUBCOMMANDS)
    for name in cli.SUBCOMMANDS:
        args = cli.command_parser(name).parse_args([*REQUIRED[name], *MODEL_OPTIONS])
        assert args.architecture == "qtradeoff.digits_mlp" and args.trust
        assert args.arch_kwargs == {"hidden": 32, "num_classes": 10} and args.input_shape == (64,)
        groups = [g for g in cli.command_parser(name)._action_groups if g.title == "model options"]
        assert len(groups) == 1, name


def test_the_spec_carries_them_to_the_loader():
    args = cli.command_parser("evaluate").parse_args([*REQUIRED["evaluate"], *MODEL_OPTIONS])
    spec = engine_spec(args)
    assert spec.arch_kwargs == {"hidden": 32, "num_classes": 10} and spec.input_shape == (64,) and spec.trust


@pytest.mark.parametrize("text, says", [("{hidden: 32}", "is not JSON"), ("[1, 2]", "is not a JSON object"),
                                        ('{"not a name": 1}', "is not a keyword argument name")])
def test_a_bad_arch_kwargs_is_a_one_line_usage_error(text, says):
    with pytest.raises(UsageError) as raised:
        cli.command_parser("evaluate").parse_args(["m.pt", "--arch-kwargs", text])
    message = str(raised.value)
    assert message.startswith("argument --arch-kwargs:") and says in message and "\n" not in message


def test_arch_kwargs_reach_the_builder(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "mlp_h32.pt"
    torch.save(architectures.build("qtradeoff.digits_mlp", hidden=32).state_dict(), path)
    argv = ["inspect", str(path), "--json", "--architecture", "qtradeoff.digits_mlp"]
    assert cli.main([*argv, "--arch-kwargs", '{"hidden": 32}']) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "qtradeoff.digits_mlp" and report["parameters"] == 64 * 32 + 32 + 32 * 32 + 32 \
        + 32 * 10 + 10
    assert cli.main([*argv, "--arch-kwargs", '{"hidden": 32, "bogus": 1}']) == 2  # unknown keyword: usage error
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "argument --arch-kwargs" in err and "'bogus'" in err


def test_evaluate_builds_with_arch_kwargs(tmp_path, capsys):
    path = tmp_path / "cnn.safetensors"
    from safetensors.torch import save_file

    from qtradeoff.core.loading.model_io import load_sample_model

    save_file({k: v.contiguous() for k, v in load_sample_model("digits_cnn").module.state_dict().items()}, path)
    code = cli.main(["evaluate", str(path), "--data", "digits", "--architecture", "qtradeoff.digits_cnn",
                     "--arch-kwargs", '{"num_classes": 10}', "--latency", "none", "--eval-size", "60", "--json"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] > 0.8
