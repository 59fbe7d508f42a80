"""CompressionConfig: resolution, selectors and locked layers, edits, JSON round-trip, the generated schema and
whole-file validation."""

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
    json_schema,
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
    "precision": st.sampled_from([name for name in PRECISIONS if not name.startswith("lut")]),
    "calibration": st.sampled_from(["minmax", "percentile", "mse"]),
    "percentile": st.floats(min_value=50.0, max_value=100.0), "symmetric": st.booleans(),
    "smoothquant": st.one_of(st.none(), st.floats(0.0, 1.0))})
_partial_prune = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(["none", "magnitude", "nm"]), "threshold": st.floats(0.0, 10.0),
    "relative": st.booleans(), "sparsity": st.one_of(st.none(), st.floats(0.0, 0.999)),
    "norm": st.sampled_from(["l1", "l2"]), "criterion": st.sampled_from(["mean_abs", "apoz"])})


_layer_name = st.text(min_size=1, max_size=20).filter(lambda s: not s.startswith(("re:", "type:")))
_selector = st.one_of(
    _layer_name,
    st.builds(lambda body: "re:" + body, st.sampled_from([r"features\.[0-3]\..*", ".*conv", "a|b", r"x\d+", "."])),
    st.builds(lambda name: "type:" + name, st.sampled_from(["Linear", "Conv2d", "LSTM", "_Private"])))


@st.composite
def configs(draw):
    config = CompressionConfig().with_defaults(weight=draw(_partial_weight), activation=draw(_partial_activation),
                                               prune=draw(_partial_prune))
    if draw(st.booleans()):
        config = config.with_model(ModelRef(draw(st.text(min_size=1, max_size=12)), draw(st.text(max_size=8)), "x"))
    config = config.with_locked(draw(st.lists(_selector, max_size=4)))
    config = config.with_equalization(draw(st.sampled_from(["none", "cle"])))
    for name in draw(st.lists(_selector, max_size=5, unique=True)):
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
    assert again.locked == config.locked
    for name, kind in [(name, "Linear") for name, _ in config.layers] + [("features.1.x", "Conv2d")]:
        assert again.resolve(name, kind) == config.resolve(name, kind)
        assert again.is_locked(name, kind) == config.is_locked(name, kind)


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


# -- backward compatibility --------------------------------------------------------------------------------------

def test_keys_of_configurations_written_before_selectors_and_locked_are_unchanged():
    # keys computed by the previous release; a cache keyed on them (sensitivity, sweeps) must stay valid
    assert CompressionConfig().key() == "4636a9401d0835263552e31f56152eb72e88cc755dc92a2c4596142a9c2d630a"
    config = (CompressionConfig().with_defaults(weight={"precision": "int8"},
                                                prune={"method": "magnitude", "sparsity": 0.5})
              .with_layer("features.0.conv", skip=True)
              .with_layer("classifier.2", weight={"precision": "int4"}, prune={"method": "nm"}))
    assert config.key() == "c9f884880e1fa8929738bf1f5a61e08c67b22cf0280a0ae0bc7f2ea755d3ff31"
    assert "locked" not in config.to_dict()
    assert from_json(to_json(config)).key() == config.key()
    assert config.with_locked([]) == config and config.with_locked(["classifier.2"]).key() != config.key()


@pytest.mark.parametrize("layers", [{"conv": {}}, {"conv": {"weight": {}}},
                                    {"conv": {"weight": {}, "activation": {}, "prune": {}}}, {"re:.*": {}}])
def test_empty_overrides_normalise_away(layers):
    base = CompressionConfig().with_defaults(weight={"precision": "int8"})
    doc = {**base.to_dict(), "layers": layers}
    parsed = CompressionConfig.from_dict(doc)
    assert parsed == base and parsed.key() == base.key() and parsed.layers == ()
    assert base.with_layer("conv", weight={}) == base


# -- selectors ---------------------------------------------------------------------------------------------------

INVENTORY = [("features.0.conv", "Conv2d"), ("features.3.conv", "Conv2d"), ("features.7.conv", "Conv2d"),
             ("classifier.2", "Linear")]


