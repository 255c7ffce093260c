# The README's two commands: `make demo` and `make test`. Each sets everything up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
export PAML_HOME ?= $(CURDIR)/.paml
export DAGSTER_HOME ?= $(PAML_HOME)/dagster
export GX_ANALYTICS_ENABLED := False

.PHONY: install demo test bench ui reproduce clean

$(VENV)/.installed: pyproject.toml requirements.lock constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch alone first: an unpinned torch elsewhere would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m pipelines.cli demo --dataset taobao

test: install
	$(PY) -m pytest

bench: install
	$(PY) -m benchmarks.data_steps
	$(PY) -m benchmarks.training --profile
	$(PY) -m benchmarks.memory_recall
	$(PY) -m benchmarks.scaling

# The paper's experiment on real data: PAML_DATA_DIR must hold ml-1m/ and bookcrossing/.
reproduce: install
	@test -n "$$PAML_DATA_DIR" || { echo "set PAML_DATA_DIR to the directory holding ml-1m/ and bookcrossing/"; exit 2; }
	$(PY) -m pipelines.cli reproduce

ui: install
	$(PY) -c "from pipelines.instance import ensure_dagster_home; ensure_dagster_home()"
	$(VENV)/bin/dagster dev -h 127.0.0.1

clean:
	rm -rf $(PAML_HOME)
