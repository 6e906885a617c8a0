"""Tests for vit_video.train.checkpointing: round trips across device counts, the save schedule, keep-last-N
plus best, damaged / partial / foreign checkpoints, NaN states, and a SIGKILL in the middle of an async save."""
import glob
import logging
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from vit_video.train import checkpointing, checksums

# After a failed read (a truncated manifest), tensorstore calls back into orbax's already-closed event loop;
# harmless, reported at garbage collection, possibly during a later test.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:(?s)Exception ignored.*Event loop is closed:pytest.PytestUnraisableExceptionWarning")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = {"model": "vit_toy"}


def _mesh() -> Mesh:
  return Mesh(np.array(jax.devices()), ("data",))


def _state(seed: int, *, sharded: bool = True) -> dict:
  """A train-state-like pytree (sizes all differ); arrays with a leading 8 are split over the 8 devices."""
  k = jax.random.split(jax.random.key(seed), 4)
  params = {"embedding": {"kernel": jax.random.normal(k[0], (8, 6)), "bias": jax.random.normal(k[1], (6,))},
            "head": {"kernel": jax.random.normal(k[2], (6, 5)).astype(jnp.bfloat16)}}
  state = {"step": jnp.int32(seed), "params": params,
           "opt_state": ({"count": jnp.int32(seed), "mu": jax.tree.map(lambda p: p * 0.5, params)},),
           "ema": jax.tree.map(lambda p: p * 0.25, params), "rng": jax.random.key_data(k[3])}
  if not sharded:
    return jax.device_put(state, SingleDeviceSharding(jax.devices()[0]))
  mesh = _mesh()
  return jax.tree.map(lambda a: jax.device_put(a, NamedSharding(
      mesh, PartitionSpec("data") if a.ndim and a.shape[0] == 8 else PartitionSpec())), state)


def _abstract(state, sharding_fn=lambda a: a.sharding):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding_fn(a)), state)


def _assert_equal(restored, expected):
  assert jax.tree.structure(restored) == jax.tree.structure(expected)
  for r, e in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
    assert r.dtype == e.dtype and r.shape == e.shape
    np.testing.assert_array_equal(np.asarray(r), np.asarray(e))


def _checkpointer(workdir, **kw) -> checkpointing.Checkpointer:
  kw = {"save_every_steps": 5, "total_steps": 23, "max_to_keep": 10, **kw}
  return checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), **kw)


def _snapshot(root) -> dict:
  """Every file under `root` with its bytes."""
  out = {}
  for path in glob.glob(os.path.join(root, "**"), recursive=True):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_exact_and_keeps_shardings(tmp_path, async_save):
  state = _state(3)
  on_host = jax.device_get(state)
  with _checkpointer(tmp_path, async_save=async_save) as ckpt:
    assert ckpt.save(5, state, meta={**MODEL, "step": 5, "position": (5, 2)})
    for a in jax.tree.leaves(state):  # as a train step with donate_argnums does while the save writes
      a.delete()
  state = jax.device_put(on_host, jax.tree.map(lambda a: a.sharding, state))
  restored, meta = _checkpointer(tmp_path).restore_latest(_abstract(state), expected_meta=MODEL)
  _assert_equal(restored, state)
  assert meta == {**MODEL, "step": 5, "position": [5, 2]}  # the caller's JSON, as JSON reads it back
  for r, e in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert r.sharding == e.sharding
  assert restored["params"]["embedding"]["kernel"].addressable_shards[0].data.shape == (1, 6)


def test_restore_onto_one_device_from_eight_and_back(tmp_path):
  eight, one = _state(4), _state(4, sharded=False)
  ckpt = _checkpointer(tmp_path / "a")
  ckpt.save(5, eight, meta=MODEL)
  ckpt.wait()
  device0 = SingleDeviceSharding(jax.devices()[0])
  restored, _ = ckpt.restore_latest(_abstract(eight, lambda a: device0), expected_meta=MODEL)
  _assert_equal(restored, one)
  assert all(r.sharding == device0 for r in jax.tree.leaves(restored))

  ckpt = _checkpointer(tmp_path / "b")
  ckpt.save(5, one, meta=MODEL)
  ckpt.wait()
  restored, _ = ckpt.restore_latest(_abstract(eight), expected_meta=MODEL)
  _assert_equal(restored, eight)
  kernel = restored["params"]["embedding"]["kernel"]
  assert len(kernel.sharding.device_set) == 8 and kernel.addressable_shards[3].data.shape == (1, 6)
  row3 = np.asarray(one["params"]["embedding"]["kernel"])[3:4]
  np.testing.assert_array_equal(kernel.addressable_shards[3].data, row3)


