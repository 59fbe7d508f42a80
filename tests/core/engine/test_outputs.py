"""Models whose forward returns a tuple, list, dict, dataclass or namedtuple: one output is scored (--score-output),
the others are listed; accuracy only for class scores with labels, else fidelity with MSE and cosine similarity."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from qtradeoff import cli
from qtradeoff.core.config import CompressionConfig, to_json
from qtradeoff.core.loading import _load_child, outputs

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})

USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    class TwoHead(nn.Module):
        """Digit class scores and a scalar 'age' regression from one trunk."""

        def __init__(self, hidden=32):
            super().__init__()
            self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(1024, hidden), nn.ReLU())
            self.logits = nn.Linear(hidden, 10)
            self.age = nn.Linear(hidden, 1)

        def forward(self, x):
            features = self.trunk(x)
            return self.logits(features), self.age(features)


    class DictHeads(TwoHead):
        def forward(self, x):
            features = self.trunk(x)
            return {"embedding": features, "heads": {"age": self.age(features), "logits": self.logits(features)}}
''')


@dataclasses.dataclass
class Prediction:
    boxes: torch.Tensor
    scores: torch.Tensor


Pair = collections.namedtuple("Pair", ["logits", "extra"])


def test_paths_of_nested_outputs():
    a, b, c = torch.zeros(2, 3), torch.ones(2, 1), torch.full((2, 4), 2.0)
    value = {"out": (a, Pair(b, [c])), "meta": "text", "pred": Prediction(a, b)}
    names = [info.name for info in outputs.describe(value)]
    assert names == ["out.0", "out.1.logits", "out.1.extra.0", "pred.boxes", "pred.scores"]
    assert outputs.select(value, "out.1.logits") is b and outputs.select(value, "out.1.0") is b
    assert outputs.select(value, "pred.scores") is b
    assert outputs.choose(value, None, "m").scored == "out.0"
    assert outputs.choose(value, "out.1.0", "m").scored == "out.1.logits"
    with pytest.raises(outputs.OutputError) as caught:
        outputs.choose(value, "heads.age", "model.pt")
    message = str(caught.value)
    assert "model.pt" in message and "out.1.logits [2, 1]" in message and "\n" not in message
    with pytest.raises(outputs.OutputError):
        outputs.choose(value, "meta", "m")  # a string, not a tensor


def test_view_keeps_layer_names_and_never_changes_the_base():
    base = torch.nn.Sequential(torch.nn.Linear(4, 3))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = base

        def forward(self, x):
            return {"y": self.body(x), "z": x}

    net = Net().eval()
    selection = outputs.choose(net(torch.zeros(1, 4)), "y", "net")
    view = outputs.with_output(net, selection)
    x = torch.randn(5, 4)
    assert torch.equal(view(x), base(x)) and isinstance(net(x), dict)
    assert [n for n, _ in view.named_modules()] == [n for n, _ in net.named_modules()]
    assert view.state_dict().keys() == net.state_dict().keys() and view.output_selection is selection
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3)))
    assert outputs.with_output(scripted, outputs.choose(scripted(x), None, "s")) is scripted


def test_regression_metrics():
    reference = torch.randn(8, 3)
    same = outputs.regression_metrics(reference, reference.clone())
    assert same["mse"] == 0.0 and same["cosine"] == pytest.approx(1.0)
    assert outputs.regression_metrics(reference, -reference)["cosine"] == pytest.approx(-1.0)


@pytest.fixture()
def user_models(tmp_path, monkeypatch):
    (tmp_path / "user_heads.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    # the loader server keeps the environment it started with: restart it so it imports the module from tmp_path
    _load_child.SERVER.stop()
    import importlib

    module = importlib.import_module("user_heads")
    torch.manual_seed(0)
    state = module.TwoHead().state_dict()
    path = tmp_path / "heads.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    config = tmp_path / "w8a8.json"
    config.write_text(to_json(W8A8))
    yield path, config
    _load_child.SERVER.stop()  # the next user starts one with the environment restored


def _evaluate(capsys, path, *options):
    code = cli.main(["evaluate", str(path), "--data", "digits", "--trust", "--latency", "none", "--eval-size", "60",
                     "--calib-size", "32", *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_two_head_model_scores_the_chosen_output(user_models, capsys):
    path, config = user_models
    first = json.loads(_evaluate(capsys, path, "--architecture", "user_heads:TwoHead", "--json"))
    assert first["labelled"] and first["accuracy"] is not None  # output 0: class scores, digits labels
    assert first["provenance"]["output"]["scored"] == "0"
    assert first["provenance"]["output"]["others"] == [{"name": "1", "shape": [1, 1], "dtype": "float32"}]
    age = json.loads(_evaluate(capsys, path, "--architecture", "user_heads:TwoHead", "--score-output", "1", "--json",
                               "--config", str(config)))
    assert not age["labelled"] and age["accuracy"] is None  # a regression head: fidelity only
    fidelity = age["provenance"]["fidelity"]
    assert fidelity["mse"] >= 0.0 and 0.9 < fidelity["cosine"] <= 1.0 + 1e-9 and age["sqnr_db"] > 10


def test_dict_output_model_from_a_state_dict_and_its_table(user_models, capsys):
    path, config = user_models
    table = _evaluate(capsys, path, "--architecture", "user_heads:DictHeads", "--score-output", "heads.logits",
                      "--config", str(config))
    assert "accuracy (top-1)" in table and "scored output      heads.logits" in table
    assert "embedding [1, 32]" in table and "output MSE" in table and "cosine similarity" in table
    code = cli.main(["evaluate", str(path), "--data", "digits", "--trust", "--latency", "none",
                     "--architecture", "user_heads:DictHeads", "--score-output", "heads.size"])
    err = capsys.readouterr().err
    assert code != 0 and "heads.size" in err and "heads.logits [1, 10]" in err and err.count("\n") == 1


def test_inspect_lists_the_outputs(user_models, capsys):
    path, _ = user_models
    assert cli.main(["inspect", str(path), "--trust", "--architecture", "user_heads:DictHeads", "--input-shape",
                     "1,32,32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in report["outputs"]] == ["embedding", "heads.age", "heads.logits"]
