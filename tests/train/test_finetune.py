"""train/finetune.py: `init_from(state, config, model)` from another run of the same family (a new resolution, a
.npz) and video models from image checkpoints as the papers do (ViViT and TimeSformer from a ViT, Video Swin from a
Swin, I3D from a ResNet), each checked by a property: the inflated kernels, and a clip of identical frames giving the
image model's logits; bad pairs refused naming both models, a hybrid ViT's parameters when read; the loop starting a
video run from an image run; an .npz of other sizes than config.model refused listing them; a run whose newest
checkpoint is damaged named with its other steps.

Image run folders are written here with `Checkpointer` from random parameters (so every weight matters), and the
video states are random too (`init_from` reads them as templates and keeps their head where it is replaced).
Sizes: clips of T=4 frames of 20x20, C=3 channels, K=7 classes, patch 4.
"""
import os
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models.helpers import noise, random_variables
from tests.train.test_loop import tiny_config
from vit_video import configs, models
from vit_video.layers.embed import resample_pos_embedding
from vit_video.train import checkpointing, finetune, loop, steps

T, S, C, K = 4, 20, 3, 7
TINY_VIT = dict(patch_size=4, width=16, depth=2, mlp_dim=24, num_heads=2)
TINY_SWIN = dict(width=16, depths=(2, 2), num_heads=(1, 2), mlp_ratio=2.0)
TINY_RESNET = dict(stage_sizes=(1, 1), width=4)


def config(name: str, overrides: dict, /, *, frames: int = T, channels: int = C, **init):
  """A base config for model `name` on clips of `frames` frames (0: images) of S x S, with `config.init` `init`."""
  c = configs.base_config()
  c.model_name, c.model, c.num_classes = name, overrides, K
  c.dataset.image_size, c.dataset.channels, c.video.num_frames, c.batch_size = S, channels, frames, 8
  for key, value in init.items():
    c.init[key] = value
  return c.lock()


def write_run(folder, name: str, variables: dict) -> str:
  """An image run's folder holding one checkpoint of `variables`, as the loop writes it (a TrainState)."""
  state = steps.TrainState(step=jnp.ones((), jnp.int32), params=variables["params"],
                           batch_stats=variables.get("batch_stats", {}), opt_state={}, ema_params={},
                           rng=jax.random.key_data(jax.random.key(0)))
  with checkpointing.Checkpointer(str(folder / "checkpoints"), save_every_steps=1, total_steps=1,
                                  async_save=False) as checkpointer:
    checkpointer.save(1, state, meta={"model": name, "step": 1})
  return str(folder)


def image_model(name: str, overrides: dict, size: int = S, channels: int = C, seed: int = 0):
  """(model, random variables) of an image model at size x size."""
  model = models.create_model(name, num_classes=K, in_channels=channels, **overrides)
  return model, random_variables(model, jnp.zeros((1, size, size, channels)), seed=seed)


def video_start(c):
  """(the video model, a fresh host state) for config `c`: random parameters, as `init_from` receives them."""
  model = models.create_model(c.model_name, num_classes=K, in_channels=c.dataset.channels, **c.model)
  variables = random_variables(model, jnp.zeros((1, c.video.num_frames, S, S, c.dataset.channels)), seed=1)
  return model, steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), opt_state={}, ema_params={},
                                 rng=jax.random.key_data(jax.random.key(0)))


def logits(model, variables, *inputs):
  return np.asarray(jax.jit(lambda v, *x: model.apply(v, *x, train=False))(variables, *inputs))


FRAME = noise((2, S, S, C), seed=3)  # [B,H,W,C]
SAME = jnp.repeat(FRAME[:, None], T, axis=1)  # [B,T,H,W,C]: a clip of identical frames


