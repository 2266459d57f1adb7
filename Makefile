# `make demo` and `make test` bootstrap .venv from the pinned lock on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)
export DO_NOT_TRACK := 1
export RAY_AUTH_MODE := disabled

.PHONY: demo test lock bench clean

$(STAMP): requirements/lock.txt pyproject.toml
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/mixforge demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_passthrough.py

# Re-resolve the pinned direct dependencies (pyproject.toml) into the full lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[test]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^mixforge' > requirements/lock.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) data
