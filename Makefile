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

# The main job on a small default: collect -> train -> report.
# 1. collect a single-agent (hopper-medium, from the shipped SAC policy) and a multi-agent (spread-random) dataset,
#    list the catalog and verify both files;
# 2. train the four single-agent and the four multi-agent algorithms on them, 2 seeds each, at a quick budget;
# 3. write the tables and learning curves to $(RUNS)/report and print the Markdown table.
OB := $(BIN)/offline-bench
run: setup
	$(OB) collect hopper-medium --steps 20000 --root $(DATA)
	$(OB) collect spread-random --steps 20000 --root $(DATA)
	$(OB) datasets list --root $(DATA)
	$(OB) datasets verify hopper-medium --root $(DATA)
	$(OB) datasets verify spread-random --root $(DATA)
	$(OB) sweep --algos td3bc,cql,bear,dbr --datasets hopper-medium --seeds 2 --budget quick --jobs 2 --root $(DATA) --runs $(RUNS)
	$(OB) sweep --algos ma-td3bc,ma-cql,ma-icq,omar --datasets spread-random --seeds 2 --budget quick --jobs 2 --root $(DATA) --runs $(RUNS)
	$(OB) report --runs $(RUNS) --format all --out $(RUNS)/report

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m pytest -q -m benchmark --benchmark-enable benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
