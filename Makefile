# Aqueduct: `make up` runs the product on one machine, `make test` runs every test.
# Both create the virtual environment (.venv) from the lock file when it is missing or stale.

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
STAMP := $(VENV)/.synced
export LITELLM_LOCAL_MODEL_COST_MAP := True
export UV_PYTHON := $(shell command -v $(PYTHON))

.DEFAULT_GOAL := help
.PHONY: help install test-deps up test test-fast screenshots bench lint format typecheck compose-check asyncapi clean

help: ## List what one can do
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(STAMP): $(UV) uv.lock pyproject.toml libs/pyproject.toml $(wildcard services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages
	@touch $(STAMP)

install: $(STAMP) ## Create or update the virtual environment from uv.lock

OIDC_DIR := services/auth/tests/oidc
HUB_DIR := services/auth/tests/jupyterhub
AGENTS_DIR := tests/agents
test-deps: $(STAMP) ## Install the test-only peers: oidc-provider, JupyterHub, Claude Code and Codex (pinned; needs npm)
	@if command -v npm >/dev/null 2>&1; then \
	  [ -d $(OIDC_DIR)/node_modules ] || $(OIDC_DIR)/install.sh; \
	  [ -x $(HUB_DIR)/.venv/bin/jupyterhub ] || PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(HUB_DIR)/install.sh; \
	  [ -x $(AGENTS_DIR)/node_modules/.bin/claude ] || $(AGENTS_DIR)/install.sh; \
	else echo "npm not found: the OIDC, JupyterHub and coding-agent tests will be skipped"; fi

up: $(STAMP) ## Run the whole product on embedded defaults (NATS, Valkey, SQLite, chDB)
	$(VENV)/bin/aqueduct up

test: $(STAMP) test-deps ## Run every test (unit, integration, end-to-end, browser)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: $(STAMP) test-deps ## Run the tests not marked slow
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

screenshots: $(STAMP) test-deps ## Refresh docs/screenshots/ from the browser tests
	AQUEDUCT_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest -m browser services/ui/tests

bench: $(STAMP) ## Run the benchmarks under bench/ and print their tables
	$(VENV)/bin/python bench/proxy.py
	$(VENV)/bin/python bench/accounting.py
	$(VENV)/bin/python bench/directory.py
	$(VENV)/bin/python bench/system.py

lint: $(STAMP) ## ruff (lint and format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs services

asyncapi: $(STAMP) ## Regenerate docs/asyncapi.yaml from the services' FastStream brokers
	$(VENV)/bin/python -m tools.asyncapi

format: $(STAMP) ## Format the code with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

compose-check: ## Validate docker-compose.yml (needs the docker client, not an engine)
	docker compose config --quiet

clean: ## Remove the virtual environments (keeps .aqueduct data)
	rm -rf $(VENV) $(TOOLS)
