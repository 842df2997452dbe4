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

# The whole suite: style, types, then every test (on two workers: 3-6 minutes).
test: lint typecheck
	$(PY) -m pytest -q -n 2

# The tier for edits: every test not marked slow (about 1.5 minutes; README "Tests in tiers").
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/rpc.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
