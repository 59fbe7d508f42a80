"""Sweeps: one JSON line per configuration, an interrupted file resumes without re-measuring anything."""

from __future__ import annotations

import json

import pytest

from qtradeoff import cli
from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.search.sensitivity import SensitivitySettings, analyze
from qtradeoff.core.search.sweep import SweepError, read_records, read_results, sweep_iter


@pytest.fixture(scope="module")
def session():
    loaded = load_sample_model("digits_cnn")
    return Engine(loaded, sample_data_for(loaded, calib_size=16, eval_size=64))


def counting(session):
    calls: list[str] = []

    def evaluate(config):
        calls.append(config.key())
        return session.evaluate(config, latency="none")

    return evaluate, calls


def test_interrupted_sweep_resumes_without_repeating(session, tmp_path):
    out = tmp_path / "results.jsonl"
    evaluate, first_calls = counting(session)
    seen = []
    for point in sweep_iter(session, "random", out, budget=8, seed=1, evaluate=evaluate,
                            should_stop=lambda: len(seen) >= 3):
        seen.append(point)
    assert len(first_calls) == 3 and len(read_records(out)) == 3
    with open(out, "a", encoding="utf-8") as file:  # the process died while writing the next line
        file.write('{"schema": "qtradeoff.sweep/1", "key": "TRUNCATED", "resu')

    evaluate, resumed_calls = counting(session)
    points = list(sweep_iter(session, "random", out, resume=True, budget=8, seed=1, evaluate=evaluate))
    assert len(points) == 8 and sum(point.new for point in points) == 5
    assert len(resumed_calls) == 5 and not set(resumed_calls) & set(first_calls)
    keys = [record["key"] for record in read_records(out)]
    assert len(keys) == 8 == len(set(keys))
    assert out.read_text().endswith("\n") and "TRUNCATED" not in out.read_text()

    # the same sequence as a run that was never interrupted (the strategy is deterministic for a seed)
    evaluate, _ = counting(session)
    reference = tmp_path / "uninterrupted.jsonl"
    list(sweep_iter(session, "random", reference, budget=8, seed=1, evaluate=evaluate))
    assert [record["key"] for record in read_records(reference)] == keys


def test_finished_greedy_file_resumes_with_nothing_to_do(session, tmp_path):
    sensitivity = analyze(session, settings=SensitivitySettings(bits=(8, 4, 2), sparsities=()), cache_dir=tmp_path)
    out = tmp_path / "greedy.jsonl"
    evaluate, calls = counting(session)
    verify_calls = []

    def verify(config):
        verify_calls.append(config.key())
        return session.evaluate_full(config, latency="none")

    points = list(sweep_iter(session, "greedy", out, budget=6, evaluate=evaluate, verify=verify,
                             sensitivity=sensitivity, max_drop=1.0))
    assert points[-1].role == "final" and len(verify_calls) == 1
    records = read_records(out)
    assert len(records) == len(points) and records[-1]["role"] == "final"
    evaluate, again = counting(session)
    verify_calls.clear()
    replay = list(sweep_iter(session, "greedy", out, resume=True, budget=6, evaluate=evaluate, verify=verify,
                             sensitivity=sensitivity, max_drop=1.0))
    assert not again and not verify_calls and not any(point.new for point in replay)
    assert [p.result.accuracy for p in replay] == [p.result.accuracy for p in points]
    assert len(read_records(out)) == len(records)


def test_read_results_and_bad_files(session, tmp_path):
    out = tmp_path / "grid.jsonl"
    evaluate, _ = counting(session)
    list(sweep_iter(session, "grid", out, budget=2, evaluate=evaluate))
    results = read_results(out)
    assert len(results) == 2 and results[0].config.weight.precision == "fp32"
    assert results[1].weight_bytes < results[0].weight_bytes or results[1].accuracy != results[0].accuracy

    with pytest.raises(SweepError, match="--resume"):
        list(sweep_iter(session, "grid", out, budget=1, evaluate=evaluate))
    corrupt = tmp_path / "corrupt.jsonl"
    lines = out.read_text().splitlines()
    corrupt.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(SweepError, match=":2"):
        read_results(corrupt)
    assert read_records(tmp_path / "missing.jsonl") == []
    other = tmp_path / "other.jsonl"
    record = json.loads(lines[0])
    record["model_sha256"] = "0" * 64
    other.write_text(json.dumps(record) + "\n")
    with pytest.raises(SweepError, match="another model"):
        list(sweep_iter(session, "grid", other, resume=True, budget=2, evaluate=evaluate))


def test_cli_sweep_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    common = ["sweep", "digits_cnn", "--strategy", "grid", "--out", str(out), "--eval-size", "32",
              "--calib-size", "16", "--quiet"]
    assert cli.main(common + ["--budget", "2"]) == 0
    assert len(read_records(out)) == 2
    assert cli.main(common + ["--budget", "2"]) == 3  # the results file exists: an input-file error
    assert "--resume" in capsys.readouterr().err
    assert cli.main(common + ["--budget", "3", "--resume"]) == 0
    records = read_records(out)
    assert len(records) == 3 and len({r["key"] for r in records}) == 3
    assert all(r["result"]["latency_estimated"] for r in records)  # search latency is the estimate, marked
    assert cli.main(["sweep", str(tmp_path / "nope.pt"), "--out", str(out), "--quiet"]) == 3


def test_cli_sweep_starts_from_a_configuration_and_lock_selectors(tmp_path, capsys):
    from qtradeoff.core.config import to_json

    base = tmp_path / "base.json"
    base.write_text(to_json(CompressionConfig().with_defaults(activation={"precision": "int8"})
                            .with_locked(["re:features\\.0\\..*"])))
    out = tmp_path / "locked.jsonl"
    common = ["sweep", "digits_cnn", "--strategy", "grid", "--out", str(out), "--eval-size", "32",
              "--calib-size", "16", "--quiet", "--budget", "3", "--config", str(base)]
    assert cli.main(common + ["--lock", "type:Linear"]) == 0
    records = read_records(out)
    assert len(records) == 3
    for record in records:
        config = CompressionConfig.from_dict(record["config"])
        assert config.locked == ("re:features\\.0\\..*", "type:Linear")
        assert config.activation.precision == "int8"  # the file's defaults are where the search starts
        assert config.resolve("classifier.2", "Linear").weight.precision == "fp32"  # locked at the base's fp32
    assert cli.main(common + ["--overwrite", "--lock", "re:no_such_layer"]) == 2
    assert "--lock" in capsys.readouterr().err


def test_cli_sweep_that_cannot_start_says_so_and_exits_non_zero(tmp_path, capsys):
    from qtradeoff.core.config import to_json

    base = tmp_path / "int2-activations.json"
    base.write_text(to_json(CompressionConfig().with_defaults(activation={"precision": "int2"})))
    out = tmp_path / "stuck.jsonl"
    code = cli.main(["sweep", "digits_cnn", "--strategy", "greedy", "--out", str(out), "--eval-size", "16",
                     "--calib-size", "16", "--quiet", "--budget", "4", "--max-drop", "0.5", "--config", str(base)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "cannot start" in err and "--max-drop 0.5" in err and "one sample is 6.25 points" in err
