"""A session file: what a user needs to come back to an exploration exactly as they left it.

One JSON document (schema ``qtradeoff.session/1``): where the model came from (a bundled sample's name, or a file's
path with its sha256, so a changed file is noticed instead of silently mixed with old points), the evaluation data
(its path, or none for the data that comes with the model), the subset size in use, the configuration being
edited, and every evaluated point as its full Result with the tag, label and pin the user gave it.

Reading is as careful as for configuration files (:func:`qtradeoff.core.config.read_file_bytes`: never blocks on a
pipe or device, bounded size, strict JSON) and validates the whole document before anything is applied, so a
damaged session changes nothing. No Qt here: the window and tests use the same reader and writer.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from qtradeoff.core.config import CompressionConfig, ConfigError, ConfigFileError, read_file_bytes, read_json

SCHEMA = "qtradeoff.session/1"
# A point's Result is 1–4 KiB of JSON; 64 MiB holds tens of thousands of them and refuses anything absurd.
MAX_SESSION_BYTES = 64 * 1024 * 1024
MAX_LABEL = 200
SOURCES = ("sample", "file")


class SessionError(ConfigFileError):
    """A session file that cannot be used; names the file (and the JSON path, for a problem inside it)."""


@dataclass(frozen=True)
class ModelSource:
    """Where the session's model comes from: ``source`` "sample" (``name`` is the sample) or "file" (``path``)."""

    source: str
    name: str
    path: str = ""
    sha256: str = ""
    format: str = ""
    trusted: bool = False

    def to_dict(self) -> dict:
        return {"source": self.source, "name": self.name, "path": self.path, "sha256": self.sha256,
                "format": self.format, "trusted": self.trusted}


@dataclass(frozen=True)
class SessionPoint:
    """One evaluated configuration: its Result (the core's, with its config), the tag it was made under
    ("baseline", "edit", "search", "sweep", …), the user's label and pin, and whether it is the marked answer of
    a search (``answer``, with the search's ``strategy``)."""

    result: Any
    tag: str = ""
    label: str = ""
    pinned: bool = False
    answer: bool = False
    strategy: str = ""

    def to_dict(self) -> dict:
        doc = {"tag": self.tag, "label": self.label, "pinned": self.pinned, "result": self.result.to_dict()}
        if self.answer:  # older readers ignore the keys; files without them read as before
            doc["answer"] = True
        if self.strategy:
            doc["strategy"] = self.strategy
        return doc


@dataclass(frozen=True)
class Session:
    model: ModelSource
    current: CompressionConfig
    points: tuple[SessionPoint, ...] = ()
    data_path: str = ""  # "" when the model's own data (a sample's) is used
    eval_size: int = 0
    extra: dict = field(default_factory=dict)  # JSON-safe view settings (latency axis, …), kept as saved
    # how the data was read (the data dialog's options: kind, image size, channels, mean/std, label column, …),
    # so a reopened session evaluates on the same inputs; {} for the defaults
    data_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "model": self.model.to_dict(), "data_path": self.data_path,
                "data_options": self.data_options,
                "eval_size": self.eval_size, "current": self.current.to_dict(),
                "points": [point.to_dict() for point in self.points], "extra": self.extra}


