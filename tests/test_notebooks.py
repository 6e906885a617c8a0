"""Every notebook in colabs/ runs headless with small settings, so a notebook that breaks fails CI, and opens on
Colab as it is.

Each notebook has one cell tagged "parameters"; the harness inserts a cell after it that overrides those
values (the papermill convention), then executes the notebook with the repository's Python kernel. Before it, each
notebook's first markdown line is its "Open in Colab" badge and its first code cell installs the repository on
Colab (and does nothing elsewhere); the badges, the README's links and that cell's clone all derive from `url` in
setup.py.
"""
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Callable

import nbclient
import nbformat
import pytest

from tests.xla_flags import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({})"


def github_url() -> str:
  """setup.py's `url`, the one place the repository's GitHub location is declared."""
  match = re.search(r'\burl="(https://github\.com/[\w.-]+/[\w.-]+)"', open(os.path.join(ROOT, "setup.py")).read())
  assert match, "setup.py's setup() needs url=\"https://github.com/OWNER/REPO\""
  return match.group(1)


def colab_url(path: str) -> str:
  """The link that opens notebook `path` (of this checkout) on Colab, from GitHub's main branch."""
  repo = github_url().removeprefix("https://github.com/")
  return f"https://colab.research.google.com/github/{repo}/blob/main/{os.path.relpath(path, ROOT)}"


def setup_cell(nb) -> str:
  """The notebook's first code cell: the Colab set-up."""
  return next(c.source for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="session")
def synthetic_results_csv(tmp_path_factory) -> str:
  """A small sweep results.csv (families of 3, 2 and 2 members with overlapping compute; 2 datasets, 2 shots)."""
  from vit_video.studies import vit_vs_resnet_report
  datasets, shots = ["ds_a", "ds_b"], [1, 5]
  members = {"vit": (2.0, 20.0, 200.0), "bit": (5.0, 500.0), "hybrid": (3.0, 60.0)}
  rows = []
  for f, (family, gflops) in enumerate(members.items()):
    for i, gflop in enumerate(gflops):
      row = {"member": f"{family}_{i}", "family": family, "model": f"{family} toy {i}", "params": 1000 * (i + 1),
             "epochs": 1.0, "pretrain_steps": 10 * (i + 1), "pretrain_gflop": gflop,
             "pretrain_top1": 0.5 + 0.1 * i}
      for d, ds in enumerate(datasets):
        row[f"finetune_{ds}"] = 0.4 + 0.1 * i + 0.02 * f + 0.01 * d
        for k in shots:
          row[f"fewshot{k}_{ds}"] = 0.2 + 0.05 * i + 0.03 * f + 0.01 * k
      rows.append(vit_vs_resnet_report.add_averages(row, datasets, shots))
  path = str(tmp_path_factory.mktemp("sweep") / "results.csv")
  vit_vs_resnet_report.write_csv(path, rows, datasets, shots)
  return path


@pytest.fixture(scope="session")
def synthetic_video_results_csv(tmp_path_factory) -> str:
  """A video sweep results.csv of three made-up models."""
  from vit_video.studies import video_comparison
  from vit_video.train.run_folder import RunFolder
  rows = [{"model": name, "model_name": name, "frames": 16, "params": 1000 * (i + 1), "gflop_per_clip": 0.1 * (i + 1),
           "train_clips_per_s": 100.0 / (i + 1), "motion_clip_top1": 0.1 + 0.3 * i, "motion_video_top1": 0.1 + 0.3 * i,
           "object_clip_top1": 0.8, "object_video_top1": 0.82} for i, name in enumerate(("single_frame", "c3d", "lrcn"))]
  folder = RunFolder(tmp_path_factory.mktemp("video_sweep"))
  video_comparison.write_report(folder, rows, labels=("motion", "object"), title="Made-up video models")
  return str(folder / "results.csv")


