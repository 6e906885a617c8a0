"""The training system end to end: parallelism equivalence, resume, refusing another model's checkpoint, NaN
losses, and bad input (fine-tuning: test_finetune.py; non-local workdirs: test_run_folder.py).

Runs on 8 forced CPU devices (conftest.py) with a tiny ViT on a tiny prepared Fashion-MNIST copy.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.experiment_files import get_config
from vit_video.train import loop
from vit_video.train.run_folder import RunFolder


def tiny_config(data_dir: str, **overrides):
  """The README's experiment at toy size: 16 patches of 7x7, width 16, one block."""
  c = get_config("vit_fashion_mnist", "variant=vit_t4,quick")
  c.model.update(patch_size=7, width=16, depth=1, num_heads=2, mlp_dim=24, pool="token")
  c.dataset.data_dir = data_dir
  c.batch_size, c.total_steps, c.log_every_steps = 16, 12, 1
  c.checkpoint.save_every_steps, c.checkpoint.async_save = 5, False
  c.optimizer.warmup_steps, c.optimizer.learning_rate = 2, 1e-2
  c.augment.crop_padding = 0  # the toy data's class is a bar's row: shifting rows would change it
  c.progress_bar = "off"
  for key, value in overrides.items():
    target = c
    *path, leaf = key.split(".")
    for p in path:
      target = target[p]
    target[leaf] = value
  return c


def _losses(config, devices=None, num_steps=3, count_flops=False):
  """(losses of `num_steps` steps on random batches, XLA's GFLOP of the global batch's train step if
  `count_flops`, else None)."""
  from vit_video.train import parallel  # noqa: PLC0415
  trainer = loop.Trainer(config, total_steps=10, devices=devices)
  state = trainer.init(config.seed)
  rng = np.random.default_rng(1)
  losses, gflop = [], None
  for _ in range(num_steps):
    host = {"image": rng.normal(size=(config.batch_size, 28, 28, 1)).astype(np.float32),
            "label": rng.integers(0, 10, config.batch_size).astype(np.int32)}
    batch = parallel.host_batch_to_global(host, trainer.layout)
    if count_flops and gflop is None:  # compiles the steps as the loop does: one compile gives losses and count
      gflop = trainer.compile(state, batch)[0] / 1e9
    state, metrics = trainer.train_step(state, batch)
    metrics = jax.device_get(metrics)
    losses.append(float(np.ravel(metrics["loss"])[0]))
  return np.array(losses), gflop


@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_jit_pmap_fsdp_and_one_device_give_the_same_losses(tiny_fmnist, model):
  make = tiny_config if model == "vit" else _resnet_config  # ResNet: BatchNorm statistics must be global too
  configs = {name: make(tiny_fmnist, **over)
             for name, over in {"one": {}, "jit": {}, "pmap": {"parallelism": "pmap"}, "fsdp": {"fsdp": True}}.items()}
  count = model == "vit"  # FLOP accounting counts the whole global batch under every layout (fsdp aside)
  one, one_gflop = _losses(configs["one"], devices=jax.devices()[:1], count_flops=count)
  assert np.all(np.isfinite(one)) and one[0] != one[-1]
  for name in ("jit", "pmap", "fsdp"):
    losses, gflop = _losses(configs[name], count_flops=count and name != "fsdp")
    np.testing.assert_allclose(losses, one, rtol=2e-5, err_msg=name)
    if gflop is not None:
      assert gflop == pytest.approx(one_gflop, rel=0.2), (name, gflop, one_gflop)


def _resnet_config(data_dir, **overrides):
  c = tiny_config(data_dir, **overrides)
  with c.unlocked():
    c.model_name = "resnet18"
    c.model = {"width": 8, "stage_sizes": (1, 1), "block": "basic"}
  return c.lock()


def test_end_to_end_train_eval_checkpoint_resume(tiny_fmnist, tmp_path, monkeypatch):
  config = tiny_config(tiny_fmnist, **{"checkpoint.max_to_keep": 1, "checkpoint.async_save": True})
  monkeypatch.chdir(tmp_path)  # a relative workdir, as `make run` passes
  state, summary = loop.train_and_evaluate(config, "run")
  workdir = str(tmp_path / "run")
  assert int(state.step) == 12
  assert json.load(open(os.path.join(workdir, "summary.json"))) == pytest.approx(summary)
  assert summary["eval_count"] == 70 and summary["train_gflop_per_step"] > 0
  assert summary["train_gflop_total"] == pytest.approx(12 * summary["train_gflop_per_step"])
  # It learns: chance is top-1 0.1 and loss ln(10) = 2.30.
  assert summary["eval_top1"] > 0.2 and summary["eval_loss"] < 2.1, summary
  records = RunFolder(workdir).read_metrics()
  assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 13))
  assert json.load(open(os.path.join(workdir, "config.json")))["model"]["width"] == 16
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  # Keep the newest 1 plus the best evaluated one: both are step 12, the only checkpoint left.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12"]
  # Re-running a finished run trains nothing and reports the same evaluation.
  again, again_summary = loop.train_and_evaluate(config, workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(again.params), jax.device_get(state.params))
  assert json.load(open(os.path.join(workdir, "summary.json")))["eval_top1"] == summary["eval_top1"]
  assert again_summary["eval_top1"] == summary["eval_top1"]
  assert RunFolder(workdir).read_metrics() == records