def test_vivit_from_a_vit_run_central_frame_tubelets_and_identical_frames_give_the_vit_logits(tmp_path):
  """Model 3 from a gap ViT: the tubelet kernel is the ViT's at the central frame and zero at the other; the
  temporal attention starts at zero, so a clip of identical frames gives the ViT's logits on the frame."""
  vit_model, vit_vars = image_model("vit_ti16", dict(TINY_VIT, pool="gap"))
  c = config("vivit_b16x2_fsa", dict(TINY_VIT, tubelet_depth=2), checkpoint=write_run(tmp_path, "vit_ti16", vit_vars),
             model_name="vit_ti16")
  model, state = video_start(c)
  params = finetune.init_from(state, c, model).params
  kernel, kernel_2d = np.asarray(params["embedding"]["kernel"]), vit_vars["params"]["embedding"]["kernel"]
  assert kernel.shape == (2, 4, 4, C, 16)
  np.testing.assert_array_equal(kernel[1], kernel_2d)  # t // 2 = 1: the central frame of a 2-frame tubelet
  np.testing.assert_array_equal(kernel[0], 0.0)
  expected = logits(vit_model, vit_vars, FRAME)
  assert np.abs(expected).max() > 0.1  # a random head: not 0 == 0
  np.testing.assert_allclose(logits(model, {"params": params}, SAME), expected, rtol=1e-4, atol=1e-5)


def test_timesformer_from_a_vit_npz_resamples_the_grid_and_identical_frames_give_the_vit_logits(tmp_path):
  """A vit_jax-layout .npz of a ViT at 28x28 (a 7x7 grid) initialises a divided TimeSformer on 20x20 frames (5x5):
  the position embedding is the ViT's resampled (class row kept), and identical frames give the ViT's logits at
  20x20 with that embedding."""
  _, vit_vars = image_model("vit_ti16", TINY_VIT, size=28)
  flat = flax.traverse_util.flatten_dict(vit_vars["params"], sep="/")
  path = str(tmp_path / "vit.npz")
  np.savez(path, **{("cls" if k == "cls/token" else k): np.asarray(v) for k, v in flat.items()})
  c = config("timesformer_b16_divided", dict(TINY_VIT, num_frames=T), checkpoint=path, model_name="vit_ti16",
             model=TINY_VIT)
  model, state = video_start(c)
  params = finetune.init_from(state, c, model).params
  pos = vit_vars["params"]["Transformer"]["posembed_input"]["pos_embedding"]  # [1,1+49,D]
  resampled = resample_pos_embedding(pos, (5, 5), num_prefix_tokens=1)  # [1,1+25,D]
  np.testing.assert_allclose(params["Transformer"]["posembed_input"]["pos_embedding"], resampled, rtol=1e-6)
  np.testing.assert_array_equal(params["Transformer"]["posembed_input"]["pos_embedding"][:, 0], pos[:, 0])
  assert not np.any(params["Transformer"]["encoderblock_1"]["Dense_time"]["kernel"])
  vit_model, _ = image_model("vit_ti16", TINY_VIT)
  at_20 = {"params": {**vit_vars["params"], "Transformer": {
      **vit_vars["params"]["Transformer"], "posembed_input": {"pos_embedding": resampled}}}}
  expected = logits(vit_model, at_20, FRAME)
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(logits(model, {"params": params}, SAME), expected, rtol=1e-4, atol=1e-5)


def test_video_swin_from_a_swin_run_averages_the_patch_kernel_and_identical_frames_give_the_swin_logits(tmp_path):
  swin_model, swin_vars = image_model("swin_t", dict(TINY_SWIN, window_size=3))
  c = config("video_swin_t", dict(TINY_SWIN, window_size=(2, 3, 3)),
             checkpoint=write_run(tmp_path, "swin_t", swin_vars), model_name="swin_t")
  model, state = video_start(c)
  params = finetune.init_from(state, c, model).params
  kernel_2d = swin_vars["params"]["embedding"]["kernel"]  # [4,4,C,D]
  np.testing.assert_allclose(params["embedding"]["kernel"], np.stack([kernel_2d / 2] * 2), rtol=1e-6)
  expected = logits(swin_model, swin_vars, FRAME)
  assert np.abs(expected).max() > 0.1
  np.testing.assert_allclose(logits(model, {"params": params}, SAME), expected, rtol=1e-4, atol=1e-4)


