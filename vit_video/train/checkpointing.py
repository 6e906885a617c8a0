"""Checkpoints of a training run: orbax saves on a step schedule, keep-last-N plus keep-best, and resume.

    checkpointer = Checkpointer(RunFolder(workdir).checkpoints, save_every_steps=500, total_steps=10_000,
                                max_to_keep=2, keep_best=True)  # best by metrics["top1"], highest wins
    restored = checkpointer.restore_latest(abstract_state, expected_meta={"model": "vit_ti16"})
    for step in range(start + 1, total_steps + 1):
      ...
      checkpointer.save(step, state, meta={"model": "vit_ti16", "step": step}, metrics={"top1": top1})
    checkpointer.wait()  # async saves: before the process exits

On disk, under `directory` (one orbax `CheckpointManager`):

    <step>/state        the pytree of arrays (params, optimizer state, EMA, step, RNG key data, ...)
    <step>/meta         the caller's JSON (model name, data-iterator position, config hash, ...)
    <step>/checksums    one 32-bit checksum per array, checked on every restore
    <step>/metrics      the metrics the best checkpoint is chosen by (written by orbax)
    <step>.orbax-checkpoint-tmp/   a save in progress, or one killed before it committed

Completeness: orbax 0.12.8 writes a step into `<step>.orbax-checkpoint-tmp` and commits it by renaming
it to `<step>` (after writing `commit_success.txt` inside), so only whole saves carry a step name. A killed
save leaves its tmp folder, which is never read and is removed at this process's first save.

Corruption: a complete-looking step can still be damaged later (a truncated or overwritten file). orbax does
not notice every such damage: garbage in an array file can restore as wrong numbers without an error. So
every save also stores a 32-bit checksum of each array (train/checksums.py), and a restore that fails, or
whose sums differ, is skipped with a warning naming it; the previous checkpoint is tried. Once an older one
restores, the skipped newer ones are moved (never deleted) to `<directory>_corrupt/<step>-<UTC time>/`, out of
orbax's sight, so that the resumed run can save those steps again. If no checkpoint restores, nothing is moved
and a RuntimeError lists every failure in a line each (a systematic failure, e.g. a wrong `abstract_state`, is
not mistaken for corruption).

Filesystems: `directory` is a local folder or any `etils.epath` URI. orbax itself writes local folders and
gs://; anywhere else (s3://, ...) the checkpoints live in a local mirror that is uploaded after every save
(train/checkpoint_mirror.py; single-process, saves then synchronous).

A checkpoint of another model (its meta differs from `expected_meta`, or its array names, shapes or dtypes
differ from `abstract_state`) raises CheckpointMismatchError (a ValueError) naming both sides, and nothing on disk
is touched. A save that cannot be written (a full disk) raises CheckpointWriteError naming its OS error and file.
"""
import contextlib
import datetime
import errno
import json
import logging
import os
import re
import tempfile
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from vit_video.train import checkpoint_mirror, checksums
from vit_video.train.run_folder import CHECKPOINTS, as_path

# orbax 0.12.8 `atomicity_types.TMP_DIR_SUFFIX`: the folder of a save that has not committed yet.
_TMP_MARKER = ".orbax-checkpoint-tmp"

_log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
  """A checkpoint of another run or model (its meta, array names, shapes or dtypes differ)."""


class CheckpointWriteError(RuntimeError):
  """A save that could not be written (a full disk, no permission, ...); the older checkpoints are intact."""


# orbax messages that are not news in a healthy run, silenced exactly (see `_quiet_absl`): a save between two
# evaluations carries no metric for keep-best (by design, see `save`).
_NO_METRICS = "Requested `tracked_metric`; did not provide metrics."


