"""compare: two configurations differ by what their layers resolve to, not by how they are written (no Qt)."""

from __future__ import annotations

from qtradeoff.core.compare import compare, diff_configs
from qtradeoff.core.config import CompressionConfig

LAYERS = [("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc1", "Linear"), ("fc2", "Linear")]
INT8 = CompressionConfig().with_defaults(weight={"precision": "int8"})


def test_only_the_differing_layers_and_fields_are_listed():
    b = INT8.with_layer("conv2", weight={"precision": "int4"}).with_layer(
        "fc1", prune={"method": "magnitude", "sparsity": 0.5})
    changes = diff_configs(INT8, b, LAYERS)
    assert [(c.layer, c.field, c.a, c.b) for c in changes] == [
        ("conv2", "weight.precision", "int8", "int4"),
        ("fc1", "prune.method", "none", "magnitude"),
        ("fc1", "prune.sparsity", None, 0.5),
    ]


def test_the_same_settings_written_differently_have_no_difference():
    every_layer = CompressionConfig()
    for name, _ in LAYERS:
        every_layer = every_layer.with_layer(name, weight={"precision": "int8"})
    by_type = CompressionConfig().with_layer("type:Conv2d", weight={"precision": "int8"}).with_layer(
        "re:fc\\d", weight={"precision": "int8"})
    assert diff_configs(INT8, every_layer, LAYERS) == ()
    assert diff_configs(INT8, by_type, LAYERS) == ()


def test_fields_without_effect_are_not_differences():
    minmax = CompressionConfig().with_defaults(activation={"precision": "int8", "calibration": "minmax",
                                                           "percentile": 99.9})
    other = CompressionConfig().with_defaults(activation={"precision": "int8", "calibration": "minmax",
                                                          "percentile": 99.0})
    assert diff_configs(minmax, other, LAYERS) == ()  # percentile only matters for percentile calibration
    skipped = INT8.with_layer("fc2", skip=True)
    # skipping is the whole difference, not every field the skipped layer no longer uses
    assert [(c.layer, c.field, c.a, c.b) for c in diff_configs(INT8, skipped, LAYERS)] == [("fc2", "skip", False,
                                                                                            True)]


def test_rounding_parameters_differ_only_under_their_algorithm():
    act_order = INT8.with_defaults(weight={"gptq_act_order": True, "gptq_damping": 0.1})
    assert diff_configs(INT8, act_order, LAYERS) == ()  # nearest rounding: GPTQ's parameters do nothing
    gptq = INT8.with_defaults(weight={"rounding": "gptq"})
    changes = diff_configs(gptq, gptq.with_layer("fc1", weight={"gptq_act_order": True, "range": "mse"}), LAYERS)
    assert [(c.layer, c.field, c.a, c.b) for c in changes] == [("fc1", "weight.gptq_act_order", False, True),
                                                               ("fc1", "weight.range", "minmax", "mse")]


class _R:
    def __init__(self, config, accuracy, weight_bytes, est):
        self.config, self.accuracy, self.agreement = config, accuracy, accuracy
        self.weight_bytes, self.peak_activation_bytes, self._est = weight_bytes, 1000, est

    def latency_ms(self, batch=1, measured=True):
        return None if measured else self._est


def test_metric_deltas_are_b_minus_a():
    result = compare(_R(INT8, 0.98, 4000, 0.2), _R(INT8.with_layer("fc1", weight={"precision": "int4"}), 0.97,
                                                    3000, 0.25), LAYERS)
    deltas = {m.metric: m.delta for m in result.metrics}
    assert round(deltas["accuracy"], 6) == -1.0 and deltas["weight bytes"] == -1000
    assert round(deltas["latency (estimated)"], 6) == 0.05 and deltas["latency (measured)"] is None
    assert result.layers == ["fc1"] and result.to_dict()["layers"] == ["fc1"]


def test_deltas_across_evaluation_sets_or_unlike_estimates_come_with_a_warning():
    a, b = _R(INT8, 0.98, 4000, 0.2), _R(INT8, 0.97, 4000, 0.2)
    assert compare(a, b, LAYERS).warnings == ()
    a.eval_samples, b.eval_samples = 100, 359
    a.provenance = {"roofline": {"fit": {"fitted": True}}}
    b.provenance = {"roofline": {"fit": {"fitted": False}}}
    warnings = compare(a, b, LAYERS).warnings
    assert len(warnings) == 2 and "100 samples vs 359 samples" in warnings[0] and "fitted" in warnings[1]


def test_fields_that_follow_from_a_precision_change_are_not_listed():
    w8a8 = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
    b = w8a8.with_layer("fc1", activation={"precision": "fp32"})
    assert [(c.layer, c.field, c.a, c.b) for c in diff_configs(w8a8, b, LAYERS)] == [
        ("fc1", "activation.precision", "int8", "fp32")]