def test_precedence_is_defaults_then_type_then_regex_then_exact_name_field_by_field():
    config = (CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
              .with_layer("type:Conv2d", weight={"precision": "int6", "granularity": "per_tensor"},
                          prune={"method": "magnitude", "sparsity": 0.5})
              .with_layer(r"re:features\.[0-3]\..*", weight={"precision": "int4"})
              .with_layer("features.3.conv", weight={"symmetric": False}, skip=False))
    resolved = config.resolve_all(INVENTORY)
    assert resolved["features.3.conv"].weight == WeightSpec("int4", "per_tensor", False)  # all three merge
    assert resolved["features.3.conv"].prune == PruneSpec("magnitude", sparsity=0.5)  # the regex keeps the type's
    assert resolved["features.0.conv"].weight == WeightSpec("int4", "per_tensor", True)
    assert resolved["features.7.conv"].weight == WeightSpec("int6", "per_tensor", True)  # regex is 0-3 only
    assert resolved["classifier.2"].weight == WeightSpec("int8") and resolved["classifier.2"].prune == PruneSpec()
    assert all(settings.activation.precision == "int8" for settings in resolved.values())
    assert config.resolve("features.3.conv", "Conv2d") is resolved["features.3.conv"]  # memoised


def test_among_matching_regexes_the_one_sorted_later_wins_each_field():
    config = (CompressionConfig()
              .with_layer("re:features.*", weight={"precision": "int4", "symmetric": False})
              .with_layer("re:.*conv", weight={"precision": "int6", "granularity": "per_tensor"}))
    # "re:.*conv" < "re:features.*": the features regex applies last
    assert config.resolve("features.0.conv").weight == WeightSpec("int4", "per_tensor", False)
    assert config.resolve("head.conv").weight == WeightSpec("int6", "per_tensor", True)
    assert config.resolve("features.x").weight == WeightSpec("int4", "per_channel", False)
    assert config.resolve("features").weight.precision == "int4"
    assert config.resolve("xfeatures.0").weight.precision == "fp32"  # fullmatch, not search


def test_the_strongest_selector_naming_a_prune_method_starts_its_own_recipe():
    base = CompressionConfig().with_defaults(prune={"method": "magnitude", "sparsity": 0.5, "threshold": 0.2})
    config = (base.with_layer("type:Conv2d", prune={"method": "magnitude", "threshold": 0.1, "relative": True})
              .with_layer("re:features\\.0\\..*", prune={"norm": "l2"})
              .with_layer("features.3.conv", prune={"method": "nm", "n": 1}))
    resolved = config.resolve_all(INVENTORY)
    # the type selector's recipe: no global sparsity; the regex (no method) tunes it
    assert resolved["features.0.conv"].prune == PruneSpec("magnitude", threshold=0.1, relative=True, norm="l2")
    assert resolved["features.7.conv"].prune == PruneSpec("magnitude", threshold=0.1, relative=True)
    # the exact name names a method: neither the type's nor the defaults' fields leak into its N:M recipe
    assert resolved["features.3.conv"].prune == PruneSpec("nm", n=1)
    assert resolved["classifier.2"].prune == base.prune
    tuned = base.with_layer("type:Linear", prune={"sparsity": 0.25})  # no method: tunes the global recipe
    assert tuned.resolve("fc", "Linear").prune == PruneSpec("magnitude", threshold=0.2, sparsity=0.25)


def test_resolve_takes_layer_infos_or_pairs_and_needs_a_kind_once_types_are_used():
    from qtradeoff.core.loading.inventory import LayerInfo

    infos = [LayerInfo(name, kind, 1, (1,), 1, (1,)) for name, kind in INVENTORY]
    config = CompressionConfig().with_layer("type:Linear", weight={"precision": "int4"})
    assert config.resolve_all(infos) == config.resolve_all(INVENTORY)
    assert config.resolve_all(iter(INVENTORY))["classifier.2"].weight.precision == "int4"
    with pytest.raises(ValueError, match="type: selectors"):
        config.resolve("classifier.2")
    assert CompressionConfig().with_layer("fc", skip=True).resolve("fc").skip  # names alone need no kind


def test_selectors_combining_into_an_inconsistent_recipe_are_reported_at_the_stronger_one():
    config = (CompressionConfig().with_layer("type:Linear", prune={"method": "nm", "n": 2, "m": 2})
              .with_layer("re:fc.*", prune={"n": 3}))
    with pytest.raises(ConfigError, match=r'^\$\.layers\["re:fc\.\*"\]\.prune\.n: n=3 is larger than m=2'):
        config.resolve("fc1", "Linear")
    with pytest.raises(ConfigError, match=r'^\$\.layers\["re:fc\.\*"\]\.prune\.n'):
        CompressionConfig.from_dict(config.to_dict(), layers=[("fc1", "Linear")])
    fine = CompressionConfig.from_dict(config.to_dict(), layers=[("fc1", "Conv2d"), ("head", "Linear")])
    assert fine.resolve("head", "Linear").prune == PruneSpec("nm", n=2, m=2)