def session_bytes(session: Session) -> bytes:
    """The file's content (UTF-8 JSON; non-finite numbers are refused, as the reader would refuse them)."""
    return (json.dumps(session.to_dict(), indent=1, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")


def read_session(path: str | os.PathLike) -> Session:
    """Read and validate a session file whole; :class:`SessionError` (naming the file) on any problem."""
    try:
        raw = read_file_bytes(path, limit=MAX_SESSION_BYTES, what="session")
    except ConfigFileError as error:
        raise SessionError(error.file, error.path, error.problem) from None
    try:
        doc = read_json(raw)
    except ConfigError as error:
        raise SessionError(str(path), error.path, error.problem) from None
    return session_from_dict(doc, str(path))


def session_from_dict(doc: Any, file: str = "session") -> Session:
    def fail(where: str, problem: str) -> SessionError:
        return SessionError(file, where, problem)

    if not isinstance(doc, dict):
        raise fail("$", "expected a JSON object")
    if doc.get("schema") != SCHEMA:
        raise fail("$.schema", f"expected {SCHEMA!r}, found {doc.get('schema')!r}; this is not a qtradeoff session")
    model = doc.get("model")
    if not isinstance(model, dict):
        raise fail("$.model", "expected an object naming the model")
    source = model.get("source")
    if source not in SOURCES:
        raise fail("$.model.source", f"expected one of {', '.join(SOURCES)}, found {source!r}")
    texts = {key: model.get(key, "") for key in ("name", "path", "sha256", "format")}
    for key, value in texts.items():
        if not isinstance(value, str):
            raise fail(f"$.model.{key}", "expected a string")
    if source == "file" and not texts["path"]:
        raise fail("$.model.path", "a file model needs its path")
    if not isinstance(model.get("trusted", False), bool):
        raise fail("$.model.trusted", "expected true or false")
    source_ = ModelSource(source, texts["name"], texts["path"], texts["sha256"], texts["format"],
                          bool(model.get("trusted", False)))
    data_path = doc.get("data_path", "")
    if not isinstance(data_path, str):
        raise fail("$.data_path", "expected a string")
    data_options = doc.get("data_options", {})
    if not isinstance(data_options, dict) or not all(isinstance(key, str) for key in data_options):
        raise fail("$.data_options", "expected an object of data-reading options")
    eval_size = doc.get("eval_size", 0)
    if not isinstance(eval_size, int) or isinstance(eval_size, bool) or eval_size < 0:
        raise fail("$.eval_size", "expected a count of samples (0 or more)")
    try:
        current = CompressionConfig.from_dict(doc.get("current"))
    except (ConfigError, TypeError, KeyError, ValueError) as error:
        raise fail("$.current", f"not a valid configuration ({error})") from None
    raw_points = doc.get("points", [])
    if not isinstance(raw_points, list):
        raise fail("$.points", "expected a list")
    from qtradeoff.core.measurement.result import Result  # torch: only once a session is really read

    points = []
    for i, item in enumerate(raw_points):
        where = f"$.points[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("result"), dict):
            raise fail(where, "expected an object with a 'result'")
        tag, label, pinned = item.get("tag", ""), item.get("label", ""), item.get("pinned", False)
        if not isinstance(tag, str) or not isinstance(label, str) or len(label) > MAX_LABEL:
            raise fail(where, f"tag and label must be strings (a label at most {MAX_LABEL} characters)")
        if not isinstance(pinned, bool):
            raise fail(f"{where}.pinned", "expected true or false")
        answer, strategy = item.get("answer", False), item.get("strategy", "")
        if not isinstance(answer, bool):
            raise fail(f"{where}.answer", "expected true or false")
        if not isinstance(strategy, str) or len(strategy) > MAX_LABEL:
            raise fail(f"{where}.strategy", f"expected a string of at most {MAX_LABEL} characters")
        try:
            result = Result.from_dict(item["result"])
        except (ConfigError, TypeError, KeyError, ValueError) as error:
            raise fail(f"{where}.result", f"not a valid result ({type(error).__name__}: {error})") from None
        if not all(math.isfinite(v) for v in (result.agreement, float(result.weight_bytes))):
            raise fail(f"{where}.result", "holds non-finite figures")
        points.append(SessionPoint(result, tag, label, pinned, answer, strategy))
    if sum(point.answer for point in points) > 1:
        raise fail("$.points", "more than one point is marked as the answer")
    extra = doc.get("extra", {})
    if not isinstance(extra, dict):
        raise fail("$.extra", "expected an object")
    return Session(source_, current, tuple(points), data_path, eval_size, extra, data_options)


__all__ = ["MAX_SESSION_BYTES", "SCHEMA", "ModelSource", "Session", "SessionError", "SessionPoint", "read_session",
           "session_bytes", "session_from_dict"]
