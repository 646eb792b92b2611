PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINT_PATHS := opsllm tests benchmarks

.PHONY: install demo test lint bench clean

install: $(BIN)/python
	$(BIN)/pip install -e '.[dev]'

$(BIN)/python:
	$(PY) -m venv $(VENV)

demo: install
	$(BIN)/opsllm campaign run examples/campaigns/smoke.yaml --out runs/smoke

lint: install
	$(BIN)/ruff check $(LINT_PATHS)

test: lint
	$(BIN)/pytest -n 2 -q

bench: install
	$(BIN)/python benchmarks/twin_speed.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache runs out
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
