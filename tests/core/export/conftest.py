"""The export tests' shared fixture: one engine per sample model, built on first use, per test module."""

import pytest

from qtradeoff.core import Engine, load_sample_model, sample_data_for


@pytest.fixture(scope="module")
def engines():
    cache = {}

    def get(name):
        if name not in cache:
            loaded = load_sample_model(name)
            cache[name] = Engine(loaded, sample_data_for(loaded))
        return cache[name]

    return get