def test_i3d_from_a_resnet_run_central_frame_kernels_copy_batch_norm_and_give_the_resnet_logits(tmp_path):
  resnet_model, resnet_vars = image_model("resnet50", TINY_RESNET)
  c = config("i3d_r50", dict(TINY_RESNET, inflate=((1,), (1,)), nonlocal_after=((), ())),
             checkpoint=write_run(tmp_path, "resnet50", resnet_vars), model_name="resnet50", inflation="central_frame")
  model, state = video_start(c)
  tuned = finetune.init_from(state, c, model)
  kernel = np.asarray(tuned.params["conv1"]["kernel"])  # [5,7,7,C,4]
  np.testing.assert_array_equal(kernel[2], resnet_vars["params"]["conv1"]["kernel"])
  np.testing.assert_array_equal(kernel[[0, 1, 3, 4]], 0.0)
  jax.tree.map(np.testing.assert_array_equal, tuned.batch_stats, resnet_vars["batch_stats"])
  expected = logits(resnet_model, resnet_vars, FRAME)
  assert np.abs(expected).max() > 0.1
  variables = {"params": tuned.params, "batch_stats": tuned.batch_stats}
  np.testing.assert_allclose(logits(model, variables, SAME), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, source, message", [
    ("vivit_b16x2_fsa", "resnet18", r"a resnet18 checkpoint \(ResNet, init.model_name\) cannot initialise "
                                    r"vivit_b16x2_fsa \(ViViT\): it starts from a ViT checkpoint or one of its own"),
    ("i3d_r50", "swin_t", r"a swin_t checkpoint \(Swin, init.model_name\) cannot initialise i3d_r50 \(I3DResNet\): "
                          r"it starts from a ResNet checkpoint"),
    ("vit_ti16", "vivit_b16x2_st", r"cannot initialise vit_ti16 \(ViT\): it starts only from its own family"),
    ("vivit_b16x2_st", "vit_q16", r"unknown model 'vit_q16'"),
])
def test_bad_pairs_are_refused_naming_both_models(name, source, message):
  c = config(name, {}, checkpoint="/nonexistent/run", model_name=source)
  with pytest.raises(ValueError, match=message):
    finetune.init_from(None, c, None)  # refused before anything is read


def test_a_hybrid_vit_run_is_refused_by_the_vit_inflation(tmp_path):
  """A hybrid is a ViT (the right family), but its parameters start with a ResNet trunk: refused when read."""
  _, hybrid_vars = image_model("r_vit_ti16", dict(TINY_VIT, patch_size=1))  # the root's stride 4 x patch 1
  c = config("timesformer_b16_divided", dict(TINY_VIT, num_frames=T), model_name="r_vit_ti16",
             checkpoint=write_run(tmp_path, "r_vit_ti16", hybrid_vars))
  model, state = video_start(c)
  with pytest.raises(ValueError, match=r"a hybrid ViT \(ResNet 'stem' \+ ViT\) cannot initialise a TimeSformer"):
    finetune.init_from(state, c, model)


def tiny_fmnist_config(data_dir: str, **overrides):
  """test_loop's tiny ViT run on Fashion-MNIST (28x28, 1 channel), 3 steps and one checkpoint, locked."""
  base = {"total_steps": 3, "checkpoint.save_every_steps": 3, "optimizer.warmup_steps": 1}
  return tiny_config(data_dir, **{**base, **overrides}).lock()


@pytest.fixture(scope="module")
def source_run(tiny_fmnist, tmp_path_factory) -> tuple[str, dict]:
  """A tiny Fashion-MNIST run of 4 steps with checkpoints at steps 2 and 4: (its workdir, its final params)."""
  workdir = str(tmp_path_factory.mktemp("source"))
  c = tiny_fmnist_config(tiny_fmnist, total_steps=4, **{"checkpoint.save_every_steps": 2})
  return workdir, jax.device_get(loop.train_and_evaluate(c, workdir)[0].params)