class Checkpointer:
  """Saves a run's state every `save_every_steps` steps and at `total_steps`; resumes from the newest one.

  Keeps the newest `max_to_keep` checkpoints plus, with `keep_best`, the one whose `metrics[best_metric]` is
  best (`best_mode` 'max': highest). Saves run in the background when `async_save`; call `wait()` (or use
  the object as a context manager) before the process exits. One writing process per `directory`.
  Steps whose metrics file is unreadable (orbax would fail to start on them) are moved aside on construction.
  """

  def __init__(self, directory: str | os.PathLike, *, save_every_steps: int, total_steps: int,
               max_to_keep: int = 2, keep_best: bool = False, best_metric: str = "top1",
               best_mode: Literal["max", "min"] = "max", async_save: bool = True):
    if save_every_steps < 1 or total_steps < 1 or max_to_keep < 1:
      raise ValueError(f"save_every_steps ({save_every_steps}), total_steps ({total_steps}) and max_to_keep "
                       f"({max_to_keep}) must all be >= 1")
    if best_mode not in ("max", "min"):
      raise ValueError(f"best_mode must be 'max' or 'min'; got {best_mode!r}")
    self.directory = as_path(directory)  # what messages name; orbax works on self._local
    self._in_flight = None  # the step of an async save not yet known to have committed
    self.save_every_steps = save_every_steps
    self.total_steps = total_steps
    self.best_metric = best_metric if keep_best else None
    self._partial_saves_removed = False
    self._mirror = None if checkpoint_mirror.orbax_native(self.directory) else checkpoint_mirror.Mirror(
        self.directory)
    self._local = self.directory if self._mirror is None else self._mirror.local
    try:
      self._manager = self._start(max_to_keep, keep_best, best_metric, best_mode, async_save)
    except BaseException:
      if self._mirror is not None:
        self._mirror.close()
      raise

  def _start(self, max_to_keep: int, keep_best: bool, best_metric: str, best_mode: str,
             async_save: bool) -> ocp.CheckpointManager:
    """Moves aside steps orbax cannot start on, then opens orbax's manager on the (local) folder."""
    self._move_aside_corrupt_metrics()
    policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
    best_fn = None
    if keep_best:
      best_fn = lambda metrics: metrics[best_metric]  # noqa: E731
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=best_mode == "min", n=1, keep_checkpoints_without_metrics=False))
    # orbax's own max_to_keep with best_fn keeps the best N only; a preservation policy keeps both sets.
    # best_fn is still passed: without it orbax neither writes the metrics nor reports best_step().
    options = ocp.CheckpointManagerOptions(
        best_fn=best_fn, best_mode=best_mode, enable_async_checkpointing=async_save and self._mirror is None,
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies))
    return ocp.CheckpointManager(self._local, options=options, item_handlers={
        "state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler(),
        "checksums": ocp.JsonCheckpointHandler()})

  def should_save(self, step: int) -> bool:
    """True on the schedule: every `save_every_steps` steps and at the last step (never at step 0)."""
    return step >= 1 and (step % self.save_every_steps == 0 or step == self.total_steps)

  def save(self, step: int, state: Any, *, meta: dict, metrics: dict | None = None, force: bool = False) -> bool:
    """Saves `state` (a pytree of arrays) as step `step` if `should_save(step)` or `force`; returns whether it did.

    `meta` is JSON returned as is by `restore_latest`; `metrics` (numbers) choose the best checkpoint. A step
    already on disk is not written again. Raises FloatingPointError, writing nothing, when `state` or
    `metrics` holds a NaN or infinity, so the newest checkpoint is always a good one.
    """
    if not force and not self.should_save(step):
      return False
    if step in self._manager.all_steps():
      _log.info("checkpoint %s exists; not saving step %d again", self.directory / str(step), step)
      return False
    meta = _json_round_trip(meta, "meta")
    if metrics is not None:
      metrics = _json_round_trip(metrics, "metrics")
      bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
      if bad:
        raise FloatingPointError(f"step {step}: metrics {bad} are not finite; nothing was saved, the newest "
                                 f"checkpoint is step {self.latest_step()} in {self.directory}")
    if self.best_metric is not None and metrics is not None and self.best_metric not in metrics:
      raise ValueError(f"metrics {sorted(metrics)} lack {self.best_metric!r}, which picks the best checkpoint")
    sums, finite = checksums.checksums(state)
    bad = [name for name, ok in finite.items() if not ok]
    if bad:
      raise FloatingPointError(f"step {step}: {bad[:5]}{' ...' if len(bad) > 5 else ''} hold NaN or infinity; "
                               f"nothing was saved, the newest checkpoint is step {self.latest_step()} in "
                               f"{self.directory}")
    if not self._partial_saves_removed:
      self._remove_partial_saves()
      self._partial_saves_removed = True
    with self._write_errors(step), _quiet_absl(_NO_METRICS):
      saved = self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
          checksums=ocp.args.JsonSave(sums)), metrics=metrics, force=True)
      self._in_flight = step
    if self._mirror is not None:  # synchronous: the step is committed locally
      self._mirror.sync()
    return saved

  @contextlib.contextmanager
  def _write_errors(self, step: int | None = None):
    """Turns a failed write (raised by orbax when the save fails or at the next wait) into CheckpointWriteError
    naming the step (the async save in flight, else `step`), the folder, the root cause (e.g. no space left on
    device) and how to resume."""
    try:
      yield
    except Exception as e:
      step = self._in_flight if self._in_flight is not None else step
      self._in_flight = None
      raise CheckpointWriteError(
          f"saving checkpoint {'step ' + str(step) if step is not None else ''} in {self.directory} failed: "
          f"{_root_cause(e)}. {_newest(self._manager.latest_step())}; fix the cause (e.g. free disk space) and run "
          "the same command again to resume") from e

  def restore_latest(self, abstract_state: Any, *, expected_meta: dict) -> tuple[Any, dict] | None:
    """The newest checkpoint that restores intact, as `(state, meta)`; None when there is none.

    `abstract_state` is the state's pytree of `jax.ShapeDtypeStruct`s; their shardings say where the arrays
    go (any mesh or device count: a checkpoint saved on 8 devices restores onto 1, and back); leaves without
    a sharding come back as host numpy arrays. Every key of
    `expected_meta` must equal the checkpoint's meta, and the checkpoint's array names, shapes and dtypes
    must equal `abstract_state`'s, else ValueError (nothing is changed on disk). Damaged checkpoints are
    skipped with a warning (see the module docstring).
    """
    self.wait()
    self._manager.reload()
    expected_meta = _json_round_trip(expected_meta, "expected_meta")
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      path = self.directory / str(step)  # named in messages; orbax reads self._local
      try:
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict):
          raise checksums.CorruptCheckpointError(f"{path / 'meta'} holds {type(meta).__name__}, not a dict")
        saved = self._manager.item_metadata(step)["state"]
        if saved is None:
          raise checksums.CorruptCheckpointError(f"{path / 'state'} has no readable array metadata")
      except Exception as e:  # noqa: BLE001  (any failure to read a step means the step is damaged)
        failures.append(self._skip(path, e))
        continue
      _check_meta(meta, expected_meta, path)
      _check_arrays(ocp.tree.to_flat_dict(saved.tree), abstract_state, path, prefix=())
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), checksums=ocp.args.JsonRestore()))
        checksums.verify(restored["state"], restored["checksums"], path)
      except Exception as e:  # noqa: BLE001
        failures.append(self._skip(path, e))
        continue
      for failed, _ in failures:
        self._move_aside(self._local / failed.name)
      self._manager.reload()
      return restored["state"], meta
    if failures:
      raise RuntimeError(f"no checkpoint in {self.directory} restores; nothing was moved or deleted. Each step's "
                         f"failure:\n" + "\n".join(f"  {p}: {_short(e)}" for p, e in failures)
                         + f"\nIf the files were damaged, move {self.directory} away to start afresh (a run of "
                         "this config in a new workdir starts from scratch)")
    return None

  def all_steps(self) -> list[int]:
    """The steps of the complete checkpoints on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best metric (the newest step when `keep_best` is off)."""
    return self._manager.best_step()

  def wait(self) -> None:
    """Blocks until the background saves have committed; CheckpointWriteError when one failed."""
    with self._write_errors():
      self._manager.wait_until_finished()
    self._in_flight = None

  def close(self) -> None:
    """Waits for the background saves and releases orbax's threads (and the local mirror's folder);
    CheckpointWriteError when a save failed."""
    try:
      with self._write_errors():
        self._manager.close()
    finally:
      if self._mirror is not None:
        self._mirror.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _skip(self, path: epath.Path, error: Exception) -> tuple[epath.Path, Exception]:
    path = self.directory / path.name  # the user's folder, also where orbax reads a local mirror
    _log.warning("checkpoint %s is damaged and is skipped (%s); trying the previous one", path, _short(error))
    return path, error

  def _move_aside(self, path: epath.Path) -> None:
    """Moves a damaged step out of orbax's directory (kept for inspection, never deleted)."""
    if jax.process_index() != 0:
      return
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = self.directory.parent / f"{self.directory.name}_corrupt" / f"{path.name}-{stamp}"
    if self._mirror is not None:
      self._mirror.move_aside(path.name, target)
      path.rmtree()
    else:
      target.parent.mkdir(parents=True, exist_ok=True)
      path.rename(target)
    _log.warning("moved damaged checkpoint %s to %s", self.directory / path.name, target)

  def _move_aside_corrupt_metrics(self) -> None:
    """orbax reads every step's metrics when it starts and fails on an unreadable one: move such steps aside."""
    if not self._local.exists():
      return
    for path in sorted(self._local.iterdir()):
      metrics_file = path / "metrics" / "metrics"
      if path.name.isdigit() and metrics_file.exists():
        try:
          json.loads(metrics_file.read_text())
        except (ValueError, OSError) as e:
          self._skip(path, e)
          self._move_aside(path)

  def _remove_partial_saves(self) -> None:
    """Deletes the tmp folders of saves killed before they committed (never restorable, possibly large)."""
    if jax.process_index() != 0 or not self._local.exists():
      return
    for path in self._local.iterdir():
      if _TMP_MARKER in path.name:
        _log.info("removing %s, a save that never committed", path)
        path.rmtree(missing_ok=True)


