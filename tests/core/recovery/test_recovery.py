"""Recovery fine-tune: STE primitives, training lowers the loss and recovers int2 accuracy, masks stay fixed,
the recovered-weights file round-trips and refuses other models and configurations, cancel stops it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from qtradeoff.core.compression.compress import process_weight
from qtradeoff.core.config import CompressionConfig, WeightSpec
from qtradeoff.core.engine.engine import EngineSpec
from qtradeoff.core.errors import CancelledError
from qtradeoff.core.recovery.primitives import distillation_loss, recovery_loss, ste_weight
from qtradeoff.core.recovery.qat import (
    RecoveryError,
    RecoveryProgress,
    RecoverySettings,
    build_twin,
    recover,
    recover_iter,
)
from qtradeoff.core.recovery.recovered_weights import (
    RecoveredWeights,
    RecoveredWeightsError,
    load_recovered,
    recovered_engine,
    recovered_module,
    save_recovered,
    with_recovered_weights,
)

INT2 = CompressionConfig().with_defaults(weight={"precision": "int2"})
PRUNED_INT4 = CompressionConfig().with_defaults(weight={"precision": "int4"}, activation={"precision": "int8"},
                                                prune={"method": "magnitude", "sparsity": 0.5})
FEW = RecoverySettings(steps=4, batch_size=16, time_limit_s=None)


@pytest.fixture(scope="module")
def cnn():
    return EngineSpec("digits_cnn", calib_size=96, eval_size=150).build()


@pytest.fixture(scope="module")
def mlp():
    return EngineSpec("digits_mlp", calib_size=96, eval_size=150).build()


@pytest.fixture(scope="module")
def recovered_int2(cnn):
    return recover(cnn, INT2, RecoverySettings(epochs=8, batch_size=16, time_limit_s=None))


def test_ste_weight_stores_what_the_simulation_stores_and_passes_gradients_on_kept_weights():
    torch.manual_seed(0)
    latent = torch.randn(6, 5, requires_grad=True)
    mask = (torch.rand(6, 5) > 0.3).float()
    spec = WeightSpec("int3")
    stored = ste_weight(latent, spec, mask)
    assert torch.allclose(stored, process_weight(latent.detach(), spec, mask), atol=1e-6)
    stored.sum().backward()
    assert torch.equal(latent.grad, mask)


def test_distillation_is_zero_for_the_teacher_itself_and_mixes_in_labels():
    logits = torch.randn(8, 10)
    assert float(distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    labels = logits.argmax(1)
    kd_only = recovery_loss(logits + 1.0, logits, None)
    assert float(kd_only) == pytest.approx(0.0, abs=1e-5)  # a constant shift changes no probability
    assert float(recovery_loss(logits, logits, labels, label_weight=1.0)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, labels)), rel=1e-5)


def test_the_twin_computes_the_simulated_model(cnn):
    plan = cnn.plan(PRUNED_INT4)
    twin = build_twin(cnn.compressor, plan)
    inputs = cnn.data.eval_inputs[:32]
    with torch.no_grad():
        expected = cnn.simulated(plan)(inputs)
        got = twin.module(inputs)
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.97
    assert torch.allclose(got, expected, atol=0.05 * float(expected.abs().max()))


def test_a_recovery_step_lowers_the_loss(cnn):
    # full batches: every step sees the same samples, so the loss is comparable from step to step
    weights = recover(cnn, PRUNED_INT4, RecoverySettings(steps=5, batch_size=96, lr=1e-3, time_limit_s=None))
    training = weights.training
    assert training["steps"] == 5 and training["split"] == "calibration"
    losses = training["losses"]
    assert losses[1] < losses[0] and losses[-1] < losses[0], losses


def test_int2_cnn_recovers_well_over_its_ptq_accuracy(cnn, recovered_int2):
    before = cnn.score(INT2).accuracy
    after = recovered_engine(cnn, recovered_int2, INT2).score(INT2).accuracy
    assert after >= before + 0.20, (before, after)


def test_masks_stay_fixed_and_pruned_weights_stay_zero(mlp):
    weights = recover(mlp, PRUNED_INT4, FEW)
    engine = recovered_engine(mlp, weights, PRUNED_INT4)
    plan = engine.plan(PRUNED_INT4)
    original = mlp.plan(PRUNED_INT4)
    for layer in plan:
        mask = original[layer.name].masks["weight"]
        assert torch.equal(layer.masks["weight"], mask)
        assert torch.all(weights.tensors[f"{layer.name}.weight"][~mask.bool()] == 0)
    assert engine.evaluate(PRUNED_INT4, latency="none").provenance["recovered"]["steps"] == 4


def test_a_file_round_trips_and_evaluates_as_trained(cnn, recovered_int2, tmp_path):
    path = save_recovered(recovered_int2, tmp_path / "r.safetensors")
    read = load_recovered(path)
    assert read.config.key() == INT2.key() and read.model_sha256 == cnn.loaded.sha256
    assert read.tensors.keys() == recovered_int2.tensors.keys()
    assert all(torch.equal(read.tensors[k], recovered_int2.tensors[k]) for k in read.tensors)
    engine, config = with_recovered_weights(cnn, path, None)  # the file's own configuration
    assert config.key() == INT2.key()
    assert engine.score(INT2) == recovered_engine(cnn, recovered_int2, INT2).score(INT2)
    # agreement is measured against the original fp32 model, not the recovered one
    assert torch.equal(engine.reference_logits(), cnn.reference_logits())


def test_untrained_weights_fold_back_to_the_base_model_exactly(cnn):
    weights = recover(cnn, INT2, RecoverySettings(steps=1, lr=1e-12, time_limit_s=None))
    module = recovered_module(cnn.module, weights)
    inputs = cnn.data.eval_inputs[:16]
    with torch.no_grad():
        assert torch.allclose(module(inputs), cnn.module(inputs), atol=1e-4)


def test_mismatching_model_config_or_file_is_refused(cnn, mlp, recovered_int2, tmp_path):
    path = save_recovered(recovered_int2, tmp_path / "r.safetensors")
    with pytest.raises(RecoveredWeightsError, match="another model"):
        with_recovered_weights(mlp, path, None)
    with pytest.raises(RecoveredWeightsError, match="different configuration"):
        with_recovered_weights(cnn, path, CompressionConfig().with_defaults(weight={"precision": "int3"}))
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(RecoveredWeightsError, match="header"):
        load_recovered(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(RecoveredWeightsError, match="not a recovered-weights file"):
        load_recovered(junk)


def test_cancel_stops_between_steps(mlp):
    seen = []
    for item in recover_iter(mlp, INT2, RecoverySettings(steps=50, time_limit_s=None),
                             should_stop=lambda: len(seen) >= 2):
        seen.append(item)
    assert len(seen) == 2 and all(isinstance(item, RecoveryProgress) for item in seen)
    with pytest.raises(CancelledError):
        recover(mlp, INT2, FEW, should_stop=lambda: True)


def test_nothing_to_recover_and_torchscript_are_refused(cnn):
    with pytest.raises(RecoveryError, match="nothing to recover"):
        recover(cnn, CompressionConfig(), FEW)
    from types import SimpleNamespace

    from qtradeoff.core import Engine, load_sample_model, sample_data_for
    from qtradeoff.core.loading.model_io import SAMPLE_DIR

    # the loader rebuilds a scripted registry architecture as eager (issue 16), so the scripted module itself
    scripted = SimpleNamespace(module=torch.jit.load(SAMPLE_DIR / "digits_cnn.torchscript.pt"))
    sample = load_sample_model("digits_cnn")
    engine = Engine(scripted, sample_data_for(sample, calib_size=16, eval_size=16))
    with pytest.raises(RecoveryError, match="eager"):
        recover(engine, INT2, FEW)


def test_time_limit_stops_training_early_and_says_so(mlp):
    weights = recover(mlp, INT2, RecoverySettings(steps=10_000, time_limit_s=0.5))
    assert isinstance(weights, RecoveredWeights)
    assert weights.training["steps"] < 10_000 and "time limit" in weights.training["stopped_early"]


def test_recalibration_refits_integer_activation_grids_to_the_quantized_model(cnn):
    from qtradeoff.core.recovery.qat import recalibrate

    config = INT2.with_defaults(activation={"precision": "int8"})
    plan = cnn.plan(config)
    twin = build_twin(cnn.compressor, plan)
    before = twin.grids
    assert recalibrate(twin, plan, cnn.data.calib_inputs) > 0  # int2 weights move every activation range
    after = twin.grids
    assert before.keys() == after.keys() and before != after
    weights = recover(cnn, config, RecoverySettings(epochs=2, batch_size=64, time_limit_s=None))
    engine = recovered_engine(cnn, weights, config)
    layer = engine.plan(config).layers[1]
    assert engine.compressor.activation_grids(layer)["input"].to_dict() == weights.grids[layer.name]["input"]


def test_a_fine_tune_that_raises_the_training_loss_keeps_the_post_training_weights(mlp):
    config = CompressionConfig().with_defaults(weight={"precision": "int8"})
    weights = recover(mlp, config, RecoverySettings(steps=3, lr=50.0, batch_size=96, time_limit_s=None))
    assert weights.training["kept"] and weights.training["final_loss"] >= weights.training["initial_loss"]
    assert recovered_engine(mlp, weights, config).score(config) == mlp.score(config)


@pytest.mark.parametrize("extra", [{"equalization": "cle"}, {"weight": {"precision": "lut4"}},
                                   {"weight": {"rounding": "gptq"}}, {"weight": {"range": "mse"}}])
def test_configurations_the_twin_cannot_train_are_refused(mlp, extra):
    config = INT2.with_equalization("cle") if "equalization" in extra else INT2.with_defaults(**extra)
    with pytest.raises(RecoveryError, match="recovery fine-tunes nearest-rounded integer grids, not "):
        recover(mlp, config, FEW)
