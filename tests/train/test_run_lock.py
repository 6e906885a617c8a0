"""The workdir lock: a second run on a workdir in use is refused naming the holder; a killed or silent run's lock
is taken over; the heartbeat renews it; it works on a non-local (ram://) workdir; and a real second
`train_and_evaluate` on a held workdir writes nothing."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests import ram_fs
from tests.experiment_files import ROOT
from tests.train.test_loop import tiny_config
from vit_video.train import loop, run_lock
from vit_video.train.run_folder import RunFolder

_HOLD = """
import sys, time
from vit_video.train import run_lock
with run_lock.hold(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
  """A live python process holding the lock of tmp_path/run (yields its Popen)."""
  path = tmp_path / "run" / run_lock.LOCK
  out = open(tmp_path / "holder.txt", "w")  # a file, not a pipe: a full pipe would block the child
  child = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=out, stderr=subprocess.STDOUT,
                           cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  deadline = time.monotonic() + 60
  while "held" not in (tmp_path / "holder.txt").read_text():
    assert child.poll() is None and time.monotonic() < deadline, (tmp_path / "holder.txt").read_text()
    time.sleep(0.05)
  yield child
  child.kill()
  child.wait()
  out.close()


def test_a_second_lock_is_refused_naming_the_holder_until_released(tmp_path):
  path = tmp_path / run_lock.LOCK
  first = run_lock.RunLock(path)
  first.acquire()
  with pytest.raises(run_lock.WorkdirInUseError,
                     match=rf"{tmp_path} is in use by another run: process {os.getpid()} on host "
                           rf"{socket.gethostname()}.*delete {path}"):
    run_lock.RunLock(path).acquire()
  first.release()
  assert not path.exists()
  second = run_lock.RunLock(path)
  second.acquire()
  assert json.loads(path.read_text())["token"] == second.token
  first.release()  # not its lock any more: leaves it alone
  assert json.loads(path.read_text())["token"] == second.token
  second.release()


def test_a_killed_runs_lock_is_taken_over(tmp_path, holder, caplog):
  path = tmp_path / "run" / run_lock.LOCK
  with pytest.raises(run_lock.WorkdirInUseError, match=f"process {holder.pid} on host"):
    run_lock.RunLock(path).acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  lock = run_lock.RunLock(path)
  with caplog.at_level(logging.WARNING):
    lock.acquire()
  assert f"process {holder.pid} on this host is gone" in caplog.text
  assert json.loads(path.read_text())["token"] == lock.token
  lock.release()


def test_another_hosts_lock_counts_until_its_heartbeat_is_stale(tmp_path):
  path = tmp_path / run_lock.LOCK
  record = {"token": "x", "host": "other-host", "pid": 1, "command": "python -m vit_video.main",
            "started": time.time() - 1000}
  path.write_text(json.dumps({**record, "heartbeat": time.time() - 10}))
  with pytest.raises(run_lock.WorkdirInUseError, match="process 1 on host other-host"):
    run_lock.RunLock(path, stale_seconds=60).acquire()
  path.write_text(json.dumps({**record, "heartbeat": time.time() - 61}))
  lock = run_lock.RunLock(path, stale_seconds=60)
  lock.acquire()
  assert json.loads(path.read_text())["token"] == lock.token
  lock.release()
  path.write_text("{torn")  # an unreadable lock holds nothing
  lock = run_lock.RunLock(path)
  lock.acquire()
  lock.release()


def test_the_heartbeat_renews_the_lock(tmp_path):
  path = tmp_path / run_lock.LOCK
  lock = run_lock.RunLock(path, heartbeat_seconds=0.05, stale_seconds=1.0)
  lock.acquire()
  first = json.loads(path.read_text())
  time.sleep(0.4)
  later = json.loads(path.read_text())
  assert later["heartbeat"] > first["heartbeat"] and later["started"] == first["started"]
  lock.release()
  with pytest.raises(ValueError, match="heartbeat_seconds"):
    run_lock.RunLock(path, heartbeat_seconds=5, stale_seconds=5)


def test_lock_on_a_non_local_workdir():
  path = ram_fs.new_folder("locked") + "/" + run_lock.LOCK
  with run_lock.hold(path, settle_seconds=0.01) as lock:
    with pytest.raises(run_lock.WorkdirInUseError, match="is in use by another run"):
      run_lock.RunLock(path, settle_seconds=0.01).acquire()
    assert json.loads(lock.path.read_text())["token"] == lock.token
  assert not lock.path.exists()


def test_a_second_run_on_a_held_workdir_is_refused_and_writes_nothing(tiny_fmnist, tmp_path, holder):
  workdir = tmp_path / "run"
  with pytest.raises(run_lock.WorkdirInUseError, match=f"process {holder.pid}"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=4), str(workdir))
  assert sorted(os.listdir(workdir)) == [run_lock.LOCK]


def test_metrics_after_a_restart_hold_each_step_and_kind_once_in_order(tmp_path):
  folder = RunFolder(tmp_path)
  folder.makedirs()
  # Two runs that wrote the same workdir before it had a lock: duplicated, interleaved rows.
  rows = [{"step": s, "kind": k, "loss": float(s) + i} for s, k, i in
          [(1, "train", 0), (1, "train", 1), (2, "train", 0), (2, "eval", 0), (2, "train", 1), (3, "train", 0),
           (2, "eval", 1), (4, "train", 0)]]
  folder.append_metrics(rows)
  folder.keep_metrics_until(3)
  kept = folder.read_metrics()
  assert [(r["step"], r["kind"]) for r in kept] == [(1, "train"), (2, "train"), (2, "eval"), (3, "train")]
  assert [r["loss"] for r in kept] == [2.0, 3.0, 3.0, 3.0]  # the newest record of each