def restore_params(path: str | os.PathLike, abstract_variables: dict | None = None) -> dict:
  """Model variables from another run's checkpoint, for fine-tuning: `{"params": ..., "batch_stats": ...}`.

  `path` (local or any `etils.epath` URI) is a run's workdir (its `checkpoints/` folder's newest step is used),
  a checkpoints folder, or one step's folder; a step that cannot be read (damaged) raises ValueError naming its
  folder and the other steps beside it (nothing is moved in another run's folder: name a step's folder, e.g.
  `.../checkpoints/12`, to use an older one). Only the variables are read, not the optimizer state.
  With `abstract_variables` None, every non-empty collection among params and batch_stats comes back as host
  numpy arrays of the checkpoint's own shapes (the caller adapts heads and position embeddings). With
  `abstract_variables` (a dict of `jax.ShapeDtypeStruct` trees, e.g. `{"params": ...}`), exactly those
  collections come back, placed by their shardings, and a different name, shape or dtype raises ValueError
  naming it. Nothing is written (a run on a filesystem orbax cannot read is copied to a temporary folder).
  """
  step_dir, steps = _resolve_step_dir(as_path(path))
  try:
    if checkpoint_mirror.orbax_native(step_dir):
      return _restore_variables(step_dir, abstract_variables)
    with tempfile.TemporaryDirectory(prefix="vit_video_restore_") as local:
      checkpoint_mirror.download_step(step_dir, epath.Path(local) / step_dir.name)
      return _restore_variables(epath.Path(local) / step_dir.name, abstract_variables)
  except CheckpointMismatchError:  # another model's arrays, or no params: not damage
    raise
  except Exception as e:  # noqa: BLE001  (as in restore_latest, a step that fails to read is taken as damaged)
    others = [s for s in steps if str(s) != step_dir.name]
    hint = (f"the other steps in {step_dir.parent} are {', '.join(map(str, others))}: name one's folder to start "
            f"from it, e.g. init.checkpoint={step_dir.parent / str(others[-1])}" if others else
            f"{step_dir.parent} holds no other step")
    raise ValueError(f"checkpoint {step_dir} cannot be read: it looks damaged ({_short(e)}). Nothing was "
                     f"moved or deleted; {hint}") from e