# -- locked layers -----------------------------------------------------------------------------------------------

def test_locked_selectors_are_sorted_unique_and_matched_like_layer_keys():
    config = CompressionConfig().with_locked(["features.3.conv", "type:Linear", r"re:features\.0\..*",
                                              "features.3.conv"])
    assert config.locked == ("features.3.conv", r"re:features\.0\..*", "type:Linear")
    assert [name for name, kind in INVENTORY if config.is_locked(name, kind)] == [
        "features.0.conv", "features.3.conv", "classifier.2"]
    with pytest.raises(ValueError, match="type: selectors"):
        config.is_locked("classifier.2")
    assert CompressionConfig().with_locked(["fc"]).is_locked("fc") and not CompressionConfig().is_locked("fc")
    document = json.loads(to_json(config))
    assert document["locked"] == list(config.locked)
    again = from_json(to_json(config), layers=INVENTORY)
    assert again == config and again.key() == config.key() and hash(again) == hash(config)
    assert config.with_locked(()).locked == () and config.with_locked(()).key() == CompressionConfig().key()
    with pytest.raises(ConfigError, match=r"^\$\.locked: expected a list"):
        CompressionConfig().with_locked("fc")
    with pytest.raises(ConfigError, match=r"^\$\.locked\[1\]: .*not a valid regular expression"):
        CompressionConfig().with_locked(["fc", "re:("])


# -- validation against a model ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "path", "words"), [
    ({"layers": {"re:foo(": {"skip": True}}}, '$.layers["re:foo("]', "not a valid regular expression"),
    ({"layers": {"re:": {"skip": True}}}, '$.layers["re:"]', "needs a regular expression"),
    ({"layers": {"type:": {"skip": True}}}, '$.layers["type:"]', "not a module class name"),
    ({"layers": {"type:nn.Linear": {"skip": True}}}, '$.layers["type:nn.Linear"]', "not a module class name"),
    ({"layers": {"": {"skip": True}}}, '$.layers[""]', "non-empty string"),
    ({"locked": "fc"}, "$.locked", "expected a list"),
    ({"locked": ["classifier.2", 3]}, "$.locked[1]", "non-empty string"),
    ({"locked": ["classifier.2", "re:[a-"]}, "$.locked[1]", "not a valid regular expression"),
    ({"locked": ["classifier.2", "classifier.2"]}, "$.locked[1]", "listed twice"),
])
def test_bad_selectors_are_rejected_even_without_a_model(changes, path, words):
    for kwargs in ({}, {"layers": INVENTORY}):
        with pytest.raises(ConfigError) as caught:
            from_json(_doc(**changes), **kwargs)
        assert caught.value.path == path and words in str(caught.value), str(caught.value)


@pytest.mark.parametrize(("changes", "path", "words"), [
    ({"layers": {"features.9.conv": {"skip": True}}}, '$.layers["features.9.conv"]', "unknown layer"),
    ({"layers": {r"re:features\.9\..*": {"skip": True}}}, r'$.layers["re:features\\.9\\..*"]', "matches no layer"),
    ({"layers": {"re:features": {"skip": True}}}, '$.layers["re:features"]', "matches no layer name in full"),
    ({"layers": {"type:LSTM": {"skip": True}}}, '$.layers["type:LSTM"]', "no layer of this model is a LSTM"),
    ({"locked": ["classifier.2", "type:Conv2d", "head"]}, "$.locked[2]", "unknown layer 'head'"),
    ({"locked": ["re:nothing.*"]}, "$.locked[0]", "matches no layer"),
    ({"locked": ["type:Embedding"]}, "$.locked[0]", "its layer types: Conv2d, Linear"),
])
def test_selectors_must_match_a_layer_of_the_model(changes, path, words):
    text = _doc(**changes)
    from_json(text)  # fine without a model
    with pytest.raises(ConfigError) as caught:
        from_json(text, layers=INVENTORY)
    assert caught.value.path == path and words in str(caught.value), str(caught.value)


