# One command per job. `make demo` and `make test` set everything up first (idempotent).
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fast check lint types fmt docs bench

setup:
	@bash scripts/setup

demo: setup
	@bash scripts/demo

test: setup
	@bash scripts/test

# The edit loop: the unit layer (no slow, PostgreSQL or browser tests), on every core; see docs/architecture.md, Tests.
test-fast: setup
	@bash scripts/test -m "not slow and not postgres and not browser"

lint:
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

types:
	$(BIN)/mypy

fmt:
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

docs: setup
	$(BIN)/charter docs reference --output docs/charter-reference.md

check: setup lint types test