def _restore_variables(step_dir: epath.Path, abstract_variables: dict | None) -> dict:
  handler = ocp.PyTreeCheckpointHandler()  # the item handler itself: a Checkpointer would look for step metadata
  metadata = handler.metadata(step_dir / "state")  # in state/ and warn that it is not there (it is one level up)
  if metadata is None:
    raise checksums.CorruptCheckpointError(f"{step_dir / 'state'} has no readable array metadata")
  saved_tree = metadata.tree
  if abstract_variables is None:
    abstract_variables = {
        name: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved_tree[name])
        for name in ("params", "batch_stats") if name in saved_tree and jax.tree.leaves(saved_tree[name])}
    if "params" not in abstract_variables:
      raise CheckpointMismatchError(f"checkpoint {step_dir} holds no params; its arrays are {sorted(saved_tree)}")
    restore_args = jax.tree.map(lambda a: ocp.RestoreArgs(restore_type=np.ndarray), abstract_variables)
  else:
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_variables)
  flat_saved = ocp.tree.to_flat_dict(saved_tree)
  for name, tree in abstract_variables.items():
    _check_arrays({k[1:]: v for k, v in flat_saved.items() if k[0] == name}, tree, step_dir, prefix=(name,))
  variables = handler.restore(step_dir / "state", args=ocp.args.PyTreeRestore(
      item=abstract_variables, restore_args=restore_args, partial_restore=True))
  if (step_dir / "checksums").exists():
    checksums.verify(variables, ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / "checksums"),
                     step_dir)
  return variables


