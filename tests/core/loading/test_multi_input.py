"""Models with several named inputs: the spec syntax, the inputs read from exported programs and TorchScript
graphs, named arrays from an .npz, synthetic inputs, and the packed forward through the engine and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from qtradeoff import cli
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.loading import multi_input
from qtradeoff.core.loading.input_spec import InputSpecError

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
SPEC = "tokens:int64[1,6]<100,feats:float32[1,5]"


class TokensAndFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.tab = nn.Linear(5, 8)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens, feats):
        return self.head(torch.cat([self.embed(tokens).mean(1), torch.relu(self.tab(feats))], 1))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    torch.manual_seed(0)
    model = TokensAndFeatures().eval()
    example = (torch.randint(0, 100, (1, 6)), torch.randn(1, 5))
    torch.export.save(torch.export.export(model, example), str(root / "two.pt2"))
    torch.jit.trace(model, example).save(str(root / "two.torchscript.pt"))
    rng = np.random.default_rng(0)
    np.savez(root / "two.npz", tokens=rng.integers(0, 100, (60, 6)), feats=rng.normal(size=(60, 5)).astype("f4"),
             labels=rng.integers(0, 3, 60))
    return {"export": root / "two.pt2", "torchscript": root / "two.torchscript.pt", "data": root / "two.npz",
            "model": model}


def test_several_specs_parse_split_and_pack():
    specs = multi_input.parse_many(SPEC + "; mask:bool[1,6]")
    assert [s.name for s in specs] == ["tokens", "feats", "mask"]
    packing = multi_input.Packing(tuple(specs))
    tokens, feats, mask = torch.randint(0, 100, (3, 6)), torch.randn(3, 5), torch.rand(3, 6) > 0.5
    back = packing.unpack(packing.pack([tokens, feats, mask]))
    assert torch.equal(back[0], tokens) and torch.equal(back[1], feats) and torch.equal(back[2], mask)
    assert back[0].dtype == torch.int64 and back[2].dtype == torch.bool and packing.dtype == torch.float32
    with pytest.raises(InputSpecError, match="its own name"):
        multi_input.parse_many("int64[1,6]<9,float32[1,5]")


def test_exported_program_reads_its_inputs_and_evaluates_on_named_arrays(files):
    engine = EngineSpec(str(files["export"]), data=str(files["data"]), trust=True, eval_size=16,
                        calib_size=16).build()
    assert engine.data.input_spec["text"] == SPEC and engine.data.labelled  # the bound read off the Embedding
    assert [info.name for info in engine.layers] == ["embed", "tab", "head"]
    fp32 = engine.evaluate(CompressionConfig(), latency="none")
    assert fp32.accuracy is not None and fp32.agreement == 1.0
    w8a8 = engine.evaluate(W8A8, latency="none")
    assert w8a8.sqnr_db > 15 and w8a8.weight_bytes < fp32.weight_bytes / 2
    tokens, feats = multi_input.packing_of(engine.module).unpack(engine.data.eval_inputs[:4])
    assert torch.allclose(engine.module(engine.data.eval_inputs[:4]), files["model"](tokens, feats), atol=1e-5)


def test_torchscript_inputs_synthetic_data_and_cli(files, capsys):
    spec = EngineSpec(str(files["export"]), trust=True, input_spec=SPEC, eval_size=16, calib_size=8)
    engine = spec.build()
    assert engine.data.synthetic and engine.evaluate(W8A8, latency="none").sqnr_db > 15
    code = cli.main(["evaluate", str(files["torchscript"]), "--trust", "--input", SPEC, "--latency", "none"])
    err = capsys.readouterr().err
    assert code != 0 and "torch.export" in err and err.count("\n") == 1
    assert cli.main(["inspect", str(files["torchscript"]), "--trust", "--input", "tokens:int64[1,6]<100",
                     "--input", "feats:float32[1,5]", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["text"] == SPEC and [layer["kind"] for layer in report["layers"]] == [
        "Embedding", "Linear", "Linear"]
    code = cli.main(["evaluate", str(files["export"]), "--trust", "--data", str(files["data"]), "--input",
                     "tokens:int64[1,6]<100,feats:float32[1,4]", "--latency", "none"])
    err = capsys.readouterr().err
    assert code != 0 and "feats" in err and err.count("\n") == 1
