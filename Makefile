# jst: one venv in .venv, everything runs from it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: dev install uninstall test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install with the test extras; rerun after pyproject.toml changes.
dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

# jst for real use: the dev install, registered with every browser found here (Native
# Messaging manifests, magnet:/.torrent handler), then the health table. doctor's exit
# status is shown, not fatal: a machine without a browser is still installed.
install: dev
	$(BIN)/jst install
	@echo
	-$(BIN)/jst doctor

uninstall:
	$(BIN)/jst uninstall

test: dev
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check jst jst_tests
	$(BIN)/ruff format --check jst jst_tests
	$(BIN)/mypy

bench: dev
	$(BIN)/python -m jst_tests.bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
