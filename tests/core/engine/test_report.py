"""report: the exported metrics and environment come from the Result that was measured (no Qt)."""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path

import pytest
import torch

import qtradeoff
from qtradeoff.core.config import CompressionConfig, from_json_document
from qtradeoff.core.engine import report
from qtradeoff.core.engine.measure import Result, evaluate
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.measurement import realquant, roofline
from qtradeoff.core.measurement.latency import LatencySettings

SCHEMA = Path(__file__).resolve().parents[3] / "resources" / "config.schema.json"
FAST = LatencySettings(batch_sizes=(1, 32), threads=1, min_run_time=0.02, warmup=1, min_repeats=3)
INT8 = CompressionConfig().with_defaults(weight={"precision": "int8"})


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("QTRADEOFF_CACHE_DIR", str(tmp_path_factory.mktemp("roofline")))  # the estimate's calibration
    loaded = load_sample_model("digits_cnn")
    yield loaded, sample_data_for(loaded, eval_size=64, calib_size=32)
    mp.undo()


@pytest.fixture(scope="module")
def measured(cnn):
    loaded, data = cnn
    return evaluate(loaded, data, INT8, latency="both", latency_settings=FAST)


@pytest.fixture(scope="module")
def estimated(cnn):
    loaded, data = cnn
    return evaluate(loaded, data, INT8, latency="estimated", latency_settings=FAST)


def test_environment_of_this_process():
    env = report.environment()
    assert set(env) == set(report.ENVIRONMENT_KEYS)
    assert env["qtradeoff"] == qtradeoff.__version__ and env["torch"] == torch.__version__
    assert env["python"] == platform.python_version() and env["cpu"] == roofline.cpu_model()
    assert env["threads"] == torch.get_num_threads() and env["quantized_engine"] == realquant.ENGINE


def test_environment_of_a_result_is_where_it_was_measured(measured):
    env = report.environment(measured)
    assert set(env) == set(report.ENVIRONMENT_KEYS)
    assert env == {key: measured.provenance[key] for key in report.ENVIRONMENT_KEYS}
    assert env["threads"] == 1  # the timing settings', not this process's
    elsewhere = dataclasses.replace(measured, provenance={**measured.provenance, "cpu": "Some Other CPU",
                                                          "threads": 64, "torch": "9.9.9"})
    assert report.environment(elsewhere) == {**env, "cpu": "Some Other CPU", "threads": 64, "torch": "9.9.9"}
    # A result from a file that recorded nothing is not credited to this machine.
    assert report.environment(dataclasses.replace(measured, provenance={"torch": "2.0.0"})) == {"torch": "2.0.0"}


def test_metrics_of_a_measured_labelled_result(measured):
    metrics = report.metrics(measured)
    assert metrics["labelled"] is True
    assert metrics["accuracy"] == measured.accuracy and metrics["accuracy_ci95"] == list(measured.accuracy_ci95)
    assert metrics["top5"] == measured.top5 and metrics["top5"] >= metrics["accuracy"]
    assert metrics["agreement"] == measured.agreement and len(metrics["agreement_ci95"]) == 2
    latency = metrics["latency_ms"]
    assert latency["measured"] is True
    assert latency["batch1"] == measured.latency_ms(1, measured=True)
    assert latency["batch32"] == measured.latency_ms(32, measured=True)
    assert set(latency["iqr"]) == {"batch1", "batch32"} and all(v >= 0 for v in latency["iqr"].values())
    assert latency["noisy"] == [f"batch{s.batch}" for s in measured.latency_measured if s.noisy]
    assert metrics["weight_bytes"] == measured.weight_bytes < metrics["fp32_weight_bytes"]
    assert metrics["peak_activation_bytes"] == measured.peak_activation_bytes > 0
    assert metrics["eval_samples"] == 64
    json.dumps(metrics, allow_nan=False)


def test_metrics_mark_an_estimate(estimated):
    latency = report.metrics(estimated)["latency_ms"]
    assert latency == {"batch1": estimated.latency_ms(1, measured=False),
                       "batch32": estimated.latency_ms(32, measured=False), "measured": False}


def test_metrics_without_labels_are_fidelity(cnn):
    loaded, data = cnn
    unlabelled = dataclasses.replace(data, eval_labels=None, calib_labels=None)
    result = evaluate(loaded, unlabelled, INT8, latency="none")
    metrics = report.metrics(result)
    assert metrics["labelled"] is False
    assert "accuracy" not in metrics and "top5" not in metrics and "latency_ms" not in metrics
    assert 0 < metrics["agreement"] <= 1 and metrics["sqnr_db"] == result.sqnr_db


def test_config_document_validates_and_round_trips(measured):
    jsonschema = pytest.importorskip("jsonschema")
    text = report.config_document(measured.config, measured)
    doc = json.loads(text)
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    config, metrics, env = from_json_document(text)
    assert config == measured.config
    assert metrics == report.metrics(measured) and env == report.environment(measured)


def test_config_document_of_identical_outputs_is_valid_json(cnn):
    loaded, data = cnn
    fp32 = evaluate(loaded, data, CompressionConfig(), latency="none")
    assert fp32.sqnr_db == float("inf")
    doc = json.loads(report.config_document(fp32.config, Result.from_dict(fp32.to_dict())))
    assert "sqnr_db" not in doc["metrics"] and doc["metrics"]["agreement"] == 1.0
    # Not evaluated yet: no metrics, and the environment is where the file is written.
    bare = json.loads(report.config_document(CompressionConfig()))
    assert "metrics" not in bare and bare["environment"] == report.environment()
