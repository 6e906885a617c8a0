"""What a user sees when a run fails, and that a healthy run shows no warning: the cause, its file and the fix are
the last lines, not buried under library noise (issue 14's fault probe, reproduced for real)."""
import gc
import logging
import os
import shutil

import pytest

from tests.experiment_files import ROOT
from tests.train.test_loop import tiny_config
from tests.train.test_resume import main_flags, run
from vit_video.train import checkpointing, loop, run_lock

DRIVER = os.path.join(ROOT, "tests", "train", "full_disk_run.py")


def test_a_full_disk_during_an_async_save_ends_with_the_cause(tiny_fmnist, tmp_path):
  workdir = tmp_path / "run"
  proc = run([DRIVER, "20000", "--", *main_flags(tiny_fmnist, str(workdir))])
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: CheckpointWriteError: saving checkpoint step 5 in {workdir}/checkpoints failed: "
                         "File too large (EFBIG) writing "), last
  assert "run the same command again to resume" in last
  assert "sys.meta_path is None" not in proc.stderr  # orbax's abandoned writes at interpreter exit
  # (TensorStore's threads still print `Event loop is closed` tracebacks while the save fails, above the cause.)
  assert not any("Event loop is closed" in line for line in proc.stderr.strip().splitlines()[-20:])
  assert not (workdir / run_lock.LOCK).exists()  # released on the way out


def test_every_checkpoint_damaged_is_one_short_message(tiny_fmnist, tmp_path, caplog):
  workdir = tmp_path / "run"
  loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=10, **{"checkpoint.max_to_keep": 2}), str(workdir))
  for step in ("5", "10"):  # every byte of every array file of both steps inverted
    for data in (workdir / "checkpoints" / step / "state").glob("**/d/*"):
      data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
  with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError) as error:
    loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=12), str(workdir))
  message = str(error.value)
  lines = message.splitlines()
  assert lines[0] == (f"no checkpoint in {workdir}/checkpoints restores; nothing was moved or deleted. Each "
                      "step's failure:")
  assert [line.split(":")[0].strip() for line in lines[1:3]] == [f"{workdir}/checkpoints/{s}" for s in (10, 5)]
  assert len(message) < 2500 and "move" in lines[-1]
  assert all(len(r.getMessage()) < 1200 for r in caplog.records)  # no TensorStore spec dumps in the warnings
  assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "5"]


def test_a_healthy_run_and_its_fine_tuning_log_no_warning(tiny_fmnist, tmp_path, caplog):
  # Earlier tests' garbage first: a damaged-checkpoint test's abandoned TensorStore read logs "Task exception was
  # never retrieved" (asyncio, ERROR) whenever it is collected, which must not land in this test's records.
  gc.collect()
  config = tiny_config(tiny_fmnist, total_steps=10, eval_every_steps=0, **{
      "checkpoint.keep_best": True, "checkpoint.async_save": True})  # saves without metrics: orbax would warn
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(config, str(tmp_path / "pretrain"))
    finetune = tiny_config(tiny_fmnist, total_steps=5, **{"init.checkpoint": str(tmp_path / "pretrain"),
                                                          "init.reset_head": True})
    loop.train_and_evaluate(finetune, str(tmp_path / "finetune"))
  # An earlier test's abandoned read can still be reported by asyncio while this test runs (gc.collect() above does
  # not always reach it): such a record names that test's files, never this one's, and is not this run's warning.
  messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert [m for m in messages if not ("Task exception was never retrieved" in m and str(tmp_path) not in m)] == []
  assert checkpointing.restore_params(tmp_path / "pretrain")["params"]
  shutil.rmtree(tmp_path / "finetune")
