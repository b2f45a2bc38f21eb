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

.PHONY: setup run test bench gpu-prep clean

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

# What a lent GPU session carries for benchmarks/gpu_check.sh (device run with carry [".gpu"]): d3rlpy 2.8.1 and the
# pure-Python dependencies the GPU image lacks (wheels for its Python 3.12), and the shared d3rlpy_speed.py.
GPU_WHEELS := d3rlpy==2.8.1 structlog dataclasses-json "marshmallow<4" gymnasium==1.0.0 farama-notifications gym-notices
gpu-prep:
	mkdir -p .gpu
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu $(GPU_WHEELS)
	$(PYTHON) -m pip wheel --quiet --no-deps -w .gpu gym==0.26.2
	cp ../shared/bench/d3rlpy_speed.py .gpu/

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
