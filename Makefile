# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first (CPU torch 2.13.0 when no
# torch is installed there, then this package with its extras).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/vae_digits.py --out out/vae_digits.png

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out build *.egg-info
