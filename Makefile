# The two commands of the README. Each sets up everything itself on a fresh machine:
#   make run   - the main job on the embedded default data
#   make test  - the test suite (what CI runs)
# The virtual environment is built from the pinned lock file and rebuilt when it or setup.py changes.

PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The test suite's reference implementations (timm on CPU PyTorch): the CPU wheel ships on this machine kind.
TORCH_WHEEL ?= $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-*.whl)

.PHONY: run test venv bench clean-venv

$(STAMP): requirements.lock requirements-reference.lock setup.py Makefile
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@if [ -n "$(TORCH_WHEEL)" ]; then \
	  $(PY) -m pip install -q --no-deps $(TORCH_WHEEL) && \
	  $(PY) -m pip install -q --no-deps -r requirements-reference.lock; \
	else echo "note: no CPU torch wheel at /opt/wheels; tests against timm will be skipped"; fi
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m vit_video.demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) benchmarks/models.py

clean-venv:
	rm -rf $(VENV)
