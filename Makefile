# Two commands for a newcomer (see README):
#   make demo   set up .venv and run the main job
#   make test   set up .venv and run the test suite
#
# TORCH_SPEC picks the torch build. The default is the CPU build this project's
# machines carry on disk; a GPU user who already has a CUDA torch in .venv keeps
# it (setup never reinstalls an importable torch), or passes TORCH_SPEC=torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup demo test plan clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"

plan: setup
	$(VENV)/bin/lmcore plan

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf lmcore-store models mlruns-lmcore .prefect-home demo-run
