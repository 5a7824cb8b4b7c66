# learning-twins: the two quick-start commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test test-all lint-proto client-dist test-client-dist bench recovery clean

$(STAMP): pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	$(VENV)/bin/python -m twin_proto.codegen  # gRPC stubs into twin_proto/gen/ (never committed; regenerated on import when stale)
	touch $(STAMP)

setup: $(STAMP)  ## create .venv, install the project with its test extras, generate the gRPC stubs

demo: $(STAMP)  ## the main job on embedded defaults: simulate, fit, evaluate, figures
	$(VENV)/bin/twin demo --out runs/demo

test: $(STAMP)  ## the default test suite (slow tests excluded)
	$(VENV)/bin/python -m pytest -m "not slow" -q

test-all: $(STAMP)  ## every test, slow ones included
	$(VENV)/bin/python -m pytest -q

lint-proto: $(STAMP)  ## buf lint of proto/ (buf from npm: bash .ci/buf.sh; or BUF=path/to/buf)
	$(VENV)/bin/python -m twin_proto.codegen --deps build/proto-deps
	$${BUF:-$$(bash .ci/buf.sh)} lint

client-dist: $(STAMP)  ## the rig client wheel (clients/python: client + stubs, Python >= 3.9) into dist/
	$(VENV)/bin/pip wheel --quiet --disable-pip-version-check --no-deps clients/python -w dist/

test-client-dist: $(STAMP)  ## the rig client wheel in fresh Python 3.9 and 3.11 venvs with its oldest claimed dependencies (PyPI, Debian archive, ~3 min)
	$(VENV)/bin/python -m pytest -q -m slow tests/server/test_client_dist.py

bench: $(STAMP)  ## fit-throughput benchmark (writes bench/results/)
	$(VENV)/bin/python bench/fit_throughput.py

recovery: $(STAMP)  ## the committed rule-recovery table, ~3 h on 2 cores (writes experiments/results/)
	$(VENV)/bin/python experiments/recovery.py --families history --no-slow
	$(VENV)/bin/python experiments/recovery.py --families reinforce --no-slow --update --animals 250
	$(VENV)/bin/python experiments/recovery.py --families asymmetric --no-slow --update --animals 500 --lbfgs-rounds 12

clean:
	rm -rf runs .pytest_cache dist clients/python/build clients/python/*.egg-info
