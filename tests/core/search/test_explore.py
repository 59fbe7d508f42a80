"""Search strategies on digits_cnn: greedy meets the accuracy constraint below int8's size; others stream and stop."""

from __future__ import annotations

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.engine.measure import evaluate
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.search import explore
from qtradeoff.core.search.sensitivity import SensitivitySettings, analyze


@pytest.fixture(scope="module")
def session():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=32))  # the whole test split


@pytest.fixture(scope="module")
def sensitivity(session, tmp_path_factory):
    # fewer trials than the default keep the test fast; greedy reads 6 and 3 bits pessimistically from 4 and 2
    return analyze(session, settings=SensitivitySettings(bits=(8, 4, 2), sparsities=()),
                   cache_dir=tmp_path_factory.mktemp("sens"))


def fast(session):
    return lambda config: session.evaluate(config, latency="none")


def test_greedy_smaller_than_int8_within_one_point(session, sensitivity):
    points = list(explore.greedy(session, max_drop=1.0, sensitivity=sensitivity))
    roles = [explore.role_of(result) for _, result in points]
    assert roles[0] == "reference" and roles[1] == "start" and roles[-1] == "final"
    assert roles.count("accepted") >= 3  # every intermediate point is kept
    config, final = explore.final_point(points)
    assert final.latency_estimated and not final.latency_measured  # fast search: marked estimated

    # measured afresh, independently of the search's caches
    fp32 = evaluate(session.loaded, session.data, CompressionConfig(), latency="none")
    chosen = evaluate(session.loaded, session.data, config, latency="none")
    int8 = evaluate(session.loaded, session.data, explore.uniform(CompressionConfig(), 8), latency="none")
    assert chosen.accuracy == final.accuracy
    assert 100 * (fp32.accuracy - chosen.accuracy) <= 1.0
    assert chosen.weight_bytes < int8.weight_bytes
    assert chosen.weight_bytes < 0.6 * int8.weight_bytes  # mixed precision, not one token layer


def test_locked_layers_are_never_changed(session, sensitivity):
    locked = {session.layer_names[0], session.layer_names[-1]}
    configs = [config for config, _ in explore.greedy(session, max_drop=1.0, sensitivity=sensitivity,
                                                       locked=locked, budget=6, evaluate=fast(session))]
    configs += [config for config, _ in explore.evolutionary(session, locked=locked, budget=4, seed=3,
                                                             evaluate=fast(session))]
    assert len(configs) >= 8
    for config in configs:
        for layer in locked:
            settings = config.resolve(layer)
            assert settings.weight.precision == "fp32" and settings.prune.method == "none"
    with pytest.raises(explore.SearchError):
        list(explore.greedy(session, locked={"no.such.layer"}, sensitivity=sensitivity))


def test_grid_is_uniform_and_respects_budget(session):
    points = list(explore.grid(session, precisions=("fp32", "int8"), sparsities=(0.0, 0.5), budget=3,
                               evaluate=fast(session)))
    assert len(points) == 3
    assert [(c.weight.precision, c.prune.sparsity) for c, _ in points] == [("fp32", None), ("fp32", 0.5),
                                                                            ("int8", None)]
    assert points[2][1].weight_bytes < points[0][1].weight_bytes


def test_evolutionary_is_deterministic_and_seeded_by_the_frontier(session):
    seeds = list(explore.grid(session, precisions=("fp32", "int8", "int4"), sparsities=(0.0,),
                              evaluate=fast(session)))
    run = lambda seed: [c.key() for c, _ in explore.evolutionary(  # noqa: E731
        session, seed=seed, budget=4, seeds=seeds, evaluate=fast(session))]
    first = run(7)
    assert first == run(7) and len(first) == 4
    assert first != run(8)
    assert not set(first) & {c.key() for c, _ in seeds}  # seeds are not re-evaluated


def test_most_accurate_under_bytes(session, sensitivity):
    points = list(explore.most_accurate_under(session, max_bytes=60_000, sensitivity=sensitivity,
                                              evaluate=fast(session)))
    config, final = explore.final_point(points)
    assert final.weight_bytes <= 60_000 and final.provenance["search"]["feasible"]
    assert final.accuracy >= 0.95
    with pytest.raises(explore.SearchError):
        list(explore.most_accurate_under(session))


def test_stop_keeps_what_was_found(session, sensitivity):
    found = []
    for point in explore.run("greedy", session, sensitivity=sensitivity, evaluate=fast(session),
                             should_stop=lambda: len(found) >= 3):
        found.append(point)
    assert len(found) == 3
    assert explore.planned_evaluations("grid", session, budget=5) == 5
    with pytest.raises(explore.SearchError):
        explore.run("annealing", session)


def test_greedy_prunes_only_where_the_counted_bytes_shrink(session, tmp_path):
    report = analyze(session, settings=SensitivitySettings(bits=(8, 4, 2), sparsities=(0.5, 0.75)),
                     cache_dir=tmp_path)
    points = list(explore.greedy(session, max_drop=1.0, sensitivity=report, evaluate=fast(session)))
    steps = [(config, result, result.provenance["search"]) for config, result in points]
    pruning = [step for step in steps if step[2].get("sparsity") is not None]
    assert pruning, "the greedy search never tried a pruning step"
    last_bytes = None
    for config, result, search in steps:
        if search["role"] != "accepted":
            continue
        if search.get("sparsity") is not None:
            assert result.weight_bytes < last_bytes and search["drop"] <= 1.0
            assert config.resolve(search["layer"]).prune.sparsity == search["sparsity"]
        last_bytes = result.weight_bytes


@pytest.mark.parametrize("strategy", ["grid", "greedy", "evolutionary", "budget"])
def test_every_search_honours_locks_written_in_the_configuration(session, sensitivity, strategy):
    # locks as selectors in the configuration itself: a regex for the first block, a type for the classifier
    base = CompressionConfig().with_locked(["re:features\\.0\\..*", "type:Linear"])
    kinds = {info.name: info.kind for info in session.layers}
    locked = [name for name in session.layer_names if base.is_locked(name, kinds[name])]
    assert locked == ["features.0.conv", "classifier.2"]
    options = {"grid": {"precisions": ("fp32", "int4"), "sparsities": (0.0, 0.5)},
               "greedy": {"max_drop": 1.0, "sensitivity": sensitivity, "budget": 8},
               "evolutionary": {"budget": 6, "seed": 1},
               "budget": {"max_bytes": 60_000, "sensitivity": sensitivity, "budget": 8}}[strategy]
    points = list(explore.run(strategy, session, base_config=base, evaluate=fast(session), **options))
    assert len(points) >= 3
    for config, _ in points:
        if explore.role_of(_) == "reference":  # the fp32 point drops are measured against
            continue
        assert config.locked == base.locked  # the answer still says what was locked
        for name in locked:
            assert config.resolve(name, kinds[name]) == base.resolve(name, kinds[name]), (strategy, name)


def test_evolutionary_generations_evaluated_as_batches_give_the_one_by_one_sequence(session):
    batches = []

    def evaluate_many(configs):
        batches.append(len(configs))
        return [fast(session)(config) for config in configs]

    one_by_one = [(c.key(), r.accuracy) for c, r in explore.random_search(session, seed=2, budget=20,
                                                                          evaluate=fast(session))]
    batched = [(c.key(), r.accuracy) for c, r in explore.random_search(session, seed=2, budget=20,
                                                                       evaluate=fast(session),
                                                                       evaluate_many=evaluate_many)]
    assert batched == one_by_one and len(batched) == 20
    assert batches == [explore.GENERATION, explore.GENERATION, 20 - 2 - 2 * explore.GENERATION]
