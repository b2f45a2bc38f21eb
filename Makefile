# Two commands do everything: `make run` (the main job on a small default) and `make test`.
# Both create the virtual environment and install the package on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# This project's machines take a CPU build of torch from a local file when it is pinned exactly;
# the package itself leaves torch unpinned so users can choose their build.
TORCH  ?= torch==2.13.0
DATA   ?= datasets
RUNS   ?= runs

.PHONY: setup run test bench clean

setup: $(BIN)/.installed

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $@

# The main job on a small default: collect small datasets for one single-agent and one multi-agent task,
# then list and verify them.
run: setup
	$(BIN)/offline-bench collect hopper-random --steps 5000 --root $(DATA)
	$(BIN)/offline-bench collect spread-random --steps 5000 --root $(DATA)
	$(BIN)/offline-bench datasets list --root $(DATA)
	$(BIN)/offline-bench datasets verify hopper-random --root $(DATA)
	$(BIN)/offline-bench datasets verify spread-random --root $(DATA)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pytest -q -m benchmark --benchmark-enable benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
