# mnist-codec: every command the README names is a target here. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The service's command: the same argv as the Dockerfile's CMD (tests/test_packaging.py checks it).
SERVE_ARGS := app.main:app --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 10 --no-access-log

.DEFAULT_GOAL := help
.PHONY: help install serve test lint test-tools train data clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv and install the service with its dev tools

serve: install ## start the service on port 8000 with the committed weights
	$(BIN)/uvicorn $(SERVE_ARGS)

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check app tests
	$(BIN)/ruff format --check app tests
	$(BIN)/mypy

test: lint ## lint, then the whole test suite
	$(BIN)/python -m pytest

test-tools: ## install Debian's chromium, chromium-driver (demo-page test) and nginx (proxy test); root or sudo
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -x /usr/sbin/nginx ]; then echo "test tools installed"; \
	else SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nginx-light; fi

data: install ## fetch and verify MNIST under data/
	$(BIN)/python -m app.data --root data

train: install ## retrain the reference model into model_weights/ (about 3 minutes on 2 cores)
	$(BIN)/python -m app.train

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
