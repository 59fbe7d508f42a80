"""The engine with rounding algorithms: results record them, caches keep them, the CLI runs them."""

from __future__ import annotations

import json

import pytest

from qtradeoff import cli
from qtradeoff.core.config import CompressionConfig, to_json
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for

INT3 = CompressionConfig().with_defaults(weight={"precision": "int3"}, activation={"precision": "int8"})


@pytest.fixture(scope="module")
def cnn():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=64, eval_size=96))


def test_gptq_result_records_it_and_unrelated_edits_reuse_it(cnn):
    config = INT3.with_defaults(weight={"rounding": "gptq"})
    result = cnn.evaluate(config, latency="none")
    assert result.config.weight.rounding == "gptq"
    assert result.config.to_dict()["defaults"]["weight"]["rounding"] == "gptq"
    stats = cnn.compressor.stats
    computed = stats.rounding_computations
    assert computed == len(cnn.compressor.layers)
    # activation calibration and another layer's pruning do not recompute any layer's rounding but that one
    cnn.evaluate(config.with_defaults(activation={"calibration": "percentile"}), latency="none")
    cnn.evaluate(config.with_layer("classifier.2", prune={"method": "magnitude", "sparsity": 0.5}), latency="none")
    assert stats.rounding_computations == computed + 1
    assert stats.rounding_passes == 1


def test_bias_correction_changes_the_result(cnn):
    nearest = cnn.evaluate(INT3, latency="none")
    corrected = cnn.evaluate(INT3.with_defaults(weight={"rounding": "bias_correction"}), latency="none")
    assert corrected.sqnr_db != nearest.sqnr_db
    assert corrected.weight_bytes == nearest.weight_bytes  # same grid, same storage


def test_cli_evaluate_runs_a_rounding_config(tmp_path, capsys):
    path = tmp_path / "gptq.json"
    path.write_text(to_json(CompressionConfig().with_defaults(weight={"precision": "int4", "rounding": "gptq"})
                            .with_layer("layers.4", weight={"rounding": "adaround", "adaround_iterations": 20})))
    code = cli.main(["evaluate", "digits_mlp", "--config", str(path), "--latency", "none", "--eval-size", "32",
                     "--json"])
    out = capsys.readouterr().out
    assert code == 0
    document = json.loads(out[out.index("{"):])
    found = json.dumps(document)
    assert '"rounding": "gptq"' in found and '"rounding": "adaround"' in found


@pytest.mark.parametrize("field, value", [("gptq_act_order", True), ("range", "mse")])
def test_act_order_and_range_reach_the_result_and_the_caches(cnn, field, value):
    """Two configurations differing only in the new field give different logits (the simulated-model, weight and
    rounding caches key on it), the result records it, and the stored bytes do not change (same scales)."""
    base = INT3.with_defaults(weight={"rounding": "gptq"})
    changed = base.with_defaults(weight={field: value})
    assert cnn.logits(changed).ne(cnn.logits(base)).any()
    result = cnn.evaluate(changed, latency="none")
    assert result.config.to_dict()["defaults"]["weight"][field] == value
    assert result.weight_bytes == cnn.evaluate(base, latency="none").weight_bytes
