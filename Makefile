# robustlab: `make demo` sets up and runs the quickstart job, `make test` sets up and runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?= -m "not slow" --durations=15

.PHONY: setup demo test lint bench clean

$(BIN)/robustlab: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test,dev,report,bench,docs]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps torchattacks==3.5.1
	# the reference AutoAttack (commit a392200, MIT): a test/bench dependency, never imported by robustlab
	# (only where ../shared is present: the library and the demo never need it)
	ref=$${ROBUSTLAB_SHARED:-../shared}/reference/autoattack-a392200.tar.gz; \
	  if [ -f "$$ref" ]; then $(BIN)/pip install -q --disable-pip-version-check --no-deps "$$ref"; fi
	touch $(BIN)/robustlab

setup: $(BIN)/robustlab

demo: setup
	$(BIN)/robustlab demo --run-dir runs/quickstart

test: setup
	bash scripts/browser-setup.sh || true
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check robustlab tests bench
	$(BIN)/ruff format --check robustlab tests bench

bench: setup
	ROBUSTLAB_DATA=$${ROBUSTLAB_DATA:-$(CURDIR)/../shared/data} $(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
