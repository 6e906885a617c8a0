"""Every notebook in colabs/ runs headless with small settings, so a notebook that breaks fails CI.

Each notebook has one cell tagged "parameters"; the harness inserts a cell after it that overrides those
values (the papermill convention), then executes the notebook with the repository's Python kernel.
"""
import glob
import os

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))


def small_settings(name: str, data_dir: str, workdir: str) -> dict:
  return {
      "train_quickstart": {"ROOT": ROOT, "DATA_DIR": data_dir, "WORKDIR": workdir, "VARIANT": "vit_t4",
                           "TOTAL_STEPS": 6},
  }[name]


def test_every_notebook_has_settings():
  names = [os.path.splitext(os.path.basename(p))[0] for p in NOTEBOOKS]
  assert "train_quickstart" in names
  for name in names:
    small_settings(name, "d", "w")  # raises KeyError for a notebook without small settings


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.basename(p))
def test_notebook_runs(path, tiny_fmnist, tmp_path):
  nb = nbformat.read(path, as_version=4)
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
  name = os.path.splitext(os.path.basename(path))[0]
  overrides = small_settings(name, tiny_fmnist, str(tmp_path / "workdir"))
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items())))
  env_flags = "import os; os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'"
  nb.cells.insert(0, nbformat.v4.new_code_cell(env_flags))
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
