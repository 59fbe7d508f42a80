"""Nested and prefixed checkpoints (issue 16): the loader finds the weights, strips the prefix that makes them fit,
loads with strict=False and reports what did not fit; only a missing compressible layer's weight is refused."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch

from qtradeoff import cli
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading import checkpoints
from qtradeoff.core.loading.model_io import ModelLoadError, load_model, load_sample_model, sample_data_for

W8A8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})


@pytest.fixture(scope="module")
def sample():
    loaded = load_sample_model("digits_cnn")
    return loaded, sample_data_for(loaded, calib_size=32, eval_size=100)


def _lightning_checkpoint(state: dict, prefix: str) -> dict:
    """What Lightning's Trainer.save_checkpoint writes, in plain dicts (no lightning import)."""
    return {
        "epoch": 7, "global_step": 560, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"{prefix}{key}": value for key, value in state.items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.12)}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(560.0)}},
                              "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1, 2]}]}],
        "lr_schedulers": [{"step_size": 10, "gamma": 0.5, "last_epoch": 7}],
        "hyper_parameters": {"lr": 1e-3, "num_classes": 10, "backbone": "digits_cnn", "widths": [16, 32]},
    }


def test_a_lightning_checkpoint_with_a_model_prefix_evaluates_without_trust(tmp_path, sample):
    base, data = sample
    path = tmp_path / "epoch=7-step=560.ckpt"
    state = base.module.state_dict()
    checkpoint = _lightning_checkpoint(state, "model.")
    checkpoint["state_dict"]["criterion.weight"] = torch.ones(10)  # a loss's class weights beside the network
    torch.save(checkpoint, path)
    loaded = load_model(path)  # isolated test-load first, as the CLI and GUI do
    assert loaded.architecture == "qtradeoff.digits_cnn" and not loaded.trusted
    assert any("criterion.weight" in w and "ignored" in w for w in loaded.warnings), loaded.warnings
    result = Engine(loaded, data).evaluate(CompressionConfig(), latency="none")
    reference = Engine(base, data).evaluate(CompressionConfig(), latency="none")
    assert result.accuracy == reference.accuracy > 0.9
    assert any("criterion.weight" in w for w in result.provenance["warnings"])


def test_a_state_dict_with_two_extra_keys_evaluates_and_reports_them(tmp_path, sample):
    base, data = sample
    state = {f"encoder.{key}": value for key, value in base.module.state_dict().items()}
    state["encoder.proj_head.weight"] = torch.randn(4, 10)
    state["encoder.temperature"] = torch.tensor(0.07)
    path = tmp_path / "speaker.pt"
    torch.save(state, path)
    loaded = load_model(path, architecture="qtradeoff.digits_cnn", isolate=False)
    (warning,) = loaded.warnings
    assert "2 tensors in the file are not in the model" in warning
    assert "encoder.proj_head.weight" in warning and "encoder.temperature" in warning
    result = Engine(loaded, data).evaluate(W8A8, latency="none")
    assert warning in result.provenance["warnings"] and result.accuracy > 0.9


def test_missing_buffers_are_reported_but_a_missing_conv_weight_is_refused_in_one_line(tmp_path, sample):
    base, _ = sample
    state = dict(base.module.state_dict())
    del state["features.2.bn.running_var"]
    path = tmp_path / "partial.pt"
    torch.save({"model_state_dict": state, "epoch": 3}, path)
    loaded = load_model(path, architecture="qtradeoff.digits_cnn", isolate=False)  # named: nothing is guessed
    assert any("features.2.bn.running_var" in w and "keep their initial values" in w for w in loaded.warnings)
    del state["features.3.conv.weight"]
    torch.save({"model_state_dict": state, "epoch": 3}, path)
    with pytest.raises(ModelLoadError) as raised:
        load_model(path, architecture="qtradeoff.digits_cnn", isolate=False)
    message = str(raised.value)
    assert "\n" not in message and "partial.pt" in message and "features.3.conv" in message


def test_inspect_prints_what_did_not_fit(tmp_path, sample, capsys):
    base, _ = sample
    state = {f"net.{key}": value for key, value in base.module.state_dict().items()}
    state["ema.decay"] = torch.tensor(0.999)
    path = tmp_path / "net.pt"
    torch.save({"module": state}, path)
    assert cli.main(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "qtradeoff.digits_cnn"
    assert any("ema.decay" in w for w in report["warnings"]), report["warnings"]


def test_a_trusted_pickle_needing_an_absent_module_names_it(tmp_path, monkeypatch):
    module = type(sys)("qt_absent_pkg")

    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = "qt_absent_pkg", "Thing"
    module.Thing = Thing
    monkeypatch.setitem(sys.modules, "qt_absent_pkg", module)
    path = tmp_path / "needs_pkg.pt"
    torch.save({"model": Thing()}, path)
    monkeypatch.delitem(sys.modules, "qt_absent_pkg")
    with pytest.raises(ModelLoadError) as raised:
        load_model(path, trust=True, isolate=False)
    message = str(raised.value)
    assert "qt_absent_pkg" in message and "install" in message and "damaged" not in message


def test_fit_strips_the_prefix_that_fits_most_keys():
    expected = {"a.weight": (2, 2), "b.weight": (2,), "b.running_mean": (2,)}
    state = {"model.a.weight": torch.zeros(2, 2), "model.b.weight": torch.zeros(2), "other.x": torch.zeros(1)}
    fitted = checkpoints.fit(state, expected)
    assert fitted.prefix == "model." and list(fitted.state) == ["a.weight", "b.weight"]
    assert fitted.missing == ["b.running_mean"] and fitted.unexpected == ["other.x"]
    assert fitted.missing_compressible({"a.weight"}) == []
    assert pickle.loads(pickle.dumps(dict(fitted.state))).keys() == fitted.state.keys()
