# lending_pipeline — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export LENDING_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
PII_KEY_FILE := $(CURDIR)/.secrets/pii_key
AUDIT_KEY_FILE := $(CURDIR)/.secrets/audit_key
API_TOKENS_FILE := $(CURDIR)/.secrets/api_tokens
DEMO_DAYS ?= 100
DEMO_PER_DAY ?= 1200
PROD_DIR ?= $(CURDIR)/.prod

.PHONY: help browser haproxy venv demo drift-demo generate materialize train dev serve audit-verify test bench lint format clean up down demo-prod

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project (done on demand by every target)

$(PII_KEY_FILE):
	@mkdir -p $(dir $@) && umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > $@
	@echo "created a local pseudonymisation key in $@ (set LENDING_PII_KEY to use your own)"

$(AUDIT_KEY_FILE):
	@mkdir -p $(dir $@) && umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_hex(32))" > $@
	@echo "created a local audit log key in $@ (set LENDING_AUDIT_KEY or LENDING_AUDIT_KEY_FILE to use your own)"

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml
	@mkdir -p $(DAGSTER_HOME)/.nux && cp deploy/dagster.local.yaml $@ && echo "seen: 1" > $(DAGSTER_HOME)/.nux/nux.yaml

WITH_KEY = LENDING_PII_KEY="$${LENDING_PII_KEY:-$$(cat $(PII_KEY_FILE))}" \
  LENDING_AUDIT_KEY_FILE="$${LENDING_AUDIT_KEY_FILE:-$(AUDIT_KEY_FILE)}"

generate: $(STAMP) ## write synthetic landing files (DEMO_DAYS x DEMO_PER_DAY applications)
	$(BIN)/lending-pipeline generate --days $(DEMO_DAYS) --per-day $(DEMO_PER_DAY)

materialize: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) $(DAGSTER_HOME)/dagster.yaml ## run the daily job for every landed partition
	$(WITH_KEY) $(BIN)/lending-pipeline materialize

demo: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) $(DAGSTER_HOME)/dagster.yaml ## the main job: generate data if missing, materialize the whole graph, train, gate, promote, print a summary
	@test -d $(LENDING_DATA_DIR)/landing || $(BIN)/lending-pipeline generate --days $(DEMO_DAYS) --per-day $(DEMO_PER_DAY)
	$(WITH_KEY) $(BIN)/lending-pipeline materialize
	$(WITH_KEY) $(BIN)/lending-pipeline train --allow-refusal

drift-demo: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) ## drift -> drift sensor -> retraining -> gated promotion, in .drift_demo/ (a few minutes)
	$(WITH_KEY) $(BIN)/lending-pipeline drift-demo --workdir $(CURDIR)/.drift_demo

train: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) $(DAGSTER_HOME)/dagster.yaml ## build the training set, train, evaluate against the gates, promote
	$(WITH_KEY) $(BIN)/lending-pipeline train

dev: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) $(DAGSTER_HOME)/dagster.yaml ## Dagster UI + daemon on 127.0.0.1:3000, docs and reports on :3002, MLflow UI on :5000, drift dashboard on :8000
	$(WITH_KEY) $(BIN)/python -m lending_pipeline.dev --port 3000

serve: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) haproxy ## serve the deployed champion on 127.0.0.1:3001 (blue/green slots 3101/3102)
	@test -s $${LENDING_API_TOKENS_FILE:-$(API_TOKENS_FILE)} || { echo "a scorer token for this machine (shown once; only its hash is kept):"; \
	  $(BIN)/lending-pipeline token --caller local --role scorer --file $${LENDING_API_TOKENS_FILE:-$(API_TOKENS_FILE)}; }
	@test -f $(LENDING_DATA_DIR)/serving/deployments.json || $(WITH_KEY) $(BIN)/lending-pipeline package
	LENDING_API_TOKENS_FILE="$${LENDING_API_TOKENS_FILE:-$(API_TOKENS_FILE)}" $(WITH_KEY) $(BIN)/lending-pipeline serve --port 3001

up: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) haproxy ## production profile: Dagster + MLflow on PostgreSQL, Celery workers on RabbitMQ, scoring, under supervisord (docs/deployment.md)
	@test -s $${LENDING_API_TOKENS_FILE:-$(API_TOKENS_FILE)} || { echo "a scorer token for this machine (shown once; only its hash is kept):"; \
	  $(BIN)/lending-pipeline token --caller local --role scorer --file $${LENDING_API_TOKENS_FILE:-$(API_TOKENS_FILE)}; }
	LENDING_API_TOKENS_FILE="$${LENDING_API_TOKENS_FILE:-$(API_TOKENS_FILE)}" $(WITH_KEY) $(BIN)/lending-pipeline up --root $(PROD_DIR)

down: $(STAMP) ## stop exactly what `make up` started
	$(BIN)/lending-pipeline down --root $(PROD_DIR)

demo-prod: $(STAMP) $(PII_KEY_FILE) $(AUDIT_KEY_FILE) ## the whole graph on the running production profile (after make up), with the demo's summary
	$(WITH_KEY) $(BIN)/lending-pipeline demo-prod --root $(PROD_DIR) --days $(DEMO_DAYS) --per-day $(DEMO_PER_DAY)

audit-verify: $(STAMP) $(AUDIT_KEY_FILE) ## check the audit log: its MAC chain and the head checkpoints (read-only)
	$(WITH_KEY) $(BIN)/lending-pipeline audit verify

browser: ## install Debian's chromium for the UI test when missing (best effort; the test skips without it)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium is not installed: the UI test will skip"

haproxy: ## install Debian's HAProxy (the scoring API's proxy) when missing (needs root)
	@command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq haproxy >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq haproxy >/dev/null 2>&1; }; }; } || \
	  echo "HAProxy is not installed (apt-get install haproxy): make serve and the serving tests need it"

test: $(STAMP) browser haproxy ## run the test suite
	$(BIN)/pytest -q

bench: $(STAMP) ## benchmarks: ingestion -> features, many small days vs a few big ones, training + evaluation, drift (100k/200k, 1M), drift dashboard, scoring API
	$(BIN)/python benchmarks/bench_ingestion.py
	$(BIN)/python benchmarks/bench_backfill.py --modes ranged
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_drift.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_serving.py

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check lending_pipeline lending_pipeline_tests benchmarks
	$(BIN)/ruff format --check lending_pipeline lending_pipeline_tests benchmarks

format: $(STAMP) ## format the code
	$(BIN)/ruff format lending_pipeline lending_pipeline_tests benchmarks
	$(BIN)/ruff check --fix lending_pipeline lending_pipeline_tests benchmarks

clean: ## remove generated data, the Dagster home and caches (keeps .venv and the key)
	rm -rf $(LENDING_DATA_DIR)/landing $(LENDING_DATA_DIR)/warehouse $(DAGSTER_HOME) .pytest_cache .drift_demo $(PROD_DIR)
