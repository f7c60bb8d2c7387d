# alert2voice: `make run` starts the simulator and the service; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check-config system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the end-to-end tests drive; installed only when missing.
system-deps:
	@command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus-alertmanager for the end-to-end tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager; }

test: $(STAMP) system-deps
	$(BIN)/ruff check alert2voice tests
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check alert2voice tests

check-config: $(STAMP)
	$(BIN)/alert2voice check-config config.example.yaml

run: $(STAMP)
	./scripts/run.sh

clean:
	rm -rf $(VENV) .pytest_cache alert2voice.db*
