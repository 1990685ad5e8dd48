# mnist-codec: every command the README names is a target here. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The service's command: the same argv as the Dockerfile's CMD (tests/test_packaging.py checks it).
SERVE_ARGS := app.main:app --http app.service.protocol:LimitedHttpToolsProtocol --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 10 --no-access-log

.DEFAULT_GOAL := help
# Every install takes its versions from here (make lock); the Dockerfile and CI too.
LOCK := requirements.lock
# pip applies the machine's configured constraints (here: torch <= the release on local disk) at install
# time, but pip-compile does not read them: pass them on, so that the lock installs where it was made.
PIP_CONSTRAINTS := $(PIP_CONSTRAINT) $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global.constraint='\(.*\)'$$/\1/p")

.PHONY: help install lock serve test lint test-tools image-test image-test-gpu gpu-check train data soak slow-clients bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## create .venv and install the service with its dev tools, at the lock's versions

lock: install ## re-resolve requirements.lock from pyproject.toml (pip-compile, every extra), then make install
	$(BIN)/pip-compile --quiet --all-extras --strip-extras --allow-unsafe --build-deps-for wheel \
	  --no-emit-index-url --no-emit-find-links $(addprefix -c ,$(PIP_CONSTRAINTS)) -o $(LOCK) pyproject.toml
	$(MAKE) install

serve: install ## start the service on port 8000 with the committed weights
	$(BIN)/uvicorn $(SERVE_ARGS)

lint: install ## ruff (lint and format check), mypy, and the import contracts (import-linter)
	$(BIN)/ruff check app tests bench deploy
	$(BIN)/ruff format --check app tests bench deploy
	$(BIN)/mypy
	$(BIN)/lint-imports

test: test-tools lint ## install what the tests need, lint, the whole test suite, then the CPU image built and run
	$(BIN)/python -m pytest
	$(BIN)/python deploy/image_test.py $(if $(CI),,--skip-without-engine)

# Outside CI a machine without root may skip the browser, proxy and image tests; in CI (CI=true) they must run.
test-tools: ## install Debian's chromium, chromium-driver (demo page), nginx (proxy), podman, runc, debootstrap (image); root or sudo
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && [ -x /usr/sbin/nginx ] && \
	  [ -x /usr/bin/podman ] && [ -x /usr/sbin/runc ] && [ -x /usr/sbin/debootstrap ]; then echo "test tools installed"; \
	else SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); { $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver nginx-light \
	    podman runc debootstrap; } || \
	  { [ -z "$$CI" ] && echo "warning: could not install the test tools: the browser, proxy and image tests will skip"; }; fi

image-test: install ## build the CPU image (docker or podman), run it, check it against the service here (about 1-4 min)
	$(BIN)/python deploy/image_test.py

image-test-gpu: install ## the same for the GPU image (CUDA torch: gigabytes to fetch; not in CI)
	$(BIN)/python deploy/image_test.py --target gpu

gpu-check: install ## on a CUDA machine: the CUDA tests (every model, micro-batching, bytes = the CPU's), then make bench
	MNIST_CODEC_REQUIRE_CUDA=1 $(BIN)/python -m pytest tests/test_cuda.py
	$(BIN)/python -m pytest tests/test_effort_api.py -k cuda
	$(MAKE) bench

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .image-test
