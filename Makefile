# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environments it needs, installs plait into them and runs.

SHELL := /bin/bash
PYTHONS := $(shell .ci/pythons)
PRIMARY := $(firstword $(PYTHONS))
VENV := .venv
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check --no-input

.PHONY: demo test check lint format typecheck pytest pytest-others asyncio-suite bench clean

$(VENV)/.stamp: pyproject.toml
	@test -n "$(PRIMARY)" || { echo "no python3.11+ interpreter found" >&2; exit 1; }
	$(PRIMARY) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,bench,cluster]'
	touch $@

# A virtual environment per extra interpreter: .venv-3.12, .venv-3.13.
.venv-%/.stamp: pyproject.toml
	$(filter %python$*,$(PYTHONS)) -m venv .venv-$*
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) --upgrade pip
	.venv-$*/bin/python -m pip install $(PIP_FLAGS) -e '.[test,cluster]'
	touch $@

demo: $(VENV)/.stamp
	$(VENV)/bin/plait demo

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.stamp
	$(VENV)/bin/mypy

check: lint typecheck

format: $(VENV)/.stamp
	$(VENV)/bin/ruff format src tests benchmarks examples
	$(VENV)/bin/ruff check --fix src tests benchmarks examples

pytest: $(VENV)/.stamp
	$(PY) -m pytest --cov=plait --cov-branch --cov-report=term -p no:cacheprovider

OTHER_VERSIONS := $(foreach p,$(wordlist 2,9,$(PYTHONS)),$(patsubst python%,%,$(notdir $(p))))

# The other interpreters skip what runs whole programs rather than plait's API: the
# benchmark harness's smoke test (2.5 min), the examples, the docs' programs and the
# demo (they run on the primary interpreter), and measure no coverage (the primary
# one does): CI stays under 20 minutes on 2 cores.
ONCE_ONLY := test_benchmarks_smoke.py test_examples.py test_docs.py test_demo.py
pytest-others: $(foreach v,$(OTHER_VERSIONS),.venv-$(v)/.stamp)
	@for v in $(OTHER_VERSIONS); do \
	  echo "== pytest on python$$v"; \
	  .venv-$$v/bin/python -m pytest -q -p no:cacheprovider \
	    $(addprefix --ignore=tests/,$(ONCE_ONLY)) || exit 1; \
	done

# CPython's own asyncio test suite on plait's loop (issue 8), for every interpreter:
# tests/cpython_asyncio/run.py; the tests it skips are listed, with why, next to it.
asyncio-suite: $(VENV)/.stamp $(foreach v,$(OTHER_VERSIONS),.venv-$(v)/.stamp)
	$(PY) tests/cpython_asyncio/run.py
	@for v in $(OTHER_VERSIONS); do \
	  .venv-$$v/bin/python tests/cpython_asyncio/run.py || exit 1; \
	done

test: check pytest pytest-others asyncio-suite

bench: $(VENV)/.stamp
	$(PY) -m benchmarks --write docs/benchmarks.md

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache .coverage
