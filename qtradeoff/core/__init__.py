"""The engine of qtradeoff, usable from a notebook, the CLI, the GUI and tests alike. No Qt imports here.

The public face, along the data flow (each name is imported on first use, so ``import qtradeoff.core`` stays
cheap and does not load torch)::

    loaded = load_model("model.pt")                 # or load_sample_model("digits_cnn"); safe by default
    data = load_data("images/", preprocessing=loaded.preprocessing)   # or sample_data_for(loaded)
    engine = Engine(loaded, data)                   # owns every cache; thread-safe
    config = CompressionConfig().with_defaults(weight={"precision": "int8"}, activation={"precision": "int8"})
    result = engine.evaluate(config, latency="both")   # a Result: accuracy + CI, bytes, latency (marked)
    for config, result in explore.run("greedy", engine, max_drop=1.0): ...

Subpackages: ``loading`` (model files, data, layer inventory), ``compression`` (quantization and pruning
primitives, the plan of a configuration, the simulated model), ``measurement`` (memory, latency, real int8
kernels, roofline, Pareto frontiers, Result), ``engine`` (the Engine, incremental evaluation, exported reports),
``search`` (sensitivity, search strategies, sweeps). Each imports only those before it in that list.
"""

from __future__ import annotations

import importlib

# public name -> module that defines it
_EXPORTS = {
    "CompressionConfig": "qtradeoff.core.config",
    "ConfigError": "qtradeoff.core.config",
    "from_json": "qtradeoff.core.config",
    "to_json": "qtradeoff.core.config",
    "QtradeoffError": "qtradeoff.core.errors",
    "load_model": "qtradeoff.core.loading.model_io",
    "load_sample_model": "qtradeoff.core.loading.model_io",
    "sample_data_for": "qtradeoff.core.loading.model_io",
    "NeedsTrust": "qtradeoff.core.loading.model_io",
    "ModelLoadError": "qtradeoff.core.loading.model_io",
    "load_data": "qtradeoff.core.loading.data",
    "DataLoadError": "qtradeoff.core.loading.data",
    "Plan": "qtradeoff.core.compression.plan",
    "Result": "qtradeoff.core.measurement.result",
    "Progress": "qtradeoff.core.measurement.result",
    "Cancelled": "qtradeoff.core.measurement.result",
    "Frontier": "qtradeoff.core.measurement.pareto",
    "Engine": "qtradeoff.core.engine.engine",
    "EngineSpec": "qtradeoff.core.engine.engine",
    "config_document": "qtradeoff.core.engine.report",
    "explore": "qtradeoff.core.search.explore",
    "sensitivity": "qtradeoff.core.search.sensitivity",
    "sweep": "qtradeoff.core.search.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qtradeoff.core' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module.rsplit(".", 1)[-1] == name else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
