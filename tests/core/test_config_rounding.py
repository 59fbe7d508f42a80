"""weight.rounding (and GPTQ's act-order, the weight range method) in the configuration: defaults, per-layer
overrides, JSON round trip, errors and the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from qtradeoff.core.config import CompressionConfig, ConfigError, WeightSpec, from_json, json_schema, to_json

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "resources" / "config.schema.json"


def test_default_is_nearest_and_is_not_written():
    config = CompressionConfig().with_defaults(weight={"precision": "int4"})
    assert config.weight.rounding == "nearest"
    assert "rounding" not in config.to_dict()["defaults"]["weight"]
    # a configuration from before rounding existed keeps its key
    old = json.dumps({"schema": "qtradeoff.config/1",
                      "defaults": {"weight": {"precision": "int4", "granularity": "per_channel", "symmetric": True}}})
    assert from_json(old).key() == config.key()


def test_round_trip_with_defaults_and_per_layer_overrides():
    config = (CompressionConfig()
              .with_defaults(weight={"precision": "int4", "rounding": "gptq", "gptq_damping": 0.05, "gptq_block": 32})
              .with_layer("fc1", weight={"rounding": "adaround", "adaround_iterations": 50})
              .with_layer("type:Linear", weight={"rounding": "bias_correction"}))
    again = from_json(to_json(config))
    assert again == config and again.key() == config.key()
    assert again.resolve("fc1", "Linear").weight == WeightSpec("int4", rounding="adaround", adaround_iterations=50,
                                                               gptq_damping=0.05, gptq_block=32)
    assert again.resolve("fc2", "Linear").weight.rounding == "bias_correction"
    assert again.resolve("conv", "Conv2d").weight.rounding == "gptq"
    # removing the override falls back to the default
    assert config.with_layer("fc1", weight={"rounding": None}).resolve("fc1", "Conv2d").weight.rounding == "gptq"


@pytest.mark.parametrize("weight, path", [
    ({"rounding": "stochastic"}, "$.defaults.weight.rounding"),
    ({"adaround_iterations": 0}, "$.defaults.weight.adaround_iterations"),
    ({"adaround_iterations": 1.5}, "$.defaults.weight.adaround_iterations"),
    ({"gptq_damping": 0}, "$.defaults.weight.gptq_damping"),
    ({"gptq_block": 5000}, "$.defaults.weight.gptq_block"),
    ({"gptq_act_order": 1}, "$.defaults.weight.gptq_act_order"),
    ({"range": "percentile"}, "$.defaults.weight.range"),
])
def test_invalid_rounding_is_rejected_with_its_path(weight, path):
    document = {"schema": "qtradeoff.config/1", "defaults": {"weight": weight}}
    with pytest.raises(ConfigError) as caught:
        from_json(json.dumps(document))
    assert caught.value.path == path
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, json_schema(), cls=jsonschema.Draft202012Validator)


def test_shipped_schema_is_generated_and_accepts_rounding():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()
    config = CompressionConfig().with_defaults(weight={"precision": "int3", "rounding": "adaround"}).with_layer(
        "fc1", weight={"rounding": "gptq"})
    jsonschema.validate(json.loads(to_json(config)), json_schema(), cls=jsonschema.Draft202012Validator)


def test_act_order_and_range_are_optional_fields():
    """Off / min-max by default and then not written (older keys stay valid); set, they round-trip, per layer too."""
    plain = CompressionConfig().with_defaults(weight={"precision": "int4", "rounding": "gptq"})
    assert plain.weight.gptq_act_order is False and plain.weight.range == "minmax"
    written = plain.to_dict()["defaults"]["weight"]
    assert "gptq_act_order" not in written and "range" not in written
    config = (plain.with_defaults(weight={"gptq_act_order": True})
              .with_layer("fc1", weight={"range": "mse", "gptq_act_order": False}))
    assert config.to_dict()["defaults"]["weight"]["gptq_act_order"] is True
    again = from_json(to_json(config))
    assert again == config and again.key() == config.key()
    assert again.resolve("fc1", "Linear").weight == WeightSpec("int4", rounding="gptq", range="mse")
    assert again.resolve("fc2", "Linear").weight == WeightSpec("int4", rounding="gptq", gptq_act_order=True)
    assert len({plain.key(), config.key(), plain.with_defaults(weight={"range": "mse"}).key()}) == 3
    jsonschema.validate(json.loads(to_json(config)), json_schema(), cls=jsonschema.Draft202012Validator)
