# jst: one venv in .venv, everything runs from it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: dev install uninstall browser players test e2e lint bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install with the test extras; rerun after pyproject.toml changes. The package's
# bytecode is compiled here: where PYTHONDONTWRITEBYTECODE is set (or the checkout is not
# writable by the user the browser runs) every host and daemon start would otherwise
# compile jst from source, ~20 ms of each cold start (issue 17).
dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q jst

# jst for real use: the dev install, registered with every browser found here (Native
# Messaging manifests, magnet:/.torrent handler), then the health table. doctor's exit
# status is shown, not fatal: a machine without a browser is still installed.
install: dev
	$(BIN)/jst install
	@echo
	-$(BIN)/jst doctor

uninstall:
	$(BIN)/jst uninstall

# Debian's Chromium for the end-to-end tests (never a downloaded browser). Needs root
# and apt; elsewhere install it yourself, or the browser tests are skipped (and say why).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not installed and cannot install it here: browser tests will skip"; fi; }

# Debian's ffmpeg/ffprobe: the real player of the streaming tests (and the maker of their
# test videos). Installed like Chromium; where it cannot be, those tests skip and say why.
players:
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; \
	  else echo "ffmpeg not installed and cannot install it here: player tests will skip"; fi; }

test: dev browser players
	$(BIN)/python -m pytest -q

# Only the real-browser tests (inside a private network namespace).
e2e: dev browser players
	$(BIN)/python -m pytest -q -s jst_tests/test_e2e.py

lint: dev
	$(BIN)/ruff check jst jst_tests
	$(BIN)/ruff format --check jst jst_tests
	$(BIN)/mypy

bench: dev
	$(BIN)/python -m jst_tests.bench

# The shared instrument (../shared/bench, read-only in CI) once in quick mode, as a smoke
# test: every scenario must complete; no speed is asserted. Runs from a temp copy.
SHARED_BENCH ?= ../shared/bench
bench-smoke: dev
	@test -f $(SHARED_BENCH)/daemon-bench.mjs || { echo "no shared instrument at $(SHARED_BENCH)"; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  cp -r $(SHARED_BENCH)/. "$$tmp" && \
	  (cd "$$tmp" && { npm ci --silent --no-audit --no-fund || npm install --silent --no-audit --no-fund; }) && \
	  node "$$tmp/daemon-bench.mjs" --cmd "$(abspath $(BIN))/jst-io-daemon" --quick --tmpdir "$$tmp"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
