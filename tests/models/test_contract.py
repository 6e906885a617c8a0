"""The model contract (vit_video/models/__init__.py) for every name in MODELS, through `jax.eval_shape` only.

For each name: the declared ClassVars (`inputs`, `head`, `batch_norm`) are well formed; inputs built from `inputs`
(`models.input_shapes`, with sizes from the FRAMES table below, small and all different) give float32 logits [B,K]
with K=7 under bfloat16 compute and a classifier `params[head]` of 7 outputs; K=0 gives float32 features [B,D] and
no classifier; `batch_stats` is kept exactly when `batch_norm` says so; `train` is keyword-only without a default;
an image or clip with another channel count than `in_channels` raises ValueError. LRCN, whose `batch_norm` is True
for its ResNet backbones only, is checked with one; its default backbone, which keeps no `batch_stats`, separately.
"""
import dataclasses
import inspect

import jax
import jax.numpy as jnp
import pytest

from vit_video import models
from vit_video.models import bit, c3d, convnext, i3d, lrcn, resnet, swin, timesformer, two_stream, video_cnn, video_swin
from vit_video.models import mvit, vit, vivit, vtn

B, K = 2, 7
INPUT_NAMES = {"image", "video", "flow"}

_MVIT_BLOCKS = {k: v[:2] for k, v in mvit.torchvision_blocks(v2=True).items()}  # MViT's depth: its block columns

# Family -> (attribute overrides, model -> (T, H, W) of its inputs). The overrides cut the depth, which is all that
# tracing time grows with (the contract does not depend on it); sizes come from the model where its attributes fix
# them (classic CNNs flatten their last feature map, ViTs need whole patches).
FRAMES = {
    vit.ViT: (dict(depth=1), lambda m: (1, 2 * _vit_patch(m), 3 * _vit_patch(m))),
    resnet.ResNet: (dict(stage_sizes=(1, 1)), lambda m: (1, 20, 28)),
    bit.BiT: (dict(stage_sizes=(1, 1)), lambda m: (1, 20, 28)),
    swin.Swin: (dict(depths=(1, 1), num_heads=(1, 2)), lambda m: (1, 20, 28)),
    convnext.ConvNeXt: (dict(depths=(1, 1), dims=(8, 16)), lambda m: (1, 20, 28)),
    video_cnn.SingleFrame: ({}, lambda m: (3, *m.image_size)),
    video_cnn.LateFusion: ({}, lambda m: (m.num_frames if m.fusion == "fc" else 3, *m.image_size)),
    video_cnn.EarlyFusion: ({}, lambda m: (m.num_frames, *m.image_size)),
    video_cnn.SlowFusion: ({}, lambda m: (m.num_frames, *m.image_size)),
    c3d.C3D: ({}, lambda m: tuple(m.input_size)),
    i3d.I3DResNet: ({}, lambda m: (4, 20, 28)),
    # The ResNet backbone, which keeps batch_stats (the default convnet keeps none: the LRCN test below).
    lrcn.LRCN: (dict(backbone="resnet18", resnet_width=8), lambda m: (3, 20, 28)),
    two_stream.TwoStream: ({}, lambda m: (m.num_frames, *m.image_size)),
    vivit.ViViT: (dict(depth=1, temporal_depth=1), lambda m: (2 * m.tubelet_depth, 2 * m.patch_size, 3 * m.patch_size)),
    timesformer.TimeSformer: (dict(depth=1), lambda m: (3, 2 * m.patch_size, 3 * m.patch_size)),
    video_swin.VideoSwin: (dict(depths=(1, 1), num_heads=(1, 2)), lambda m: (4, 20, 28)),
    mvit.MViT: (dict(_MVIT_BLOCKS, input_size=(2, 32, 48)), lambda m: tuple(m.input_size)),
    mvit.MViTImage: (dict(_MVIT_BLOCKS, input_size=(1, 32, 48)), lambda m: tuple(m.input_size)),
    # A ResNet backbone, which keeps batch_stats (a ViT backbone keeps none: tests/models/test_vtn.py).
    vtn.VTN: (dict(backbone="resnet18", backbone_overrides=dict(stage_sizes=(1, 1), width=8), width=8,
                   temporal_depth=1, num_heads=2, mlp_dim=8, head_mlp_dim=8), lambda m: (3, 20, 28)),
}