def test_save_schedule_over_a_23_step_loop(tmp_path):
  state = _state(0)
  ckpt = _checkpointer(tmp_path, save_every_steps=5, total_steps=23)
  saved = [step for step in range(1, 24) if ckpt.save(step, state, meta={**MODEL, "step": step})]
  ckpt.wait()
  assert saved == [5, 10, 15, 20, 23]
  assert ckpt.all_steps() == [5, 10, 15, 20, 23]
  assert [s for s in range(0, 30) if ckpt.should_save(s)] == [5, 10, 15, 20, 23, 25]
  assert not ckpt.save(20, state, meta=MODEL, force=True)  # a step on disk is not written twice
  assert ckpt.save(21, state, meta=MODEL, force=True) and 21 in ckpt.all_steps()


@pytest.mark.parametrize("best_mode", ["max", "min"])
def test_keeps_the_last_n_plus_the_best(tmp_path, best_mode):
  state = _state(1)
  top1 = {5: 0.2, 10: 0.9, 15: 0.4, 20: None, 25: 0.1, 30: 0.3, 35: 0.5}  # None: saved without metrics
  best = 10 if best_mode == "max" else 25
  ckpt = _checkpointer(tmp_path, total_steps=100, max_to_keep=2, keep_best=True, best_mode=best_mode)
  for step, value in top1.items():
    ckpt.save(step, state, meta=MODEL, metrics=None if value is None else {"top1": value})
  ckpt.wait()
  assert ckpt.all_steps() == sorted({30, 35, best}) and ckpt.best_step() == best
  assert sorted(os.listdir(tmp_path / "checkpoints")) == sorted(str(s) for s in {30, 35, best})
  # A restarted run knows the best from disk and keeps it.
  ckpt = _checkpointer(tmp_path, total_steps=100, max_to_keep=2, keep_best=True, best_mode=best_mode)
  for step in (40, 45, 50):
    ckpt.save(step, state, meta=MODEL, metrics={"top1": 0.6 if best_mode == "max" else 0.15})
  ckpt.wait()
  assert ckpt.all_steps() == sorted({45, 50, best})
  with pytest.raises(ValueError, match="lack 'top1'"):
    ckpt.save(55, state, meta=MODEL, metrics={"loss": 1.0})


