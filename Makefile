# Two entry points, each usable on a fresh machine (Python 3.11, package registries only):
#   make demo   create .venv, install dgl_mvs with its extras, run the main example on Cora
#   make test   reuse (or create) .venv and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dgl_mvs-installed

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[examples,notebooks,test]"
	$(PY) -c "import dgl_mvs, dgl_mvs._stack as s; print('dgl_mvs', dgl_mvs.__version__, 'installed:', s.stack_versions())"
	touch $(STAMP)

demo: $(STAMP)
	DGLBACKEND=pytorch $(PY) examples/demo.py

test: $(STAMP)
	DGLBACKEND=pytorch $(PY) -m pytest -q

bench: $(STAMP)
	DGLBACKEND=pytorch $(PY) benchmarks/bench_probabilities.py
	DGLBACKEND=pytorch $(PY) benchmarks/bench_sampler.py

clean:
	rm -rf $(VENV) build *.egg-info
