"""CompressionConfig: resolution, edits, JSON round-trip, schema conformance and whole-file validation."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qtradeoff.core.config import (
    PRECISIONS,
    ActivationSpec,
    CompressionConfig,
    ConfigError,
    ModelRef,
    PruneSpec,
    WeightSpec,
    bits_of,
    from_json,
    from_json_document,
    is_integer,
    to_json,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "resources" / "config.schema.json"
LAYERS = ["features.0.conv", "features.3.conv", "classifier.2"]


def test_precisions_and_bits():
    assert [p for p in PRECISIONS if p.startswith("int")] == [f"int{b}" for b in range(2, 17)]
    assert bits_of("fp32") == 32 and bits_of("bf16") == 16 and bits_of("fp8_e5m2") == 8 and bits_of("int3") == 3
    assert is_integer("int8") and not is_integer("fp8_e4m3") and not is_integer("int17")


def test_resolve_merges_layer_over_defaults_and_edits_are_pure():
    base = CompressionConfig().with_defaults(weight={"precision": "int8"}, prune={"method": "magnitude"})
    edited = base.with_layer("features.3.conv", weight={"precision": "int4"}, prune={"sparsity": 0.5})
    assert base.overrides() == {}  # the original is untouched
    settings_3 = edited.resolve("features.3.conv")
    assert settings_3.weight == WeightSpec("int4", "per_channel", True)
    assert settings_3.prune == PruneSpec("magnitude", sparsity=0.5)
    assert edited.resolve("classifier.2").weight.precision == "int8"
    # None drops one key of an override; an emptied override disappears
    dropped = edited.with_layer("features.3.conv", weight={"precision": None}, prune={"sparsity": None})
    assert "features.3.conv" not in dropped.overrides()
    assert dropped == base and hash(dropped) == hash(base) and dropped.key() == base.key()
    assert edited.without_layer("features.3.conv") == base
    assert edited.with_layer("classifier.2", skip=True).resolve("classifier.2").skip


def test_configs_pickle_and_deepcopy():
    import copy
    import pickle

    config = CompressionConfig().with_layer("a", weight={"precision": "int4"}, skip=True)
    assert pickle.loads(pickle.dumps(config)) == config
    assert copy.deepcopy(config) == config
    assert {config: 1}[copy.deepcopy(config)] == 1


def test_key_ignores_model_and_is_order_independent():
    a = CompressionConfig().with_layer("b", weight={"precision": "int4"}).with_layer("a", skip=True)
    b = CompressionConfig().with_layer("a", skip=True).with_layer("b", weight={"precision": "int4"})
    assert a == b and a.key() == b.key()
    assert a.with_model(ModelRef("m.pt", "abc", "torchscript")).key() == a.key()
    assert a.with_layer("a", skip=False).key() != a.key()


def test_design_example_parses():
    text = json.dumps({
        "schema": "qtradeoff.config/1",
        "model": {"file": "digits_cnn.pt", "sha256": "00", "format": "torchscript"},
        "defaults": {
            "weight": {"precision": "int8", "granularity": "per_channel", "symmetric": True},
            "activation": {"precision": "int8", "calibration": "percentile", "percentile": 99.99},
            "prune": {"method": "magnitude", "threshold": 0.0},
        },
        "layers": {"features.3.conv": {"weight": {"precision": "int4"}, "prune": {"sparsity": 0.5}}},
        "metrics": {"accuracy": 0.962, "accuracy_ci95": [0.948, 0.973]},
        "environment": {"qtradeoff": "0.1.0", "torch": "2.13.0", "threads": 2},
    })
    config, metrics, environment = from_json_document(text, layer_names=LAYERS)
    assert config.model == ModelRef("digits_cnn.pt", "00", "torchscript")
    assert config.activation == ActivationSpec("int8", "percentile", 99.99, False)
    assert config.resolve("features.3.conv").weight.precision == "int4"
    assert metrics["accuracy"] == 0.962 and environment["threads"] == 2


def test_to_json_validates_against_shipped_schema():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    config = (CompressionConfig(model=ModelRef("m.safetensors", "ff", "safetensors"))
              .with_defaults(weight={"precision": "int8"}, activation={"precision": "int8", "calibration": "mse"},
                             prune={"method": "nm", "n": 2, "m": 4})
              .with_layer("features.0.conv", skip=True)
              .with_layer("classifier.2", prune={"method": "structured", "sparsity": 0.25, "norm": "l2"}))
    document = json.loads(to_json(config, metrics={"accuracy": 0.9}, environment={"torch": "2.13.0"}))
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "schema": "x"}, schema, cls=jsonschema.Draft202012Validator)


_partial_weight = st.fixed_dictionaries({}, optional={
    "precision": st.sampled_from(PRECISIONS), "granularity": st.sampled_from(["per_channel", "per_tensor"]),
    "symmetric": st.booleans()})
_partial_activation = st.fixed_dictionaries({}, optional={
    "precision": st.sampled_from(PRECISIONS), "calibration": st.sampled_from(["minmax", "percentile", "mse"]),
    "percentile": st.floats(min_value=50.0, max_value=100.0), "symmetric": st.booleans()})
_partial_prune = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(["none", "magnitude", "nm"]), "threshold": st.floats(0.0, 10.0),
    "relative": st.booleans(), "sparsity": st.one_of(st.none(), st.floats(0.0, 0.999)),
    "norm": st.sampled_from(["l1", "l2"])})


@st.composite
def configs(draw):
    config = CompressionConfig().with_defaults(weight=draw(_partial_weight), activation=draw(_partial_activation),
                                               prune=draw(_partial_prune))
    if draw(st.booleans()):
        config = config.with_model(ModelRef(draw(st.text(min_size=1, max_size=12)), draw(st.text(max_size=8)), "x"))
    for name in draw(st.lists(st.text(min_size=1, max_size=20), max_size=5, unique=True)):
        config = config.with_layer(name, weight=draw(_partial_weight), activation=draw(_partial_activation),
                                   prune=draw(_partial_prune), skip=draw(st.one_of(st.none(), st.booleans())))
    return config


@settings(max_examples=100, deadline=None)
@given(configs())
def test_json_round_trip_is_lossless(config):
    text = to_json(config)
    again = from_json(text)
    assert again == config
    assert again.key() == config.key()
    assert to_json(again) == text
    for name, _ in config.layers:
        assert again.resolve(name) == config.resolve(name)


def _doc(**changes):
    doc = {"schema": "qtradeoff.config/1", "defaults": {}, "layers": {}}
    doc.update(changes)
    return json.dumps(doc)


@pytest.mark.parametrize(("text", "path", "words"), [
    ("[1, 2]", "$", "expected an object"),
    ('"config"', "$", "expected an object"),
    ('{"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int8"}', "$", "line 1"),
    ('{"schema": "qtradeoff.config/1",\n "layers": {', "$", "truncated"),
    (json.dumps({"defaults": {}}), "$.schema", "missing"),
    (_doc(schema="qtradeoff.config/2"), "$.schema", "not a supported schema"),
    (_doc(defaults={"weight": {"precision": "int1"}}), "$.defaults.weight.precision", "'int1' is not a precision"),
    (_doc(layers={"features.3.conv": {"weight": {"precision": "int17"}}}),
     '$.layers["features.3.conv"].weight.precision', "'int17' is not a precision (int2..int16"),
    (_doc(layers={"features.3.conv": {"activation": {"precision": "int4x"}}}),
     '$.layers["features.3.conv"].activation.precision', "is not a precision"),
    (_doc(layers={"features.3.conv": {"prune": {"sparsity": 1.2}}}),
     '$.layers["features.3.conv"].prune.sparsity', "outside [0, 1)"),
    (_doc(defaults={"prune": {"sparsity": -0.1}}), "$.defaults.prune.sparsity", "outside [0, 1)"),
    (_doc(layers={"features.9.conv": {}}), '$.layers["features.9.conv"]', "unknown layer"),
    (_doc(layers={"features.3.conv": {"wieght": {}}}), '$.layers["features.3.conv"].wieght', "unknown key"),
    (_doc(extra=1), "$.extra", "unknown key"),
    (_doc(defaults={"weight": {"symmetric": "yes"}}), "$.defaults.weight.symmetric", "expected true or false"),
    (_doc(defaults={"prune": {"n": 2.5}}), "$.defaults.prune.n", "expected an integer"),
    (_doc(defaults={"prune": {"threshold": True}}), "$.defaults.prune.threshold", "expected a number"),
    (_doc(defaults={"prune": {"method": "nm", "n": 4, "m": 2}}), "$.defaults.prune.n", "larger than m"),
    (_doc(layers={"classifier.2": {"prune": {"method": "structured"}}}),
     '$.layers["classifier.2"].prune.sparsity', "needs a sparsity"),
    (_doc(layers={"classifier.2": {"skip": 1}}), '$.layers["classifier.2"].skip', "expected true or false"),
    (_doc(layers=[]), "$.layers", "expected an object"),
    (_doc(defaults={"activation": {"calibration": "entropy"}}), "$.defaults.activation.calibration", "not one of"),
    (_doc(model={"sha256": "x"}), "$.model.file", "missing"),
])
def test_invalid_documents_are_rejected_with_their_path(text, path, words):
    with pytest.raises(ConfigError) as caught:
        from_json(text, layer_names=LAYERS)
    assert caught.value.path == path, str(caught.value)
    assert words in str(caught.value)
    assert str(caught.value).startswith(path + ": ")


def test_edit_methods_validate_with_paths():
    config = CompressionConfig()
    with pytest.raises(ConfigError, match=r'^\$\.layers\["a"\]\.weight\.precision: .*int17'):
        config.with_layer("a", weight={"precision": "int17"})
    with pytest.raises(ConfigError, match=r"^\$\.defaults\.prune\.sparsity"):
        config.with_defaults(prune={"sparsity": 1.0})
    with pytest.raises(ConfigError, match=r'^\$\.layers\["a"\]\.prune\.sparsity: structured'):
        config.with_layer("a", prune={"method": "structured"})
    with pytest.raises(ConfigError):
        WeightSpec(precision="int1")


def test_a_layer_naming_its_own_pruning_method_does_not_inherit_the_global_target():
    config = CompressionConfig().with_defaults(prune={"method": "magnitude", "sparsity": 0.5})
    tuned = config.with_layer("fc", prune={"sparsity": 0.25})  # no method: tunes the global recipe
    assert tuned.resolve("fc").prune == PruneSpec(method="magnitude", sparsity=0.25)
    own = config.with_layer("fc", prune={"method": "magnitude", "threshold": 0.1})
    assert own.resolve("fc").prune == PruneSpec(method="magnitude", threshold=0.1)  # threshold rules, no 0.5
    unpruned = config.with_layer("fc", prune={"method": "none"})
    assert unpruned.resolve("fc").prune == PruneSpec()
    assert from_json(to_json(own)).resolve("fc") == own.resolve("fc")