def test_checkpoint_of_another_model_is_refused_and_kept(tiny_fmnist, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=5), workdir)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config_json = open(os.path.join(workdir, "config.json")).read()
  other = tiny_config(tiny_fmnist, total_steps=8, **{"model.depth": 2})
  with pytest.raises(ValueError, match=r"holds a run of another config \(model.depth: 1 there, 2 here\)"):
    loop.train_and_evaluate(other, workdir)
  with pytest.raises(ValueError, match=r"model_name: 'vit_ti16' there, 'resnet18' here"):
    loop.train_and_evaluate(_resnet_config(tiny_fmnist, total_steps=8), workdir)
  assert open(os.path.join(workdir, "config.json")).read() == config_json
  os.remove(os.path.join(workdir, "config.json"))  # without it, the checkpoints themselves refuse another model
  with pytest.raises(ValueError, match="encoderblock_1"):
    loop.train_and_evaluate(other, workdir)
  with pytest.raises(ValueError, match="resnet18"):
    loop.train_and_evaluate(_resnet_config(tiny_fmnist, total_steps=8), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert not os.path.exists(os.path.join(workdir, "config.json"))
  with pytest.raises(ValueError, match="checkpoint at step 5, past this config's 3 steps"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=3), workdir)


def test_nan_loss_stops_at_the_step_and_keeps_the_last_good_checkpoint(tiny_fmnist, tmp_path, monkeypatch):
  # A real divergence is named at its step.
  diverging = tiny_config(tiny_fmnist, **{"optimizer.learning_rate": 1e30, "optimizer.grad_clip_norm": 0.0,
                                          "optimizer.warmup_steps": 0, "optimizer.name": "sgd"})
  with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step \d+"):
    loop.train_and_evaluate(diverging, str(tmp_path / "diverging"))
  # Parameters that turn NaN at step 7, after the checkpoint at step 5: the run stops naming step 7 and the
  # checkpoint of step 5 stays, finite.
  make_train_step = loop.steps.make_train_step

  def poisoned(*args, **kwargs):
    inner = make_train_step(*args, **kwargs)

    def train_step(state, batch):
      new, metrics = inner(state, batch)
      bad = state.step >= 6
      params = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), new.params)
      return new.replace(params=params), {**metrics, "loss": jnp.where(bad, jnp.nan, metrics["loss"])}
    return train_step

  monkeypatch.setattr(loop.steps, "make_train_step", poisoned)
  workdir = str(tmp_path / "run")
  with pytest.raises(FloatingPointError, match=r"loss is nan at step 7; .*last good checkpoint \(step 5\)"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["5"]
  from vit_video.train import checkpointing  # noqa: PLC0415
  params = checkpointing.restore_params(workdir)["params"]
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(params))


def test_bad_input_fails_early_with_clear_errors(tiny_fmnist, tmp_path):
  with pytest.raises(ValueError, match="global batch size 12 is not divisible by the 8 devices"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist, batch_size=12), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="python -m vit_video.data.prepare fashion_mnist_local"):
    loop.train_and_evaluate(tiny_config(str(tmp_path / "empty")), str(tmp_path / "b"))
  with pytest.raises(AttributeError):  # locked config: a typo cannot be set
    tiny_config(tiny_fmnist).optimizer.learning_rat = 1.0
  with pytest.raises(ValueError, match="dtype must be one of"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist, dtype="float16"), str(tmp_path / "c"))
  with pytest.raises(ValueError, match="set total_steps > 0, or total_steps = 0 and num_epochs > 0; got total_steps "
                     "-5"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=-5), str(tmp_path / "d"))
  with pytest.raises(ValueError, match="got total_steps 0, num_epochs 0"):
    loop.train_and_evaluate(tiny_config(tiny_fmnist, total_steps=0, num_epochs=0), str(tmp_path / "e"))
  assert not os.path.exists(tmp_path / "d") and not os.path.exists(tmp_path / "e")


def test_a_failure_after_a_save_waits_for_the_checkpoint_in_flight(tiny_fmnist, tmp_path, monkeypatch):
  """An exception right after an async save started (here raised where the loop advances past step 4) surfaces
  only once that checkpoint committed: no `4.orbax-checkpoint-tmp` is left for the next start to discard."""
  from vit_video.train import writers  # noqa: PLC0415
  config = tiny_config(tiny_fmnist, total_steps=6, **{"checkpoint.save_every_steps": 4,
                                                      "checkpoint.async_save": True})
  advance = writers.RunWriter.advance

  def fail_after_the_save(self, step):
    advance(self, step)
    if step == 4:
      raise RuntimeError("failed right after the save of step 4")

  monkeypatch.setattr(writers.RunWriter, "advance", fail_after_the_save)
  workdir = tmp_path / "run"
  with pytest.raises(RuntimeError, match="right after the save of step 4"):
    loop.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4"]


@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_program_abstract_state_is_what_init_returns(tiny_fmnist, model):
  """build_program writes the abstract state down from one trace of model.init; it must be exactly `init`'s."""
  make = tiny_config if model == "vit" else _resnet_config  # ResNet: BatchNorm statistics in the state
  config = make(tiny_fmnist, ema_decay=0.9)
  program = loop.build_program(config, 10)
  traced = jax.eval_shape(program.init, jax.random.key(0))
  assert jax.tree.structure(traced) == jax.tree.structure(program.abstract_state)
  assert jax.tree.leaves(traced) == jax.tree.leaves(program.abstract_state)
