"""vit_video.train.checkpoint_mirror: checkpoints on a filesystem orbax cannot write (TensorFlow's ram:// through
etils.epath, tests/ram_fs.py) go through a local mirror: whole uploads, retention, partial uploads, damaged steps."""
from etils import epath

from tests import ram_fs
from tests.train.test_checkpointing import MODEL, _abstract, _assert_equal, _checkpointer, _state
from vit_video.train import checkpoint_mirror, checkpointing


def test_orbax_writes_local_folders_and_gcs_itself():
  assert checkpoint_mirror.orbax_native(epath.Path("/tmp/run/checkpoints"))
  assert checkpoint_mirror.orbax_native(epath.Path("gs://bucket/run/checkpoints"))
  assert not checkpoint_mirror.orbax_native(epath.Path(ram_fs.new_folder()))
  assert not checkpoint_mirror.orbax_native(epath.Path("s3://bucket/run/checkpoints"))



def _remote_steps(directory) -> dict[str, list[str]]:
  """{entry: its files} of a checkpoints folder on any filesystem."""
  root = epath.Path(directory)
  return {p.name: sorted(c.name for c in p.iterdir()) for p in root.iterdir()} if root.exists() else {}


def test_a_filesystem_orbax_cannot_write_goes_through_the_mirror():
  """A ram:// checkpoints folder (TensorFlow's in-memory filesystem through epath; orbax writes only local and
  gs://): saves are uploaded whole with their marker, retired steps deleted, a restart restores from it, and
  restore_params reads a run there."""
  workdir = ram_fs.new_folder()
  ckpt = _checkpointer(workdir, max_to_keep=2, async_save=True)  # async is turned off: uploads follow the commit
  for step in (5, 10, 15):
    assert ckpt.save(step, _state(step), meta={**MODEL, "step": step})
  ckpt.close()
  remote = _remote_steps(f"{workdir}/checkpoints")
  assert sorted(remote) == ["10", "15"]  # step 5 retired on both sides
  assert all(checkpoint_mirror.UPLOADED in files and "state" in files for files in remote.values())
  ckpt = _checkpointer(workdir, max_to_keep=2)
  restored, meta = ckpt.restore_latest(_abstract(_state(15)), expected_meta=MODEL)
  assert meta["step"] == 15
  _assert_equal(restored, _state(15))
  ckpt.close()
  _assert_equal(checkpointing.restore_params(workdir)["params"], _state(15)["params"])
  _assert_equal(checkpointing.restore_params(f"{workdir}/checkpoints/10")["params"], _state(10)["params"])


def test_a_partial_upload_is_never_read_and_is_replaced():
  """A kill during an upload leaves a step folder without the marker: restores skip it, the next sync replaces
  it. A damaged uploaded step is moved aside on the remote side too."""
  workdir = ram_fs.new_folder()
  ckpt = _checkpointer(workdir)
  for step in (5, 10):
    ckpt.save(step, _state(step), meta={**MODEL, "step": step})
  ckpt.close()
  checkpoints = epath.Path(workdir) / "checkpoints"
  (checkpoints / "10" / checkpoint_mirror.UPLOADED).unlink()  # as if killed before the marker
  ckpt = _checkpointer(workdir)
  assert ckpt.restore_latest(_abstract(_state(5)), expected_meta=MODEL)[1]["step"] == 5
  assert ckpt.save(10, _state(11), meta={**MODEL, "step": 10})  # step 10 is free: its upload never completed
  ckpt.close()
  assert checkpoint_mirror.UPLOADED in _remote_steps(checkpoints)["10"]
  _assert_equal(checkpointing.restore_params(workdir)["params"], _state(11)["params"])
  manifest = checkpoints / "10" / "state" / "manifest.ocdbt"
  manifest.write_bytes(manifest.read_bytes()[:7])  # as _truncate_manifest does to a local step
  ckpt = _checkpointer(workdir)
  assert ckpt.restore_latest(_abstract(_state(5)), expected_meta=MODEL)[1]["step"] == 5
  ckpt.close()
  assert sorted(_remote_steps(checkpoints)) == ["5"]
  moved = list((epath.Path(workdir) / "checkpoints_corrupt").iterdir())
  assert len(moved) == 1 and moved[0].name.startswith("10-") and (moved[0] / "state").exists()
