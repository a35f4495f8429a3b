# Two commands for a new user: `make demo` and `make test`. Both reuse .venv while pyproject.toml is
# unchanged (the stamp files below); the first install takes several minutes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
# This machine keeps the CPU build of that torch in /opt/wheels.
TORCH_WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# Install the CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install $(TORCH_WHEELS) $(TORCH_PIN)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m hexserve.demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)
