# The two entry points of the README: `make run` and `make test`.
# Both set everything up on a fresh machine; stamps keep repeated runs fast.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
STAMPS := $(TOOLS)/stamps

# Short names for the two parameters everyone sets.
MODEL ?=
IMAGE ?=

# Every pipeline parameter given as NAME=value on the make command line reaches modelcar as the
# environment variable of the same name (CONTRACT.md): make puts command-line variables into
# the recipes' environment by itself. (Exporting them all globally would also hand an empty
# REGISTRY_AUTH_FILE to the test registry, which reads REGISTRY_* variables as its config.)

# Test-only tools: Debian packages for the registry and image readers, olah in its own venv,
# the Tekton linter from npm.
APT_PACKAGES := docker-registry skopeo umoci busybox-static git git-lfs
TORCH_VERSION := 2.13.0

.PHONY: run test bench lint format install install-test clean help

help:
	@echo "make run MODEL=<hub id or local dir> [IMAGE=<ref>] [NAME=value ...]"
	@echo "make test"

$(STAMPS):
	mkdir -p $(STAMPS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

$(STAMPS)/install: pyproject.toml $(BIN)/python | $(STAMPS)
	$(BIN)/pip install --quiet -e .
	touch $@

install: $(STAMPS)/install

run: install
	@$(BIN)/modelcar run \
	  $(if $(MODEL),--model "$(MODEL)") \
	  $(if $(IMAGE),--image "$(IMAGE)")

# torch first: the CPU wheel lies on disk; otherwise llmcompressor pulls a CUDA build.
$(STAMPS)/install-test: pyproject.toml $(BIN)/python | $(STAMPS)
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[test,compress]"
	touch $(STAMPS)/install
	touch $@

$(STAMPS)/apt: | $(STAMPS)
	./scripts/install-system-deps.sh $(APT_PACKAGES)
	touch $@

$(STAMPS)/olah: | $(STAMPS)
	$(PYTHON) -m venv $(TOOLS)/olah-venv
	$(TOOLS)/olah-venv/bin/pip install --quiet "olah==0.5.4"
	touch $@

# olot: a peer for the build-push benchmark and interop test, in a venv of its own.
$(STAMPS)/olot: | $(STAMPS)
	$(PYTHON) -m venv $(TOOLS)/olot-venv
	$(TOOLS)/olot-venv/bin/pip install --quiet "olot==1.2.1"
	touch $@

$(STAMPS)/tekton-lint: | $(STAMPS)
	mkdir -p $(TOOLS)/node
	cd $(TOOLS)/node && npm install --silent --no-audit --no-fund "@ibm/tekton-lint@^1"
	touch $@

install-test: $(STAMPS)/install-test $(STAMPS)/apt $(STAMPS)/olah $(STAMPS)/olot $(STAMPS)/tekton-lint

test: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The build-push benchmark against olot + skopeo and the floor (not part of `make test`).
BENCH_ARGS ?= --size-gib 1 --shards 2
bench: install-test
	$(BIN)/python bench/build_push.py $(BENCH_ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install-test
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info src/*.egg-info
