"""A long search keeps its memory: 1000 configurations on digits_cnn end within 10 % of the resident size after 50."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Run in a fresh process: the resident size of the test process carries every other test's allocations.
PROBE = """
import json, os, sys
from qtradeoff.core.runtime import tune_allocator
tune_allocator()
import torch
torch.set_num_threads(2)
from qtradeoff.core.engine.engine import Engine
from qtradeoff.core.loading.model_io import load_sample_model, sample_data_for
from qtradeoff.core.search import explore

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

loaded = load_sample_model("digits_cnn")
# 32 evaluation samples (not 359) keep the run short; the cache cap shrinks with them so that it still fills.
engine = Engine(loaded, sample_data_for(loaded, eval_size=32, calib_size=32), cache_bytes=3 << 20)
marks = {}
for i, _ in enumerate(explore.run("random", engine, budget=1000, seed=0), 1):
    if i in (50, 250, 500, 1000):
        marks[i] = rss()
print(json.dumps({"marks": marks, "cache": engine.evaluator.cache.bytes}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.timeout(400)
def test_a_1000_configuration_search_keeps_its_memory():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    marks = {int(k): v for k, v in figures["marks"].items()}
    mib = {k: round(v / 2**20, 1) for k, v in marks.items()}
    print(f"\n[memory] resident MiB after N configurations: {mib}; cut cache {figures['cache'] / 2**20:.1f} MiB")
    assert sorted(marks) == [50, 250, 500, 1000]
    assert marks[1000] <= 1.10 * marks[50]