def _resolve_step_dir(path: epath.Path) -> tuple[epath.Path, list[int]]:
  """A workdir, checkpoints folder or step folder -> (the step folder to read, the complete steps of its folder)."""
  if (path / "state").is_dir():
    step_dir, directory = path, path.parent
  else:
    step_dir, directory = None, path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
  if not checkpoint_mirror.orbax_native(directory):
    steps = [int(p.name) for p in checkpoint_mirror.complete_steps(directory)]
  else:
    steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []
  if step_dir is None and not steps:
    raise FileNotFoundError(f"no complete checkpoint in {path} (looked for step folders in {directory})")
  return (step_dir if step_dir is not None else directory / str(steps[-1])), steps


def _json_round_trip(value: dict, what: str) -> dict:
  """`value` as it will read back from JSON (tuples become lists); a clear error for what JSON cannot hold."""
  if not isinstance(value, dict):
    raise ValueError(f"{what} must be a dict of JSON values; got {type(value).__name__}")
  try:
    return json.loads(json.dumps(value))
  except TypeError as e:
    raise ValueError(f"{what} must be JSON-serialisable: {e}") from e


def _newest(step: int | None) -> str:
  return "No checkpoint was complete yet" if step is None else f"The older checkpoints are intact (newest: step {step})"


def _short(error: BaseException) -> str:
  """An exception in one line of at most 800 characters (TensorStore errors carry a spec of 70 lines)."""
  text = str(error).strip().split("\n", 1)[0]
  return f"{type(error).__name__}: {text[:800]}{' ...' if len(text) > 800 else ''}"


def _root_cause(error: BaseException) -> str:
  """What a failed write came down to: the OS error (by name, e.g. 'No space left on device') and the file,
  when the chain of exceptions or TensorStore's message holds one; else the innermost exception, shortened."""
  chain = [error]
  while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  for e in chain:
    if isinstance(e, OSError) and e.errno is not None:
      where = f" writing {e.filename}" if e.filename else ""
      return f"{os.strerror(e.errno)} ({errno.errorcode.get(e.errno, e.errno)}){where}"
    match = re.search(r'Failed (?:writing|to write)[^"]*"?([^":]*)"?.*\[os_error_code=.(\d+).\]', str(e))
    if match:
      code = int(match.group(2))
      return f"{os.strerror(code)} ({errno.errorcode.get(code, code)}) writing {match.group(1).strip()}"
  return _short(chain[-1])


@contextlib.contextmanager
def _quiet_absl(*messages: str):
  """Drops log records of absl's logger (orbax logs through it) that start with one of `messages`, for the
  duration only."""
  class _Drop(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
      return not record.getMessage().startswith(messages)
  logger, drop = logging.getLogger("absl"), _Drop()
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def _check_meta(meta: dict, expected: dict, path: epath.Path) -> None:
  for key, value in expected.items():
    saved = meta[key] if key in meta else "<missing>"
    if saved != value:
      raise CheckpointMismatchError(
          f"checkpoint {path} is of another run: its {key} is {saved!r}, this run's is {value!r}. Nothing was "
          f"changed on disk; use another workdir or move {path.parent} away")


def _check_arrays(saved: dict, abstract: Any, path: epath.Path, *, prefix: tuple) -> None:
  """Raises ValueError at the first array name, shape or dtype in which `saved` (flat metadata) and `abstract`
  differ; `saved` is keyed by string tuples relative to `prefix`."""
  expected = {ocp.tree.str_keypath(k): v for k, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  name = lambda key: "/".join(prefix + key)  # noqa: E731
  missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
  if missing or extra:
    raise CheckpointMismatchError(
        f"checkpoint {path} holds a different model: "
        + (f"it lacks {name(missing[0])} {tuple(expected[missing[0]].shape)}" if missing else "")
        + (", " if missing and extra else "")
        + (f"it has {name(extra[0])} {tuple(saved[extra[0]].shape)} that this model lacks" if extra else "")
        + f" ({len(missing)} missing, {len(extra)} extra arrays)")
  for key in sorted(expected):
    want, have = expected[key], saved[key]
    if tuple(want.shape) != tuple(have.shape) or np.dtype(want.dtype) != np.dtype(have.dtype):
      raise CheckpointMismatchError(
          f"checkpoint {path} holds a different model: {name(key)} is {tuple(have.shape)} {np.dtype(have.dtype)} "
          f"there, {tuple(want.shape)} {np.dtype(want.dtype)} here")
