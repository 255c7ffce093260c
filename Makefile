# The README's two commands: `make demo` and `make test`. Each sets everything up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# `pip install` of $(1), and once more (with pip's output) if it fails.
pip_twice = $(PY) -m pip install --quiet --disable-pip-version-check $(1) || \
	{ echo 'pip failed: trying once more' >&2; $(PY) -m pip install --disable-pip-version-check $(1); }
export PAML_HOME ?= $(CURDIR)/.paml
export DAGSTER_HOME ?= $(PAML_HOME)/dagster
export GX_ANALYTICS_ENABLED := False
PORT ?= 3000
# `make test` runs the tests on every core the process may use (pytest-xdist; TEST_WORKERS=0: in this process).
TEST_WORKERS ?= auto

.PHONY: install demo test bench ui reproduce results clean

$(VENV)/.installed: pyproject.toml requirements.lock constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch alone first: an unpinned torch elsewhere would pull a multi-GB CUDA build.
	# Each pip call is tried twice (the second time with its output): on a new machine pip itself once
	# died in the middle of the install (a segfault in libpython, 2026-11-30), and a dropped connection
	# to the registry is as transient. A second failure fails the install.
	$(call pip_twice,torch==2.13.0)
	$(call pip_twice,-c constraints.txt -r requirements.lock)
	$(call pip_twice,--no-deps -e .)
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pipelines.cli demo --dataset taobao

test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

bench: install
	$(PY) -m benchmarks.data_steps
	$(PY) -m benchmarks.pipeline_steps --users 1000000 --shards 64
	$(PY) -m benchmarks.training --profile
	$(PY) -m benchmarks.memory_recall
	$(PY) -m benchmarks.scaling
	$(PY) -m benchmarks.threads
	$(PY) -m benchmarks.reference_fits
	$(PY) -m benchmarks.long_lists
	$(PY) -m benchmarks.startup
	$(PY) -m benchmarks.store_ops

# The paper's experiment on real data: PAML_DATA_DIR must hold ml-1m/ and bookcrossing/.
# Seeds 0-4 and a pinned thread count (PAML_THREADS for torch and polars, recorded in `runs`):
# the same numbers need the same count.
REPRODUCE_THREADS ?= 2
reproduce: install
	@test -n "$$PAML_DATA_DIR" || { echo "set PAML_DATA_DIR to the directory holding ml-1m/ and bookcrossing/"; exit 2; }
	PAML_THREADS=$(REPRODUCE_THREADS) $(PY) -m pipelines.cli reproduce --seeds 0 1 2 3 4 --threads $(REPRODUCE_THREADS)

# docs/results.md's tables from the DuckDB store of the last `make reproduce`.
results: install
	$(PY) -m pipelines.cli results

# make ui PORT=3001 for another port.
ui: install
	$(PY) -m pipelines.cli init
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/dg dev --host 127.0.0.1 --port $(PORT)

clean:
	rm -rf $(PAML_HOME)