def _vit_patch(model) -> int:
  """Pixels per token side: the patch times a hybrid trunk's stride."""
  stages = model.stem_stage_sizes
  return model.patch_size * (1 if stages is None else 4 * 2 ** max(len(stages) - 1, 0))


def _inputs(cls, model, channels: int | None = None) -> list[jax.ShapeDtypeStruct]:
  """A batch of the model's inputs, with `channels` (default `in_channels`) in its images or clips."""
  t, h, w = FRAMES[cls][1](model)
  shapes = models.input_shapes(cls, frames=t, height=h, width=w, channels=channels or model.in_channels)
  return [jax.ShapeDtypeStruct((B, *shape), jnp.float32) for shape in shapes]


def _init(model, inputs, **kwargs):
  return jax.eval_shape(lambda *x: model.init_with_output(jax.random.key(0), *x, **kwargs), *inputs)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_keeps_the_contract(name):
  cls = models.model_class(name)
  assert cls in FRAMES, f"{name}: its family {cls.__name__} has no entry in FRAMES (tests/models/test_contract.py)"
  fields = {f.name for f in dataclasses.fields(cls)}
  assert {"num_classes", "in_channels", "dtype", "param_dtype"} <= fields, name
  assert cls.inputs and set(cls.inputs) <= INPUT_NAMES and len(set(cls.inputs)) == len(cls.inputs), cls.inputs
  assert {"inputs", "head", "batch_norm"}.isdisjoint(fields), "the contract's ClassVars must not be fields"
  assert isinstance(cls.head, str) and isinstance(cls.batch_norm, bool)
  assert cls.batch_norm == ("axis_name" in fields), f"{name}: batch_norm is {cls.batch_norm}; axis_name is " \
                                                    f"{'' if 'axis_name' in fields else 'not '}a field"
  call = inspect.signature(cls.__call__).parameters
  assert call["train"].kind is inspect.Parameter.KEYWORD_ONLY and call["train"].default is inspect.Parameter.empty
  positional = [p for p in call.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD][1:]  # after self
  assert len(positional) == len(cls.inputs), f"{name}: __call__ takes {positional}, inputs are {cls.inputs}"

  overrides = FRAMES[cls][0]
  model = models.create_model(name, num_classes=K, dtype=jnp.bfloat16, **overrides)
  inputs = _inputs(cls, model)
  logits, variables = _init(model, inputs, train=False)
  assert logits.shape == (B, K) and logits.dtype == jnp.float32, (logits.shape, logits.dtype)
  head = variables["params"][cls.head]
  for path, leaf in jax.tree_util.tree_leaves_with_path(head):
    assert leaf.shape[-1] == K, f"{name}: {cls.head}{jax.tree_util.keystr(path)} has shape {leaf.shape}"
  assert ("batch_stats" in variables) == cls.batch_norm, sorted(variables)

  features, variables = _init(models.create_model(name, num_classes=0, dtype=jnp.bfloat16, **overrides), inputs,
                              train=False)
  assert features.ndim == 2 and features.shape[0] == B and features.shape[1] > 0 and features.dtype == jnp.float32
  assert cls.head not in variables["params"], sorted(variables["params"])

  with pytest.raises(TypeError, match="train"):
    _init(model, inputs)
  with pytest.raises(ValueError):  # in_channels is checked against the input
    _init(model, _inputs(cls, model, channels=model.in_channels + 1), train=False)


def test_lrcn_keeps_batch_stats_only_with_a_resnet_backbone():
  """The contract's one exception to `batch_norm` (stated in its docstring): the default convnet backbone has no
  BatchNorm, and keeps no `batch_stats`."""
  assert "LRCN and VTN only with a ResNet backbone" in " ".join(models.__doc__.split())
  model = models.create_model("lrcn", num_classes=K)
  assert model.backbone == "convnet" and lrcn.LRCN.batch_norm
  (clip,) = models.input_shapes(lrcn.LRCN, frames=3, height=model.image_size[0], width=model.image_size[1],
                                channels=model.in_channels)
  _, variables = _init(model, [jax.ShapeDtypeStruct((B, *clip), jnp.float32)], train=False)
  assert "batch_stats" not in variables, sorted(variables)
