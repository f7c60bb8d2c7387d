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

# Debian packages the tests drive (a real Alertmanager; espeak-ng for `render --wav`); installed only when missing.
SYSTEM_PACKAGES := prometheus-alertmanager:prometheus-alertmanager espeak-ng:espeak-ng
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages the tests need:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

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
