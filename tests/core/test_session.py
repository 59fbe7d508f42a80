"""Session files: a saved session reads back equal; a damaged one is refused whole, naming the file (no Qt)."""

from __future__ import annotations

import json
import os

import pytest

from qtradeoff.core.config import CompressionConfig
from qtradeoff.core.engine.measure import evaluate
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.session import SCHEMA, ModelSource, Session, SessionError, SessionPoint, read_session, session_bytes

INT4 = CompressionConfig().with_defaults(weight={"precision": "int4"}, activation={"precision": "int8"})


@pytest.fixture(scope="module")
def session():
    loaded = load_sample_model("digits_cnn")
    data = sample_data_for(loaded, eval_size=32, calib_size=16)
    fp32 = evaluate(loaded, data, CompressionConfig(), latency="estimated")
    int4 = evaluate(loaded, data, INT4, latency="estimated")
    return Session(ModelSource("sample", "digits_cnn", sha256=loaded.sha256, format=loaded.format), INT4,
                   (SessionPoint(fp32, "baseline"), SessionPoint(int4, "explore", label="int4 try", pinned=True,
                                                          answer=True, strategy="greedy")),
                   eval_size=32, extra={"latency_view": "estimated"})


def test_round_trip_keeps_every_point_and_the_current_config(session, tmp_path):
    path = tmp_path / "s.qtsession.json"
    path.write_bytes(session_bytes(session))
    back = read_session(path)
    assert back.model == session.model and back.eval_size == 32 and back.extra == session.extra
    assert back.current.key() == INT4.key()
    assert [p.result.to_dict() for p in back.points] == [p.result.to_dict() for p in session.points]
    assert [(p.tag, p.label, p.pinned) for p in back.points] == [("baseline", "", False),
                                                                 ("explore", "int4 try", True)]
    assert [(p.answer, p.strategy) for p in back.points] == [(False, ""), (True, "greedy")]  # the answer mark


@pytest.mark.parametrize("damage, where", [
    (lambda d: d.update(schema="qtradeoff.config/1"), "$.schema"),
    (lambda d: d["model"].update(source="url"), "$.model.source"),
    (lambda d: d["points"][1].update(pinned="yes"), "$.points[1].pinned"),
    (lambda d: d["points"][1].update(answer="yes"), "$.points[1].answer"),
    (lambda d: d["points"][0].update(answer=True), "$.points"),  # two answers
    (lambda d: d["points"][0]["result"].pop("weight_bytes"), "$.points[0].result"),
    (lambda d: d.update(current={"schema": "qtradeoff.config/1", "defaults": {"weight": {"precision": "int99"}}}),
     "$.current"),
])
def test_damaged_session_is_refused_naming_the_file_and_place(session, tmp_path, damage, where):
    doc = json.loads(session_bytes(session))
    damage(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SessionError) as info:
        read_session(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_a_pipe_or_truncated_file_is_refused_without_blocking(session, tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(SessionError, match="not a regular file"):
        read_session(fifo)
    cut = tmp_path / "cut.json"
    cut.write_bytes(session_bytes(session)[:500])
    with pytest.raises(SessionError, match="cut.json"):
        read_session(cut)
    assert json.loads(session_bytes(session))["schema"] == SCHEMA