def small_settings(name: str, fixture: Callable[[str], str], workdir: str) -> dict:
  """The overrides of notebook `name`; `fixture(fixture_name)` gives a fixture's value (built only when used)."""
  settings = {
      "train_quickstart": lambda: {"ROOT": ROOT, "DATA_DIR": fixture("tiny_fmnist"), "WORKDIR": workdir,
                                   "VARIANT": "vit_t4", "TOTAL_STEPS": 6},
      "vit_vs_resnet": lambda: {"ROOT": ROOT, "RESULTS_CSV": fixture("synthetic_results_csv")},
      "video_classics": lambda: {"ROOT": ROOT, "DATA_DIR": fixture("tiny_moving_fmnist"), "TINY": True,
                                 "RESULTS_CSV": fixture("synthetic_video_results_csv"), "MODEL": "single_frame",
                                 "WORKDIR": workdir, "TRAIN_STEPS": 4},
      "vivit_and_swin": lambda: {"ROOT": ROOT, "DATA_DIR": fixture("tiny_moving_fmnist"), "TINY": True,
                                 "RESULTS_CSV": fixture("synthetic_video_results_csv"), "WORKDIR": workdir,
                                 "MODEL": "vivit_st", "FACTORISED": "vivit_fsa", "TRAIN_STEPS": 3},
      "detr_and_convnext": lambda: {"ROOT": ROOT, "DATA_DIR": fixture("tiny_scenes"), "CONFIG_ARG": "tiny",
                                    "WORKDIR": workdir, "OVERRIDES": {"total_steps": 2}, "NUM_IMAGES": 2,
                                    "SCORE_THRESHOLD": 0.0, "CONVNEXT_CSV": os.path.join(
                                        ROOT, "experiments", "results", "convnext_vs_swin_quick", "results.csv")},
      "fourier_features": lambda: {"ROOT": ROOT, "SIZE": 10, "STEPS": 3,
                                   "MODEL": {"depth": 2, "width": 8, "num_features": 4},
                                   "MEMBERS": ["none", "gaussian_10"], "RESULTS_DIR": os.path.join(
                                       ROOT, "experiments", "results", "fourier_features_cpu")},
      "long_range": lambda: {"ROOT": ROOT, "MODELS": ("lstm",), "STEPS": 4, "TINY": True, "RESULTS_DIR": os.path.join(
          ROOT, "experiments", "results", "long_range_cpu")},
      "vqa": lambda: {"ROOT": ROOT, "NUM_QUESTIONS": 3, "RESULTS_DIR": os.path.join(
          ROOT, "experiments", "results", "vqa_cpu")},
      "captioning": lambda: {"ROOT": ROOT, "DATA_DIR": fixture("tiny_captions"), "CONFIG_ARG": "tiny",
                             "WORKDIR": workdir, "NUM_SCENES": 2},
      "visualise": lambda: {"ROOT": ROOT, "DATA_DIR": fixture("tiny_moving_fmnist"),
                            "IMAGE_DATA_DIR": fixture("tiny_fmnist"), "CONFIG_ARG": "tiny", "WORKDIR": workdir,
                            "OVERRIDES": {
                                "examples": 2, "ig_steps": 2, "activation_max.classes": (0,),
                                "activation_max.steps": 2, "vit_images": 2},
                            "RESULTS_DIR": os.path.join(ROOT, "experiments", "results", "visualise_cpu")},
  }
  return settings[name]()


def test_every_notebook_has_settings():
  names = [os.path.splitext(os.path.basename(p))[0] for p in NOTEBOOKS]
  assert {"train_quickstart", "vit_vs_resnet", "video_classics", "vivit_and_swin", "detr_and_convnext",
          "fourier_features", "long_range", "vqa", "captioning"} <= set(names)
  for name in names:
    small_settings(name, lambda fixture_name: fixture_name, "w")  # KeyError for a notebook without settings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p))
def test_notebook_opens_on_colab(path):
  nb = nbformat.read(path, as_version=4)
  assert nb.cells[0].cell_type == "markdown"
  assert nb.cells[0].source.splitlines()[0] == BADGE.format(colab_url(path))
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert "parameters" in code[1].metadata.get("tags", []), "the Colab set-up cell comes first, then the parameters"
  first_setup = setup_cell(nbformat.read(NOTEBOOKS[0], as_version=4))
  assert code[0].source == first_setup, f"{path}: its first code cell differs from {NOTEBOOKS[0]}'s Colab set-up"


def test_readme_links_the_notebooks_on_colab():
  readme = open(os.path.join(ROOT, "README.md")).read()
  section = readme[readme.index("\n## Notebooks\n"):]
  section = section[:section.index("\n## ", 1)]
  links = set(re.findall(r"https://colab\.research\.google\.com/github/[^\s)>]+", readme))
  assert links == set(map(colab_url, NOTEBOOKS)), links
  for path in NOTEBOOKS:
    assert colab_url(path) in section, f"README's Notebooks section lacks {path}'s Colab link"


@pytest.mark.parametrize("plugin", ["", "cuda12", "tpu"])
def test_colab_setup_cell_clones_and_installs_on_colab_only(plugin, monkeypatch):
  """The set-up cell, run as if on Colab (no command really runs): it clones setup.py's url, installs the clone with
  extras that setup.py declares, and imports from it; off Colab it runs nothing."""
  source = setup_cell(nbformat.read(NOTEBOOKS[0], as_version=4))
  commands = []
  monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append((command, kwargs)))
  monkeypatch.setattr(sys, "path", list(sys.path))
  monkeypatch.delitem(sys.modules, "google.colab", raising=False)
  off_colab = {}
  exec(source, off_colab)  # noqa: S102
  assert commands == [] and off_colab["ROOT"] == ".."

  monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
  monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi" if plugin == "cuda12" else None)
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: object() if name == "libtpu" and plugin == "tpu" else find_spec(name, *a))
  on_colab = {}
  exec(source, on_colab)  # noqa: S102
  root = on_colab["ROOT"]
  clone = [c for c, _ in commands if c[:2] == ["git", "clone"]]
  assert clone and clone[0][-2:] == [github_url(), root]
  installs = [(c, kwargs) for c, kwargs in commands if "install" in c and "-e" in c]
  assert len(installs) == 1 and installs[0][1]["cwd"] == root
  extras = re.fullmatch(r"\.\[([\w,]+)\]", installs[0][0][-1]).group(1).split(",")
  declared = re.findall(r'^ +"(\w+)": \[', open(os.path.join(ROOT, "setup.py")).read(), re.MULTILINE)
  assert extras == ["data"] + ([plugin] if plugin else []) and set(extras) <= set(declared), (extras, declared)
  assert sys.path[0] == root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p))
def test_notebook_runs(path, request, tmp_path):
  nb = nbformat.read(path, as_version=4)
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
  name = os.path.splitext(os.path.basename(path))[0]
  overrides = small_settings(name, request.getfixturevalue, str(tmp_path / "workdir"))
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items())))
  env_flags = f"import os; os.environ['XLA_FLAGS'] = {xla_flags(2)!r}"
  nb.cells.insert(0, nbformat.v4.new_code_cell(env_flags))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
