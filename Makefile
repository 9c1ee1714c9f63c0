# Two commands do all set-up on a fresh machine with Python 3.11 and make:
#   make demo   -- the main job on embedded data
#   make test   -- ruff + the whole pytest suite, on the tested lower bound
#                  (constraints/lower.txt: Python 3.11, jax 0.10.2, flax 0.12.8)
# and one more checks the GPU image's versions (needs Python 3.12, e.g. pyenv's):
#   make test-compat -- pytest under constraints/gpu-image.txt (jax 0.11.2, flax 0.12.12)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2

# Python 3.12 for the compat venv: python3.12 if it runs, else pyenv's newest 3.12.
PYTHON_COMPAT ?= $(shell (python3.12 -c '' >/dev/null 2>&1 && echo python3.12) || \
	ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1)
CVENV := .venv-compat
CBIN := $(CVENV)/bin
CSTAMP := $(CVENV)/.installed-stamp

.PHONY: demo test test-compat wheelhouse lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml constraints/lower.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints/lower.txt -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python experiments/verify_theory.py --out results/verify_theory
	@if [ -f experiments/pose_eglpp.py ]; then $(BIN)/python experiments/pose_eglpp.py --out results/pose_eglpp; fi

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

$(CBIN)/python:
	@test -n "$(PYTHON_COMPAT)" || { echo "test-compat needs Python 3.12 (python3.12 or pyenv's 3.12); set PYTHON_COMPAT=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON_COMPAT) -m venv $(CVENV)
	$(CBIN)/python -m pip install --quiet --upgrade pip

$(CSTAMP): pyproject.toml constraints/gpu-image.txt | $(CBIN)/python
	$(CBIN)/python -m pip install --quiet -c constraints/gpu-image.txt -e ".[test]"
	$(CBIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(CSTAMP)

test-compat: $(CSTAMP)
	$(CBIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(COMPAT_TESTS)

# Pure-Python wheels for a machine that has jax and flax but no package registry, such as the
# GPU image (docs/pose.md#gpu-install): egltheory itself and vega_datasets.
wheelhouse: $(STAMP)
	rm -rf wheelhouse
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir wheelhouse .
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --dest wheelhouse \
		"vega_datasets==0.9.0"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(CVENV) wheelhouse results .pytest_cache .ruff_cache
