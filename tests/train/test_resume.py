"""Hard kills and restarts: a run SIGKILLed mid-run or mid-checkpoint, then restarted with the same command,
ends with exactly the metrics and parameters of an uninterrupted run. Real processes, real SIGKILLs."""
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.xla_flags import xla_flags
from vit_video.train.run_folder import RunFolder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(ROOT, "tests", "train", "killed_run.py")


def main_flags(data_dir: str, workdir: str) -> list[str]:
  """The README's experiment at toy size (16 patches of 7x7, width 16, one block), 14 steps of 16 images."""
  over = {"dataset.data_dir": data_dir, "model.patch_size": 7, "model.width": 16, "model.depth": 1,
          "model.num_heads": 2, "model.mlp_dim": 24, "model.pool": "token",
          "batch_size": 16, "total_steps": 14, "log_every_steps": 1,
          "eval_every_steps": 7, "checkpoint.save_every_steps": 5, "checkpoint.async_save": True,
          "augment.crop_padding": 0, "optimizer.warmup_steps": 2, "progress_bar": "off"}
  return [f"--config={ROOT}/experiments/vit_fashion_mnist.py:variant=vit_t4,quick", f"--workdir={workdir}",
          *(f"--config.{k}={v}" for k, v in over.items())]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
  env = dict(os.environ, XLA_FLAGS=xla_flags(2), TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                        **kwargs)


def comparable(workdir: str) -> tuple[list, dict]:
  """metrics.jsonl without wall-clock rates, and the summary without timings."""
  records = [{k: v for k, v in r.items() if k != "examples_per_second"} for r in RunFolder(workdir).read_metrics()]
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  return records, {k: v for k, v in summary.items() if k != "seconds_this_start"}


@pytest.fixture(scope="module")
def uninterrupted(tiny_fmnist, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted") / "run")
  proc = run(["-m", "vit_video.main", *main_flags(tiny_fmnist, workdir)])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return comparable(workdir)


@pytest.mark.parametrize("mode, step", [("after_step", 8), ("during_save", 10)])
def test_sigkill_then_restart_equals_uninterrupted(tiny_fmnist, tmp_path, uninterrupted, mode, step):
  workdir = str(tmp_path / "run")
  flags = main_flags(tiny_fmnist, workdir)
  killed = run([DRIVER, mode, str(step), "--", *flags])
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  ckpts = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  if mode == "during_save":  # the uncommitted step 10 is on disk, incomplete
    assert any(name.startswith("10.") for name in ckpts) and "10" not in ckpts, ckpts
  resumed = run(["-m", "vit_video.main", *flags])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 5" in resumed.stderr
  records, summary = comparable(workdir)
  assert records == uninterrupted[0]
  assert summary == uninterrupted[1]
