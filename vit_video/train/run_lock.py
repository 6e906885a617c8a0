"""One run per workdir: a lock file that a second start refuses and that a dead run does not leave stuck.

    with run_lock.hold(RunFolder(workdir).path / run_lock.LOCK):  # every process of the run calls it
      ...train...

The lock is `<workdir>/lock.json`: who holds it (host, pid, command, a random token), since when, and a
heartbeat that a thread renews every `heartbeat_seconds`. A start that finds it
  absent                      takes it;
  held by a live run          raises WorkdirInUseError naming the holder and what to do;
  held by a dead run          takes it over with a warning: at once on the holder's own host when its pid is
                              gone (a killed run), from any host once the heartbeat is `stale_seconds` old.
The hosts of one pod run share the lock: process 0 takes it and every process learns the outcome.

Guarantees: on a local disk taking the lock is exclusive (an O_EXCL create; a stale lock is renamed away first,
which one contender wins). On object stores (gs://) there is no exclusive create: the lock is written, read
back after `settle_seconds`, and kept only if it still holds this run's token: of two starts at once one runs,
but both can run if a lock write takes longer than `settle_seconds` to land.
"""
import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import jax
import numpy as np
from etils import epath

from vit_video.train.run_folder import as_path, is_uri, json_text, write_atomic

LOCK = "lock.json"

_log = logging.getLogger(__name__)


class WorkdirInUseError(RuntimeError):
  """Another live run holds the workdir's lock."""


def _utc(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read(path: epath.Path) -> dict | None:
  """The lock's record; None when there is no lock; {} when it cannot be read (a torn or foreign file)."""
  try:
    text = path.read_text()
  except FileNotFoundError:
    return None
  except OSError:
    return {} if path.exists() else None
  try:
    record = json.loads(text)
  except json.JSONDecodeError:
    return {}
  return record if isinstance(record, dict) else {}


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


def _dead_holder(record: dict, *, stale_seconds: float) -> str | None:
  """Why the holder of `record` is dead, or None when it may be alive."""
  if not record:
    return "the lock file is unreadable"
  age = time.time() - float(record.get("heartbeat", 0.0))
  if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", -1))):
    return f"its process {record.get('pid')} on this host is gone"
  if age > stale_seconds:
    return f"its last heartbeat is {age:.0f} s old (> {stale_seconds:.0f} s)"
  return None


def _describe(record: dict, path: epath.Path, stale_seconds: float) -> str:
  age = time.time() - float(record.get("heartbeat", 0.0))
  return (f"{path.parent} is in use by another run: process {record.get('pid')} on host {record.get('host')} "
          f"({record.get('command', '?')}), started {_utc(float(record.get('started', 0.0)))}, last heartbeat "
          f"{age:.0f} s ago. Wait for it to finish or stop it, or use another workdir. If that run is dead on "
          f"another host, its lock expires {stale_seconds:.0f} s after its last heartbeat (or delete {path}).")


class RunLock:
  """The lock of one workdir, held by this process (see the module docstring)."""

  def __init__(self, path: str | os.PathLike, *, heartbeat_seconds: float = 30.0, stale_seconds: float = 180.0,
               settle_seconds: float = 2.0):
    if not 0 < heartbeat_seconds < stale_seconds:
      raise ValueError(f"need 0 < heartbeat_seconds ({heartbeat_seconds}) < stale_seconds ({stale_seconds})")
    self.path = as_path(path)
    self.heartbeat_seconds, self.stale_seconds, self.settle_seconds = heartbeat_seconds, stale_seconds, settle_seconds
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._started = time.time()

  def _record(self) -> dict:
    return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
            "command": " ".join(sys.argv)[:300], "started": self._started, "heartbeat": time.time()}

  def _create(self) -> bool:
    """Writes the lock if there is none; False when another start got there first."""
    if is_uri(self.path):
      write_atomic(self.path, json_text(self._record()))
      time.sleep(self.settle_seconds)  # another start's write lands now or it read ours
      return (_read(self.path) or {}).get("token") == self.token
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(json_text(self._record()))
      f.flush()
      os.fsync(f.fileno())
    return True

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirInUseError naming the live run that holds it."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(4):  # a contender may release or take over between our reads; a takeover needs two rounds
      record = _read(self.path)
      if record is None:
        if self._create():
          break
        continue
      dead = _dead_holder(record, stale_seconds=self.stale_seconds)
      if dead is None:
        raise WorkdirInUseError(_describe(record, self.path, self.stale_seconds))
      _log.warning("taking over the lock of %s from a dead run (%s): process %s on host %s, started %s",
                   self.path.parent, dead, record.get("pid"), record.get("host"),
                   _utc(float(record.get("started", 0.0))))
      stale = self.path.parent / f".{LOCK}.stale-{self.token}"
      try:
        self.path.rename(stale)  # exactly one contender renames it
      except (FileNotFoundError, OSError):
        continue
      stale.unlink(missing_ok=True)
    else:
      raise WorkdirInUseError(f"could not take the lock {self.path}: other starts keep taking it")
    self._thread = threading.Thread(target=self._beat, name=f"run-lock {self.path}", daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      try:
        if (_read(self.path) or {}).get("token") != self.token:
          _log.error("the lock %s was taken by another run; this run no longer holds its workdir", self.path)
          return
        write_atomic(self.path, json_text({**self._record(), "started": self._started}))
      except OSError as e:  # a filesystem hiccup: try again at the next beat
        _log.warning("could not renew the lock %s: %s", self.path, e)

  def release(self) -> None:
    """Stops the heartbeat and deletes the lock if it is still this run's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if (_read(self.path) or {}).get("token") == self.token:
      self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(path: str | os.PathLike, **kwargs) -> Iterator[RunLock | None]:
  """Holds the workdir lock at `path` for the duration (process 0 takes it; every process of a multi-process run
  raises WorkdirInUseError when it is in use). Yields the RunLock on process 0, None elsewhere."""
  lock, error = None, None
  if jax.process_index() == 0:
    lock = RunLock(path, **kwargs)
    try:
      lock.acquire()
    except WorkdirInUseError as e:
      lock, error = None, e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    taken = multihost_utils.broadcast_one_to_all(np.int32(error is None and jax.process_index() == 0))
    if not int(taken) and error is None:
      error = WorkdirInUseError(f"process 0 could not take the lock {path}: another run holds the workdir "
                                "(process 0's log names it)")
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