def test_validation_by_names_alone_checks_names_and_regexes_but_cannot_check_types():
    names = [name for name, _ in INVENTORY]
    assert from_json(_doc(layers={"type:LSTM": {"skip": True}}), layer_names=names).overrides()
    with pytest.raises(ConfigError, match="matches no layer"):
        from_json(_doc(locked=["re:head.*"]), layer_names=names)
    config = from_json(_doc(layers={"re:features.*": {"weight": {"precision": "int4"}}}), layer_names=names)
    assert config.resolve("features.3.conv").weight.precision == "int4"
    with pytest.raises(TypeError):
        from_json(_doc(), layer_names=names, layers=INVENTORY)


# -- the generated schema ----------------------------------------------------------------------------------------

def test_the_shipped_schema_is_the_generated_one():
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), "resources/config.schema.json is stale: make schema"
    jsonschema.Draft202012Validator.check_schema(json_schema())
    assert json_schema()["$defs"]["precision"]["enum"] == list(PRECISIONS)


def test_the_generator_prints_the_schema(capsys):
    from qtradeoff.core.config import main

    assert main(["--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


_REJECTED_BY_BOTH = [
    _doc(defaults={"prune": {"method": "nm", "n": 4, "m": 2}}),
    _doc(defaults={"prune": {"method": "nm", "n": 5}}),  # m defaults to 4
    _doc(defaults={"prune": {"method": "nm", "m": 1}}),  # n defaults to 2
    _doc(layers={"fc": {"prune": {"method": "nm", "n": 64, "m": 63}}}),
    _doc(defaults={"prune": {"method": "structured"}}),
    _doc(defaults={"prune": {"method": "structured", "sparsity": None}}),
    _doc(layers={"fc": {"prune": {"method": "structured", "norm": "l2"}}}),
    _doc(defaults={"weight": {"precision": "int1"}}),
    _doc(layers={"fc": {"activation": {"precision": "fp64"}}}),
    _doc(defaults={"activation": {"percentile": 0}}),
    _doc(defaults={"prune": {"sparsity": 1.0}}),
    _doc(defaults={"prune": {"n": 65}}),
    _doc(defaults={"prune": {"threshold": -1}}),
    _doc(extra=1),
    _doc(defaults={"weights": {}}),
    _doc(defaults={"weight": {"bits": 8}}),
    _doc(layers={"fc": {"wieght": {}}}),
    _doc(layers={"fc": {"skip": 1}}),
    _doc(layers={"type:": {}}),
    _doc(layers={"type:nn.Linear": {"skip": True}}),
    _doc(layers={"re:": {"skip": True}}),
    _doc(locked=["fc", "fc"]),
    _doc(locked=[3]),
    _doc(locked="fc"),
    _doc(model={"sha256": "x"}),
    _doc(schema="qtradeoff.config/2"),
]
_ACCEPTED_BY_BOTH = [
    _doc(),
    _doc(defaults={"prune": {"method": "nm", "n": 4, "m": 4}}),
    _doc(defaults={"prune": {"method": "nm", "n": 3}}),
    _doc(defaults={"prune": {"method": "nm", "m": 2}}),
    _doc(layers={"fc": {"prune": {"method": "nm", "n": 1, "m": 1}}}),
    _doc(defaults={"prune": {"method": "structured", "sparsity": 0.25}}),
    _doc(defaults={"prune": {"method": "magnitude", "n": 8, "m": 2}}),  # n, m unused outside N:M
    _doc(layers={"type:Linear": {"weight": {"precision": "int4"}}, r"re:features\.[0-3]\..*": {"skip": True},
                 "classifier.2": {}, "features.0.conv": {"prune": {"sparsity": 0.5}}},
         locked=["type:Conv2d", "re:.*", "classifier.2"]),
    _doc(model=None, metrics=None, environment={"torch": "2.13.0"}),
]


@pytest.mark.parametrize("text", _REJECTED_BY_BOTH)
def test_documents_the_parser_rejects_the_schema_rejects_too(text):
    with pytest.raises(ConfigError):
        from_json(text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(text), json_schema(), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("text", _ACCEPTED_BY_BOTH)
def test_documents_the_parser_accepts_the_schema_accepts_too(text):
    config = from_json(text)
    jsonschema.validate(json.loads(text), json_schema(), cls=jsonschema.Draft202012Validator)
    jsonschema.validate(json.loads(to_json(config)), json_schema(), cls=jsonschema.Draft202012Validator)
