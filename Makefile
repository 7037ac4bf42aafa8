# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench clean settings-doc

$(VENV)/.run-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.test-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(VENV)/.run-installed $@

run: $(VENV)/.run-installed          ## the whole system on embedded services
	$(BIN)/smsrx dev

lint: $(VENV)/.test-installed     ## ruff, mypy and the import contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint                           ## lint, type-check, import contracts and the full test suite
	$(BIN)/pytest

bench: $(VENV)/.run-installed          ## every benchmark; options: make bench ARGS='--quick'
	$(BIN)/python bench/run.py $(ARGS)

settings-doc: $(VENV)/.run-installed   ## rewrite README.md's table of settings from smsrx/settings.py
	$(BIN)/python -m smsrx.settings README.md

clean:
	rm -rf $(VENV) .smsrx .pytest_cache .mypy_cache .ruff_cache