def test_same_family_from_a_run_or_its_npz_resamples_the_position_embedding(tiny_fmnist, source_run, tmp_path):
  """A run at 28x28 (a 4x4 grid of 7x7 patches) fine-tuned at 35x35 (5x5): the blocks are the source's, the position
  embedding resampled with the class row kept; the same parameters as a vit_jax .npz give the same start (imported
  at the run's size, with its custom model attributes); the loop runs from it."""
  source, src = source_run
  c = tiny_fmnist_config(tiny_fmnist, total_steps=2, **{"init.checkpoint": source, "dataset.image_size": 35})
  trainer = loop.Trainer(c, total_steps=2)
  tuned = finetune.init_from(trainer.host_state(trainer.init(c.seed)), c, trainer.model).params
  block = lambda p: p["Transformer"]["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]  # noqa: E731
  np.testing.assert_array_equal(block(tuned), block(src))
  pe, src_pe = (p["Transformer"]["posembed_input"]["pos_embedding"] for p in (tuned, src))
  assert pe.shape == (1, 26, 16) and src_pe.shape == (1, 17, 16)
  np.testing.assert_array_equal(pe[0, 0], src_pe[0, 0])  # the class token's embedding is kept
  np.testing.assert_array_equal(tuned["head"]["kernel"], src["head"]["kernel"])  # the same 10 classes: loaded
  npz = str(tmp_path / "source.npz")
  flat = flax.traverse_util.flatten_dict(src, sep="/")
  np.savez(npz, **{("cls" if k == "cls/token" else k): np.asarray(v) for k, v in flat.items()})
  from_npz = finetune.init_from(trainer.host_state(trainer.init(c.seed)), tiny_fmnist_config(
      tiny_fmnist, **{"init.checkpoint": npz, "dataset.image_size": 35}), trainer.model).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), from_npz, tuned)
  reset = tiny_fmnist_config(tiny_fmnist, **{"init.checkpoint": source, "init.reset_head": True})
  assert not np.any(finetune.init_from(trainer.host_state(trainer.init(c.seed)), reset, trainer.model).params[
      "head"]["kernel"])
  state, _ = loop.train_and_evaluate(c, str(tmp_path / "tuned"))
  assert int(state.step) == 2


def test_the_loop_starts_a_video_run_from_an_image_run(tiny_moving_fmnist, tmp_path):
  """A ViViT run on moving Fashion-MNIST (1 channel) from a ViT run folder, trained at learning rate 0: its final
  tubelet kernel is the inflated ViT kernel, so the loop really started from the image checkpoint."""
  _, vit_vars = image_model("vit_ti16", TINY_VIT, channels=1)
  c = configs.moving_fmnist_config("motion", frames=4, stride=1, epochs=1, tiny=True, data_dir=tiny_moving_fmnist)
  c.model_name, c.model = "vivit_b16x2_st", dict(TINY_VIT, tubelet_depth=2)
  c.total_steps, c.optimizer.learning_rate, c.optimizer.warmup_steps = 2, 0.0, 0
  c.init.checkpoint, c.init.model_name = write_run(tmp_path / "image", "vit_ti16", vit_vars), "vit_ti16"
  state, _ = loop.train_and_evaluate(c.lock(), str(tmp_path / "video"))
  kernel = np.asarray(state.params["embedding"]["kernel"])  # [2,4,4,1,16]
  np.testing.assert_array_equal(kernel[1], vit_vars["params"]["embedding"]["kernel"])
  np.testing.assert_array_equal(kernel[0], 0.0)


