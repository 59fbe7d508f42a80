# Two commands: `make run` (the GUI on the bundled sample) and `make test` (the whole suite, headless).
# Both create .venv and install on first use; later runs skip installation unless the dependencies changed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench samples lint schema clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/qtradeoff

test: $(STAMP)
	$(VENV)/bin/lint-imports
	# two workers, one test file each at a time (module fixtures stay whole): most tests wait on child processes
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

samples: $(STAMP)
	$(PY) sample_models/train.py

# The shipped JSON schema is generated from the parser's field tables; a test fails when it is stale.
schema: $(STAMP)
	$(PY) -m qtradeoff.core.config --schema > resources/config.schema.json

lint: $(STAMP)
	$(VENV)/bin/ruff check qtradeoff tests benchmarks sample_models

clean:
	rm -rf $(VENV) build *.egg-info
