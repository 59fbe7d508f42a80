"""Models that take integer token ids (Embedding + LSTM/GRU, a small Transformer encoder) and exported programs
with a static batch size, evaluated at fp32 and W8A8 from an input specification (synthetic inputs, no data)."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from qtradeoff import cli
from qtradeoff.core.config import CompressionConfig, to_json
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.loading import _load_child

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})

USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn


    class RNNClassifier(nn.Module):
        def __init__(self, vocab=500, dim=16, classes=4, cell="lstm"):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(dim, dim, batch_first=True)
            self.head = nn.Linear(dim, classes)

        def forward(self, tokens):
            out, _ = self.rnn(self.embed(tokens))
            return self.head(out[:, -1])


    def gru_classifier():
        return RNNClassifier(cell="gru")


    class TinyTransformer(nn.Module):
        def __init__(self, vocab=500, dim=16, classes=4, seq=12):
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.02)
            layer = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=32, batch_first=True, dropout=0.0)
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.head = nn.Linear(dim, classes)

        def forward(self, tokens):
            return self.head(self.encoder(self.embed(tokens) + self.pos).mean(1))
''')

TOKENS = "tokens:int64[1,12]<500"


@pytest.fixture()
def seq_models(tmp_path, monkeypatch):
    (tmp_path / "user_seq.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    # the loader server keeps the environment it started with: restart it so it imports the module from tmp_path
    _load_child.SERVER.stop()
    import importlib

    module = importlib.import_module("user_seq")
    torch.manual_seed(0)
    files = {}
    for name, builder in (("lstm", module.RNNClassifier), ("gru", module.gru_classifier),
                          ("transformer", module.TinyTransformer)):
        files[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in builder().state_dict().items()}, files[name])
    yield files
    _load_child.SERVER.stop()  # the next user starts one with the environment restored


@pytest.mark.parametrize(("name", "architecture"), [("lstm", "user_seq:RNNClassifier"),
                                                    ("gru", "user_seq:gru_classifier"),
                                                    ("transformer", "user_seq:TinyTransformer")])
def test_token_models_evaluate_at_fp32_and_w8a8_on_synthetic_inputs(seq_models, name, architecture):
    spec = EngineSpec(str(seq_models[name]), trust=True, architecture=architecture, input_spec=TOKENS,
                      eval_size=64, calib_size=32)
    engine = spec.build()
    assert engine.data.synthetic and engine.data.eval_inputs.dtype == torch.int64
    fp32 = engine.evaluate(CompressionConfig(), latency="none")
    assert fp32.accuracy is None and fp32.agreement == 1.0 and fp32.provenance["data"]["synthetic"]
    assert fp32.provenance["data"]["input"]["text"] == TOKENS
    assert any("fidelity on synthetic inputs" in w for w in fp32.provenance["warnings"])
    w8a8 = engine.evaluate(W8A8, latency="none")
    assert w8a8.weight_bytes < fp32.weight_bytes / 2  # the Embedding's and the other layers' weights are int8
    assert w8a8.sqnr_db > 15 and w8a8.provenance["fidelity"]["cosine"] > 0.95
    kept = {entry["name"]: entry["reason"] for entry in w8a8.provenance["fp32_layers"]}
    assert "Embedding is weight-only" in kept["embed"]


def test_cli_table_says_fidelity_on_synthetic_inputs(seq_models, tmp_path, capsys):
    config = tmp_path / "w8a8.json"
    config.write_text(to_json(W8A8))
    code = cli.main(["evaluate", str(seq_models["lstm"]), "--architecture", "user_seq:RNNClassifier", "--trust",
                     "--input", TOKENS, "--latency", "none", "--eval-size", "40", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"fidelity on synthetic inputs ({TOKENS})" in out and "kept fp32          embed" in out
    code = cli.main(["evaluate", str(seq_models["lstm"]), "--architecture", "user_seq:RNNClassifier", "--trust",
                     "--input", "tokens:int64[1,12]", "--latency", "none"])
    err = capsys.readouterr().err
    assert code != 0 and "upper bound" in err and err.count("\n") == 1


def test_exported_program_with_static_batch_evaluates_at_any_batch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).eval()
    flat = torch.nn.Sequential(torch.nn.Flatten(), model).eval()
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(flat, (torch.randn(1, 1, 32, 32),)), str(path))
    engine = EngineSpec(str(path), data="digits", trust=True, eval_size=37, calib_size=20).build()
    # the digits evaluation runs in chunks of many samples: the program fixed at batch 1 runs them one by one
    fp32 = engine.evaluate(CompressionConfig(), latency="none")
    assert fp32.eval_samples == 37 and fp32.accuracy is not None
    w8a8 = engine.evaluate(W8A8, latency="none")
    assert w8a8.sqnr_db > 15 and json.dumps(w8a8.to_dict())
    x = engine.data.eval_inputs[:5]
    assert torch.allclose(engine.module(x), flat(x), atol=1e-5)


def test_inspect_with_an_input_spec_lists_layers_and_outputs(seq_models, capsys):
    assert cli.main(["inspect", str(seq_models["gru"]), "--trust", "--architecture", "user_seq:gru_classifier",
                     "--input", TOKENS, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["text"] == TOKENS and report["outputs"] == [{"name": "", "shape": [1, 4],
                                                                         "dtype": "float32"}]
    kinds = {layer["name"]: layer["kind"] for layer in report["layers"]}
    assert kinds == {"embed": "Embedding", "rnn": "GRU", "head": "Linear"}


def test_token_ids_from_a_npy_file_and_a_short_sweep(seq_models, tmp_path, capsys):
    import numpy as np

    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.random.default_rng(0).integers(0, 500, size=(60, 12)))
    spec = EngineSpec(str(seq_models["gru"]), data=str(tokens), trust=True, architecture="user_seq:gru_classifier",
                      input_spec=TOKENS, eval_size=40, calib_size=12)
    engine = spec.build()
    assert engine.data.eval_inputs.dtype == torch.int64 and not engine.data.synthetic
    assert engine.evaluate(W8A8, latency="none").sqnr_db > 15
    out = tmp_path / "sweep.jsonl"
    code = cli.main(["sweep", str(seq_models["gru"]), "--architecture", "user_seq:gru_classifier", "--trust",
                     "--input", TOKENS, "--budget", "2", "--eval-size", "32", "--out", str(out), "--quiet",
                     "--backend", "local"])
    assert code == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) >= 2