def test_an_npz_of_other_sizes_than_config_model_is_refused_listing_what_differs(tmp_path):
  """The run's model is always the config's: a ViT .npz of patch 4 (written at 28x28, 7x7 tokens) loads into a run of
  the same sizes at 20x20 (its position embedding resampled to 5x5), and is refused by a run whose config.model has
  patch 5, or width 24, naming the arrays, the .npz's and the config's shapes, and what to do."""
  _, vit_vars = image_model("vit_ti16", TINY_VIT, size=28)
  flat = flax.traverse_util.flatten_dict(vit_vars["params"], sep="/")
  path = str(tmp_path / "vit.npz")
  np.savez(path, **{("cls" if k == "cls/token" else k): np.asarray(v) for k, v in flat.items()})
  c = config("vit_ti16", TINY_VIT, frames=0, checkpoint=path)
  model, fresh = image_model("vit_ti16", TINY_VIT, seed=1)
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=fresh["params"], batch_stats={}, opt_state={},
                           ema_params={}, rng=jax.random.key_data(jax.random.key(0)))
  params = finetune.init_from(state, c, model).params
  np.testing.assert_array_equal(params["embedding"]["kernel"], vit_vars["params"]["embedding"]["kernel"])
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 5 * 5, 16)
  fix = (r"\. To use it, set config\.model to the checkpoint's sizes, or leave init\.checkpoint empty to train from "
         r"scratch$")
  with pytest.raises(ValueError, match=(
      rf"^init\.checkpoint {path} does not fit this run's model, vit_ti16 with config\.model .*: sizes that differ "
      r"\(checkpoint vs model\): patch_size 4 vs 5; 1 checkpoint array\(s\) differ in shape \(checkpoint vs model\): "
      r"'embedding/kernel' \(4, 4, 3, 16\) vs \(5, 5, 3, 16\)" + fix)):
    finetune.init_from(None, config("vit_ti16", dict(TINY_VIT, patch_size=5), frames=0, checkpoint=path), None)
  with pytest.raises(ValueError, match=r"sizes that differ \(checkpoint vs model\): width 16 vs 24; 37 checkpoint "
                                       r"array\(s\) differ in shape \(checkpoint vs model\): "
                                       r"'Transformer/encoder_norm/bias' \(16,\) vs \(24,\), .* and 32 more" + fix):
    finetune.init_from(None, config("vit_ti16", dict(TINY_VIT, width=24), frames=0, checkpoint=path), None)


def test_a_run_whose_newest_checkpoint_is_damaged_names_that_step_and_the_others(tiny_fmnist, source_run, tmp_path):
  """A copy of the source run with the array data of its newest step (4) overwritten: init.checkpoint on the workdir
  or its checkpoints folder names step 4's folder and step 2, which loads when named as the message says."""
  workdir = tmp_path / "run"
  shutil.copytree(source_run[0], workdir)
  checkpoints = workdir / "checkpoints"
  assert sorted(os.listdir(checkpoints)) == ["2", "4"]
  data_files = list((checkpoints / "4" / "state").glob("**/d/*"))  # OCDBT's data files: d/ and ocdbt.process_0/d/
  assert data_files
  for f in data_files:
    f.write_bytes(b"\xff" * f.stat().st_size)
  for path in (workdir, checkpoints):
    c = tiny_fmnist_config(tiny_fmnist, **{"init.checkpoint": str(path)})
    with pytest.raises(ValueError, match=(
        rf"^checkpoint {checkpoints / '4'} cannot be read: it looks damaged \(.*\)\. Nothing was moved or deleted; "
        rf"the other steps in {checkpoints} are 2: name one's folder to start from it, e.g\. "
        rf"init\.checkpoint={checkpoints / '2'}$")):
      finetune.init_from(None, c, None)
  step_2 = checkpointing.restore_params(checkpoints / "2")["params"]
  assert jax.tree.structure(step_2) == jax.tree.structure(source_run[1])
  assert np.any(step_2["embedding"]["kernel"] != source_run[1]["embedding"]["kernel"])  # two steps before the end
