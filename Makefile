# jst: one venv in .venv, everything runs from it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install with the test extras; rerun after pyproject.toml changes.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check jst jst_tests
	$(BIN)/ruff format --check jst jst_tests
	$(BIN)/mypy

bench: install
	$(BIN)/python -m jst_tests.bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
