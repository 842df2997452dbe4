# Two commands on a fresh machine: `make shell` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: shell test test-fast lint typecheck bench clean

# (Re)install when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,fast]'
	touch $(STAMP)

shell: $(STAMP)
	UDPDHT_NODE= $(PY) -m udpdht shell

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy udpdht shell
	$(VENV)/bin/mypy tests
	$(VENV)/bin/mypy bench

# The whole suite: style, types, then every test (3-5 minutes on two cores). Three workers on
# two cores: the tests of node processes mostly wait on real time, so a third worker fills the
# cores (4:35 on two workers, 3:42 on three, one run each); worksteal keeps a long test from
# finishing alone at the end.
PYTEST := $(PY) -m pytest -q -n 3 --dist worksteal
test: lint typecheck
	$(PYTEST)

# The tier for edits: every test not marked slow (about 1.5 minutes; README "Tests in tiers").
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/rpc.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
