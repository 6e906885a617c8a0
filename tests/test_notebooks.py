"""Every notebook in colabs/ runs headless with small settings, so a notebook that breaks fails CI.

Each notebook has one cell tagged "parameters"; the harness inserts a cell after it that overrides those
values (the papermill convention), then executes the notebook with the repository's Python kernel.
"""
import glob
import os
from collections.abc import Callable

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))


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
  }
  return settings[name]()


def test_every_notebook_has_settings():
  names = [os.path.splitext(os.path.basename(p))[0] for p in NOTEBOOKS]
  assert {"train_quickstart", "vit_vs_resnet", "video_classics", "vivit_and_swin"} <= set(names)
  for name in names:
    small_settings(name, lambda fixture_name: fixture_name, "w")  # KeyError for a notebook without settings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p))
def test_notebook_runs(path, request, tmp_path):
  nb = nbformat.read(path, as_version=4)
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
  name = os.path.splitext(os.path.basename(path))[0]
  overrides = small_settings(name, request.getfixturevalue, str(tmp_path / "workdir"))
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items())))
  env_flags = "import os; os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'"
  nb.cells.insert(0, nbformat.v4.new_code_cell(env_flags))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
