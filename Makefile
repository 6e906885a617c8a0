# The two commands of the README. Each sets up everything itself on a fresh machine:
#   make run   - the main job on the embedded default data
#   make test  - the test suite (what CI runs)
# The virtual environment is built from the pinned lock file and rebuilt when it or setup.py changes.

PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REF_STAMP := $(VENV)/.installed-reference
# The test suite's reference implementations (timm on CPU PyTorch): the CPU wheel ships on this machine kind.
TORCH_WHEEL ?= $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-*.whl)

DATA_DIR ?= data/tfds
WORKDIR ?= workdirs/vit_fashion_mnist
RUN_CONFIG ?= experiments/vit_fashion_mnist.py:variant=r_vit_m

DATA_STAMP := $(DATA_DIR)/fashion_mnist_local/1.0.0/dataset_info.json

.PHONY: run test venv data bench clean-venv

$(STAMP): requirements.lock setup.py Makefile
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Test-only: timm on CPU PyTorch, the reference implementation the importer tests compare against.
$(REF_STAMP): $(STAMP) requirements-reference.lock
	@if [ -n "$(TORCH_WHEEL)" ]; then \
	  $(PY) -m pip install -q --no-deps $(TORCH_WHEEL) && \
	  $(PY) -m pip install -q --no-deps -r requirements-reference.lock; \
	else echo "note: no CPU torch wheel at /opt/wheels; tests against timm will be skipped"; fi
	touch $@

venv: $(STAMP)

# The embedded default data: Debian's dataset-fashion-mnist (fetched with apt-get download, no install), prepared
# as the tfds dataset fashion_mnist_local. Needed by `run`, and by the tests that check the real files.
$(DATA_STAMP): $(STAMP)
	$(PY) -m vit_video.data.prepare fashion_mnist_local --data_dir $(DATA_DIR)

data: $(DATA_STAMP)

# Prepares the offline Fashion-MNIST (once; from Debian's dataset-fashion-mnist), then trains and evaluates.
# Re-running resumes from the workdir's newest checkpoint (a finished run just prints its result again).
run: $(DATA_STAMP)
	$(PY) -m vit_video.main --config=$(RUN_CONFIG) --workdir=$(WORKDIR) --config.dataset.data_dir=$(DATA_DIR)

test: $(REF_STAMP) $(DATA_STAMP)
	$(PY) -m pytest -q tests

bench: $(DATA_STAMP)
	$(PY) benchmarks/models.py
	$(PY) benchmarks/input_pipeline.py --data_dir $(DATA_DIR) --model_variant vit_s4 --batch_size 256

clean-venv:
	rm -rf $(VENV)