def _garbage_largest_array_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True) if os.path.isfile(f)]
  biggest = max(files, key=os.path.getsize)
  size = os.path.getsize(biggest)
  with open(biggest, "r+b") as f:  # Overwrite a few values, keep the length: orbax reads it back as wrong numbers.
    f.seek(size // 8)
    f.write(np.random.default_rng(0).bytes(size // 16))


def _truncate_manifest(step_dir):
  with open(os.path.join(step_dir, "state", "manifest.ocdbt"), "r+b") as f:
    f.truncate(7)


def _delete_array_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _garbage_meta(step_dir):
  with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
    f.write('{"model": "vit_t')


def _garbage_metrics(step_dir):
  with open(os.path.join(step_dir, "metrics", "metrics"), "w") as f:
    f.write('{"top1": ')


@pytest.mark.parametrize("damage,reason", [
    (_garbage_largest_array_file, "noise reads back with checksum"), (_truncate_manifest, "manifest"),
    (_delete_array_metadata, "no readable array metadata"), (_garbage_meta, "JSONDecodeError"),
    (_garbage_metrics, "JSONDecodeError")])
def test_damaged_newest_is_skipped_with_a_warning_and_moved_aside(tmp_path, caplog, damage, reason):
  # A [64,32] array of noise gets a data file of its own, which orbax reads back without complaint when damaged.
  states = {s: dict(_state(s), noise=jax.random.normal(jax.random.key(s), (64, 32))) for s in (5, 10)}
  ckpt = _checkpointer(tmp_path, keep_best=True)
  for step, state in states.items():
    ckpt.save(step, state, meta={**MODEL, "step": step}, metrics={"top1": step / 100})
  ckpt.close()
  newest = os.path.join(tmp_path, "checkpoints", "10")
  damage(newest)
  damaged_files = _snapshot(newest)
  with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
    ckpt = _checkpointer(tmp_path, keep_best=True)
    restored, meta = ckpt.restore_latest(_abstract(states[5]), expected_meta=MODEL)
  assert meta["step"] == 5
  _assert_equal(restored, states[5])
  assert any(newest in r.getMessage() and "skipped" in r.getMessage() and reason in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]
  moved = glob.glob(os.path.join(tmp_path, "checkpoints_corrupt", "10-*"))
  assert len(moved) == 1 and _snapshot(moved[0]) == damaged_files  # kept, byte for byte
  assert ckpt.all_steps() == [5]
  assert ckpt.save(10, states[10], meta={**MODEL, "step": 10}, metrics={"top1": 0.1})  # the step is free again
  ckpt.wait()
  assert ckpt.restore_latest(_abstract(states[5]), expected_meta=MODEL)[1]["step"] == 10


def test_every_checkpoint_damaged_raises_and_moves_nothing(tmp_path):
  state = _state(2)
  ckpt = _checkpointer(tmp_path)
  for step in (5, 10):
    ckpt.save(step, state, meta=MODEL)
  ckpt.close()
  for step in (5, 10):
    _truncate_manifest(os.path.join(tmp_path, "checkpoints", str(step)))
  before = _snapshot(tmp_path)
  with pytest.raises(RuntimeError, match="no checkpoint .* restores"):
    _checkpointer(tmp_path).restore_latest(_abstract(state), expected_meta=MODEL)
  assert _snapshot(tmp_path) == before


def test_partial_save_is_ignored_then_removed(tmp_path):
  state = _state(6)
  ckpt = _checkpointer(tmp_path)
  ckpt.save(5, state, meta={**MODEL, "step": 5})
  ckpt.close()
  # What a save killed before its commit leaves: a full-looking step under a tmp name.
  partial = tmp_path / "checkpoints" / "10.orbax-checkpoint-tmp"
  os.rename(tmp_path / "checkpoints" / "5", partial)
  ckpt = _checkpointer(tmp_path)
  assert ckpt.restore_latest(_abstract(state), expected_meta=MODEL) is None
  os.rename(partial, tmp_path / "checkpoints" / "5")
  os.makedirs(partial / "state")
  ckpt = _checkpointer(tmp_path)
  assert ckpt.restore_latest(_abstract(state), expected_meta=MODEL)[1]["step"] == 5
  assert partial.exists()
  ckpt.save(10, state, meta={**MODEL, "step": 10})
  ckpt.wait()
  assert not partial.exists() and ckpt.all_steps() == [5, 10]


def test_checkpoint_of_another_model_raises_and_leaves_the_workdir_alone(tmp_path):
  state = _state(7)
  ckpt = _checkpointer(tmp_path)
  ckpt.save(5, state, meta={"model": "resnet_toy"})
  ckpt.close()
  before = _snapshot(tmp_path)
  with pytest.raises(ValueError, match="'resnet_toy'.*'vit_toy'"):
    _checkpointer(tmp_path).restore_latest(_abstract(state), expected_meta=MODEL)
  other = dict(state, params={**state["params"], "head": {"kernel": jnp.zeros((6, 7), jnp.bfloat16)}})
  with pytest.raises(ValueError, match=r"params/head/kernel is \(6, 5\) bfloat16 there, \(6, 7\) bfloat16 here"):
    _checkpointer(tmp_path).restore_latest(_abstract(other), expected_meta={"model": "resnet_toy"})
  fewer = dict(state, params={"embedding": state["params"]["embedding"]})
  with pytest.raises(ValueError, match="it has params/head/kernel"):
    _checkpointer(tmp_path).restore_latest(_abstract(fewer), expected_meta={"model": "resnet_toy"})
  assert _snapshot(tmp_path) == before


def test_non_finite_state_is_not_saved(tmp_path):
  state = _state(8)
  ckpt = _checkpointer(tmp_path)
  ckpt.save(5, state, meta=MODEL)
  bad = dict(state, ema={**state["ema"], "embedding": {**state["ema"]["embedding"],
                                                       "bias": state["ema"]["embedding"]["bias"].at[2].set(jnp.nan)}})
  with pytest.raises(FloatingPointError, match=r"step 10: \['ema/embedding/bias'\].*newest checkpoint is step 5"):
    ckpt.save(10, bad, meta=MODEL)
  with pytest.raises(FloatingPointError, match=r"step 10: metrics \['top1'\]"):
    ckpt.save(10, state, meta=MODEL, metrics={"top1": float("inf")})
  ckpt.wait()
  assert ckpt.all_steps() == [5]


def test_checksum_sees_any_changed_word_and_ignores_the_sharding():
  sharded = _state(9)["params"]["embedding"]["kernel"]  # [8,6], one row per device
  checksum = lambda x: checksums.checksums(x)[0][""]  # noqa: E731
  reference = checksum(sharded)
  assert checksum(np.asarray(sharded)) == reference == checksum(jax.device_put(sharded, jax.devices()[5]))
  flat = sharded.reshape(-1)
  for i in range(flat.size):  # any single changed word moves the sum
    assert checksum(flat.at[i].set(flat[i] + 1.0).reshape(8, 6)) != reference
  structured = [sharded * 0.25, sharded * 0.5, sharded * 2.0, -sharded, sharded[::-1], sharded.T.reshape(8, 6),
                flat.at[jnp.array([0, 1])].set(flat[jnp.array([1, 0])]).reshape(8, 6)]  # scaled, flipped, swapped
  sums = [checksum(x) for x in structured]
  assert reference not in sums and len(set(sums)) == len(sums)


_KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax, jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity  # private: only to die at the worst moment
    from vit_video.train import checkpointing

    state = lambda step: {"w": jax.random.normal(jax.random.key(step), (512, 256)), "step": jnp.int32(step)}
    ckpt = checkpointing.Checkpointer(sys.argv[1], save_every_steps=5, total_steps=10, async_save=True)
    ckpt.save(5, state(5), meta={"model": "vit_toy", "step": 5})
    ckpt.wait()
    commit = atomicity.AtomicRenameTemporaryPath.finalize
    async def die_before_commit(self):  # every byte of step 10 is written; the commit rename is next
      if self.get_final().name == "10":
        os.kill(os.getpid(), signal.SIGKILL)
      return await commit(self)
    atomicity.AtomicRenameTemporaryPath.finalize = die_before_commit
    assert ckpt.save(10, state(10), meta={"model": "vit_toy", "step": 10})
    print("save returned", flush=True)
    ckpt.wait()
    print("not killed", flush=True)
""")


def test_sigkill_during_async_save_resumes_from_the_previous_checkpoint(tmp_path):
  directory = os.path.join(tmp_path, "checkpoints")
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, directory], env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
  assert "save returned" in proc.stdout and "not killed" not in proc.stdout  # killed in the background write
  # The complete step 5 and the uncommitted step 10 (orbax 0.12.8 names it "10.orbax-checkpoint-tmp").
  names = sorted(os.listdir(directory))
  assert len(names) == 2 and names[0].startswith("10.orbax-checkpoint-tmp") and names[1] == "5"
  expected = {"w": jax.random.normal(jax.random.key(5), (512, 256)), "step": jnp.int32(5)}
  ckpt = checkpointing.Checkpointer(directory, save_every_steps=5, total_steps=10)
  restored, meta = ckpt.restore_latest(_abstract(expected), expected_meta=MODEL)
  assert meta == {**MODEL, "step": 5}
  _assert_equal(restored, expected)
  assert ckpt.save(10, expected, meta={**MODEL, "step": 10})
  ckpt.wait()
  assert sorted(os.listdir(directory)) == ["10", "5"]


def test_restore_params_from_another_run(tmp_path):
  state = dict(_state(11), batch_stats={"bn": {"mean": jnp.arange(4.0)}})
  ckpt = _checkpointer(tmp_path)
  ckpt.save(5, _state(5), meta=MODEL)
  ckpt.save(10, state, meta=MODEL)
  ckpt.close()
  loaded = checkpointing.restore_params(tmp_path)  # the workdir: its newest step
  assert sorted(loaded) == ["batch_stats", "params"]
  _assert_equal(loaded, {"params": state["params"], "batch_stats": state["batch_stats"]})
  assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(loaded))
  from_step = checkpointing.restore_params(tmp_path / "checkpoints" / "5", {"params": _abstract(state["params"])})
  _assert_equal(from_step["params"], _state(5)["params"])
  assert from_step["params"]["embedding"]["kernel"].sharding == state["params"]["embedding"]["kernel"].sharding
  wrong = {"params": {**_abstract(state["params"]), "head": {"kernel": jax.ShapeDtypeStruct((6, 7), jnp.bfloat16)}}}
  with pytest.raises(ValueError, match=r"params/head/kernel is \(6, 5\) bfloat16 there, \(6, 7\) bfloat16 here"):
    checkpointing.restore_params(tmp_path / "checkpoints", wrong)
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    checkpointing.restore_params(tmp_path / "nothing_here")


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match=r"save_every_steps \(0\)"):
    checkpointing.Checkpointer("/tmp/unused", save_every_steps=0, total_steps=10)
  with pytest.raises(ValueError, match="best_mode"):
    checkpointing.Checkpointer("/tmp/unused", save_every_steps=1, total_steps=10, best_mode="top")


def test_relative_paths_work(tmp_path, monkeypatch):
  """orbax writes only to absolute paths; a relative workdir (as `make run` passes) must still work, async too."""
  monkeypatch.chdir(tmp_path)
  ckpt = checkpointing.Checkpointer(os.path.join("rel", "checkpoints"), save_every_steps=5, total_steps=10,
                                    async_save=True)
  assert ckpt.save(5, _state(5), meta=MODEL)
  ckpt.wait()
  restored, meta = ckpt.restore_latest(_abstract(_state(5)), expected_meta=MODEL)
  _assert_equal(restored, _state(5))
  _assert_equal(checkpointing.restore_params("rel")["params"], _state(5)["params"])
