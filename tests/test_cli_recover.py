"""``qtradeoff recover`` end to end on a sample, and ``--weights`` on ``evaluate`` and ``apply``."""

from __future__ import annotations

import json

import pytest

from qtradeoff import cli
from qtradeoff.core.errors import EXIT_INPUT


@pytest.fixture(scope="module")
def recovered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recover")
    config = folder / "int2.json"
    config.write_text(json.dumps({"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int2"}},
                                  "layers": {}}))
    out = folder / "mlp-int2.safetensors"
    return config, out


def test_recover_writes_weights_that_evaluate_and_apply_use(recovered, capsys, tmp_path):
    config, out = recovered
    assert cli.main(["recover", "digits_mlp", "--config", str(config), "-o", str(out), "--steps", "12",
                     "--eval-size", "100", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["training"]["split"] == "calibration" and summary["training"]["steps"] == 12
    assert summary["after"]["accuracy"] > summary["before"]["accuracy"]
    assert out.is_file()

    assert cli.main(["evaluate", "digits_mlp", "--weights", str(out), "--latency", "none", "--eval-size", "100",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["provenance"]["recovered"]["steps"] == 12
    assert result["accuracy"] == pytest.approx(summary["after"]["accuracy"])

    packed = tmp_path / "mlp.safetensors"
    assert cli.main(["apply", "digits_mlp", "--weights", str(out), "-o", str(packed), "--eval-size", "100",
                     "--repeats", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    accuracies = json.dumps(report)
    assert packed.is_file() and "accuracy" in accuracies


def test_weights_for_another_model_are_refused_in_one_line(recovered, capsys):
    config, out = recovered
    if not out.is_file():
        pytest.skip("needs the file the first test writes")
    assert cli.main(["evaluate", "digits_cnn", "--weights", str(out), "--latency", "none"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another model" in err


def test_recover_without_a_configuration_says_what_to_give(capsys):
    assert cli.main(["recover", "digits_mlp", "-o", "unused.safetensors", "--eval-size", "10"]) == 2
    assert "--config" in capsys.readouterr().err
