# Every target creates .venv on first use; nothing needs to be installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench clean

$(BIN)/plughost: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $@

serve: $(BIN)/plughost
	$(BIN)/plughost serve

lint: $(BIN)/plughost
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy --strict src

test: lint /usr/bin/chromium /usr/bin/bwrap
	$(BIN)/pytest

# The docs page test drives Debian's Chromium; a fresh machine is given it (as root).
/usr/bin/chromium:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# The sandbox placement is built on bubblewrap; its tests run, never skip, on a fresh machine.
/usr/bin/bwrap:
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null

bench: $(BIN)/plughost
	$(BIN)/pip install --quiet -e '.[test,ray,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
