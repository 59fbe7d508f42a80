"""Export of models whose input is not one float tensor: token ids export and verify in their own dtype (an
LSTM classifier, whose LSTM runs dynamic int8), and a several-input model is refused in one line."""

from __future__ import annotations

import json
import warnings

import pytest

from qtradeoff import cli
from sample_models import build_corpus

W8A8 = {"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int8"},
                                                    "activation": {"precision": "int8"}}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("export-inputs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = build_corpus.build(out, suite=True, names=("lstm_classifier", "image_and_tabular"))
    (out / "w8a8.json").write_text(json.dumps(W8A8))
    return out, {item.name: item for item in files}


@pytest.mark.parametrize("fmt", ["torch-int8", "onnx"])
def test_a_token_model_exports_and_verifies_with_integer_inputs(corpus, fmt, capsys):
    out, files = corpus
    item = files["lstm_classifier"]
    target = out / f"lstm.{fmt}"
    code = cli.main(["apply", *item.args, "--config", str(out / "w8a8.json"), "--format", fmt, "-o", str(target),
                     "--eval-size", "24", "--repeats", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"], report
    assert report["exported"]["agreement_with_simulated"] >= 0.9
    if fmt == "torch-int8":
        assert "LSTM runs dynamic int8" in report["note"]


def test_a_several_input_model_is_refused_in_one_line(corpus, capsys):
    out, files = corpus
    item = files["image_and_tabular"]
    code = cli.main(["apply", *item.args, "--config", str(out / "w8a8.json"), "--format", "onnx",
                     "-o", str(out / "two.onnx"), "--eval-size", "16"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "takes 2 inputs" in err and "evaluate --export" in err
    assert not (out / "two.onnx").exists()
