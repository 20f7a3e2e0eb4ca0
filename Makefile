# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first (CPU torch 2.13.0 when no
# torch is installed there, then this package with its extras).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean docs docs-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/vae.py --out out/vae.png

# the whole suite, then the unit tests again with torch's argument validation off: that is when distributions take
# their closed-form hot path (pyro_dgm/distributions/closed_forms.py), which must give the same results
test: $(VENV)/.installed
	$(PY) -m pytest
	$(PY) -m pytest --validate-args=off tests/distributions tests/losses tests/models tests/poutine tests/flows \
		tests/test_pyro_contract.py tests/pyro tests/pixyz_compat

# the HTML documentation in docs/_build/html: API pages from the docstrings, the tutorials executed with their outputs
# (a cell that raises fails the build; jupyter-cache reruns a notebook only when its code changed). `make docs` runs
# them at the size they are written for (about 2 minutes for the whole site from a clean clone on 2 CPU cores);
# `make docs-smoke` at smoke size (PYRO_DGM_SMOKE=1: a few training steps; each tutorial page then says so).
$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e ".[docs]"
	touch $@

SPHINX := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

docs: $(VENV)/.docs-installed
	PYRO_DGM_SMOKE=0 $(SPHINX)

docs-smoke: $(VENV)/.docs-installed
	PYRO_DGM_SMOKE=1 $(SPHINX)

clean:
	rm -rf $(VENV) out build *.egg-info docs/_build
