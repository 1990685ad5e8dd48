# mnist-codec: every command the README names is a target here. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The service's command: the same argv as the Dockerfile's CMD (tests/test_packaging.py checks it).
SERVE_ARGS := app.main:app --http app.service.protocol:LimitedHttpToolsProtocol --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 10 --no-access-log

.DEFAULT_GOAL := help
.PHONY: help install serve test lint test-tools train data soak slow-clients bench clean

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

lint: install ## ruff (lint and format check), mypy, and the import contracts (import-linter)
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: test-tools lint ## install what the tests need, lint, then the whole test suite
	$(BIN)/python -m pytest

# Outside CI a machine without root may skip the browser and proxy tests; in CI (CI=true) they must run.
test-tools: ## install Debian's chromium, chromium-driver (demo-page test) and nginx (proxy test); root or sudo
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -x /usr/sbin/nginx ]; then echo "test tools installed"; \
	else SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); { $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nginx-light; } || \
	  { [ -z "$$CI" ] && echo "warning: could not install chromium/nginx: the browser and proxy tests will skip"; }; fi

data: install ## fetch and verify MNIST under data/
	$(BIN)/python -m app.training.data --root data

train: install ## retrain the reference model into model_weights/ (about 3 minutes on 2 cores)
	$(BIN)/python -m app.training.train

soak: install ## 20,000 mixed requests at concurrency 64, beside 600 slow uploads, against a real server; prints status counts, latency, RSS
	$(BIN)/python -m bench.soak

slow-clients: install ## 600 trickling uploads for 20 s, then 5,000 idle connections, beside a normal client; prints its success and p99
	$(BIN)/python -m bench.slow_clients

bench: install ## service vs do-nothing floor (wrk if installed), batch rates, start-up; writes BENCHMARKS.md
	$(BIN)/python -m bench.bench

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
