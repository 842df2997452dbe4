# Two commands on a fresh machine: `make shell` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: shell test test-fast lint typecheck bench clean compiled pure test-compiled test-compiled-core

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

# The benchmarks' extra (kademlia, matplotlib), installed once per change of pyproject.toml.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/rpc.py

# The compiled build (README "A compiled build"; setup.py): the RPC layer, its codec and the
# ring's tables compiled by mypyc, in place beside their sources, where every command of the
# checkout finds them (about 40 s). `make pure` removes them; UDPDHT_PURE=1 ignores them.
# (The touch: each is up to date with its source now, also when none needed a rebuild.)
compiled: $(STAMP)
	$(PY) -m pip install --quiet 'setuptools>=77' wheel
	UDPDHT_COMPILE=1 $(PY) setup.py --quiet build_ext --inplace
	@touch udpdht/*.so
	@$(PY) -c 'import udpdht, setup; print("udpdht", udpdht.BUILD + ":", *setup.COMPILED)'

pure:
	rm -f udpdht/*.so udpdht/*.pyd
	rm -rf build

# Every test on the compiled build (about 4 minutes: run it after changing a compiled module;
# ruff and mypy read the sources, the same for both builds). CI runs the tests of the compiled
# modules on it (COMPILED_TESTS).
test-compiled: compiled
	$(PYTEST)

COMPILED_TESTS := tests/test_rpc.py tests/test_wire.py tests/test_routing.py tests/test_ids.py \
	tests/test_compiled.py tests/test_bench_rpc.py tests/test_store_loopback.py
test-compiled-core: compiled
	$(PYTEST) $(COMPILED_TESTS)

clean: pure
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
