"""saliency: properties of the gradient methods and Grad-CAM on small real models, and a smoke test on every family.

Sizes all differ: B=3 examples; clips T=5 (two-stream T=4), H=12, W=10, C=2; images 20x28 (ViT 12x8).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import saliency as pair_saliency  # PAIR's package, the reference for integrated gradients (test extras)

from tests.visualize import tiny
from vit_video import models
from vit_video.visualize import hooks, saliency

B = 3


def _randomise(variables, key="head"):
  """The classifier's zero-initialised kernel replaced by a random one, so that the logits depend on the input."""
  params = dict(variables["params"])
  kernel = params[key]["kernel"]
  params[key] = {**params[key], "kernel": jax.random.normal(jax.random.key(7), kernel.shape) / 3}
  return {**variables, "params": params}


def _vit():
  """A 2-block ViT with a random head and O(1) random position embeddings (a trained model's scale). At init they
  are ~0.02, and LayerNorm of alpha * patch embedding is nearly scale-free, so the integrated-gradients path jumps
  near alpha = 0: completeness errors of 0.09 at 64 steps and 2e-4 at 512 (differences 0.27 to 1.2)."""
  model = models.create_model("vit_ti16", num_classes=5, depth=2, width=8, num_heads=2, mlp_dim=12, patch_size=4,
                              in_channels=3)
  x = jax.random.normal(jax.random.key(1), (B, 12, 8, 3))  # 3x2 patches of 4x4
  variables = _randomise(model.init(jax.random.key(0), x, train=False))
  pos = variables["params"]["Transformer"]["posembed_input"]["pos_embedding"]
  variables["params"]["Transformer"] = {**variables["params"]["Transformer"], "posembed_input": {
      "pos_embedding": jax.random.normal(jax.random.key(9), pos.shape)}}
  return model, variables, x


def _two_stream(**overrides):
  """The package's two-stream model at toy size: T=4 frames of 12x10x2, flow [B,12,10,6]; rgb_input='middle'."""
  model = models.create_model("two_stream", num_classes=5, num_frames=4, image_size=(12, 10), widths=(4, 6),
                              kernel_sizes=(3, 3), strides=(1, 1), pools=(True, True), fc_widths=(8,),
                              in_channels=2, **overrides)
  clip = jax.random.normal(jax.random.key(2), (B, 4, 12, 10, 2))
  flow = jax.random.normal(jax.random.key(3), (B, 12, 10, 6))
  return model, model.init(jax.random.key(0), clip, flow, train=False), clip, flow


class _Ignoring(nn.Module):
  """`inner` on an input whose pixels under `mask` ([H,W], True: ignored) are set to zero first."""
  inner: nn.Module
  mask: np.ndarray

  @nn.compact
  def __call__(self, x, *, train):
    return self.inner(jnp.where(self.mask[:, :, None], 0.0, x), train=train)


class _GapCNN(nn.Module):
  """Two bias-free 3x3 convs with ReLU (the layer "features"), global average pooling and a linear head: Grad-CAM
  is then CAM (Zhou et al. 2016), relu(sum_c W_ck A_c) / cells. per_frame: 2D convs on [B*T,H,W,C] (the LRCN
  way); else 3D convs of temporal extent 2 on [B,T,H,W,C], or 2D convs on an image."""
  per_frame: bool = False

  @nn.compact
  def __call__(self, x, *, train):
    del train
    b = x.shape[0]
    if self.per_frame:
      x = x.reshape(-1, *x.shape[2:])  # [B,T,H,W,C] -> [(B T),H,W,C]
    kernel = (2, 3, 3) if x.ndim == 5 else (3, 3)
    features = _Features(kernel, name="features")(x)  # [B,(t,)h,w,D] or [(B T),h,w,D]
    pooled = features.reshape(b, -1, features.shape[-1]).mean(axis=1)  # [B,D]
    return nn.Dense(4, name="head")(pooled)


class _Features(nn.Module):
  kernel: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    padding = "SAME" if len(self.kernel) == 2 else ((0, 0), (1, 1), (1, 1))
    x = nn.relu(nn.Conv(5, self.kernel, padding=padding, use_bias=False)(x))
    return nn.relu(nn.Conv(6, self.kernel, padding=padding, use_bias=False)(x))


# ---------------------------------------------------------------------------------------------------- gradients


def test_integrated_gradients_are_complete_on_a_vit():
  """sum(attributions) = score(x) - score(x'): GELU and softmax make the path integrand smooth, so the trapezoid
  rule's error falls as 1/steps^2 (measured: 1e-3 at 16 steps, 6e-5 at 64, 4e-6 at 256); at 64 steps it is
  within 2e-4 of the difference (0.03 to 0.5 here), from a zero and from a random baseline."""
  model, variables, x = _vit()
  score = hooks.objective(model, variables, index=2)
  baseline = jax.random.uniform(jax.random.key(5), x.shape) - 0.5
  for x0 in (jnp.zeros_like(x), baseline):
    total, difference = _completeness(score, [x], [x0], steps=64)
    assert np.abs(difference).min() > 0.02, difference  # a real difference to explain
    np.testing.assert_allclose(total, difference, atol=2e-4)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _completeness(score, inputs, baselines, steps):
  """The attributions' sum over all inputs and the score's difference, per example: ([B], [B])."""
  attributions = saliency.integrated_gradients(score, *inputs, baselines=baselines, steps=steps)
  assert [a.shape for a in attributions] == [x.shape for x in inputs]
  total = sum(a.reshape(a.shape[0], -1).sum(axis=1) for a in attributions)
  return total, score(*inputs) - score(*baselines)


def test_integrated_gradients_are_complete_over_both_two_stream_inputs():
  """The clip's and the flow's attributions together sum to the score's change (0.5 to 0.65 here): within 1e-4 at
  64 steps, the error falling as 1/steps^2 (measured: 3e-4 at 16 steps, 2e-5 at 64, 1.4e-6 at 256). The
  trapezoid rule, whose end point at the zero input sits on every ReLU's and max pool's kink, was 1e-2 at 64."""
  model, variables, clip, flow = _two_stream()
  score = hooks.objective(model, variables, index=1)
  zeros = [jnp.zeros_like(clip), jnp.zeros_like(flow)]
  (total_16, difference), (total_64, _) = (_completeness(score, [clip, flow], zeros, s) for s in (16, 64))
  errors = np.abs(total_16 - difference).max(), np.abs(total_64 - difference).max()
  assert errors[1] <= 1e-4, (errors, difference)
  assert errors[1] < errors[0] / 4, errors


def test_integrated_gradients_match_pair_saliency_on_one_example():
  """PAIR's IntegratedGradients averages the gradient at linspace(0, 1, n) of its path, both ends included; on
  the path from x' + (x - x') / 2n to x - (x - x') / 2n those are our midpoints, so PAIR's mask there times
  n / (n - 1) (its shorter path) is ours, to float32 rounding."""
  model, variables, x = _vit()
  score = hooks.objective(model, variables, index=3)
  grad = jax.jit(lambda x: saliency.vanilla_gradient(score, x)[0])

  def call_model(batch, call_model_args=None, expected_keys=None):
    del call_model_args, expected_keys
    return {pair_saliency.core.INPUT_OUTPUT_GRADIENTS: np.asarray(grad(jnp.asarray(batch, jnp.float32)))}

  n, one = 24, np.asarray(x[1])
  baseline = np.asarray(jax.random.uniform(jax.random.key(5), one.shape)) - 0.5
  half_step = (one - baseline) / (2 * n)
  pair = pair_saliency.core.IntegratedGradients().GetMask(one - half_step, call_model, x_steps=n, batch_size=n,
                                                          x_baseline=baseline + half_step)
  (ours,) = saliency.integrated_gradients(score, x[1:2], baselines=[baseline[None]], steps=n)
  np.testing.assert_allclose(pair * n / (n - 1), ours[0], rtol=1e-4, atol=1e-5 * np.abs(pair).max())


def test_a_region_the_model_ignores_gets_exactly_zero_attribution():
  """A ResNet behind a wrapper that zeroes the top-left 8x12 pixels: every method gives exactly 0 there, and
  something elsewhere."""
  mask = np.zeros((20, 28), bool)
  mask[:8, :12] = True
  inner = models.create_model("resnet18", num_classes=4, stage_sizes=(1, 1), width=4, in_channels=2)
  model = _Ignoring(inner, mask)
  x = jax.random.normal(jax.random.key(1), (B, 20, 28, 2))
  variables = model.init(jax.random.key(0), x, train=False)
  score = hooks.objective(model, variables, index=1)
  for name, method in (("vanilla", saliency.vanilla_gradient),
                       ("smoothgrad", lambda s, x: saliency.smoothgrad(s, x, rng=jax.random.key(2), samples=3)),
                       ("integrated", lambda s, x: saliency.integrated_gradients(s, x, steps=4))):
    heat = saliency.to_map(jax.jit(functools.partial(method, score))(x)[0], "image")  # [B,H,W]
    assert heat.shape == (B, 20, 28), name
    assert np.all(np.asarray(heat)[:, mask] == 0), name
    assert np.all(np.asarray(heat)[:, ~mask].max(axis=1) > 0), name
    np.testing.assert_array_equal(saliency.share_on(heat, jnp.broadcast_to(mask, heat.shape)), 0)


def test_a_frame_the_model_ignores_gets_exactly_zero_attribution():
  """Two-stream with rgb_input='middle' reads frame T//2 = 2 of the clip only: the other frames get exactly 0 from
  every method, the flow and the middle frame something."""
  model, variables, clip, flow = _two_stream()
  score = hooks.objective(model, variables, index=0)
  for method in (saliency.vanilla_gradient,
                 lambda s, *x: saliency.smoothgrad(s, *x, rng=jax.random.key(2), samples=2, squared=True),
                 lambda s, *x: saliency.integrated_gradients(s, *x, steps=3)):
    a_clip, a_flow = jax.jit(functools.partial(method, score))(clip, flow)
    frames = saliency.to_map(a_clip, "video")  # [B,T,H,W]
    assert frames.shape == (B, 4, 12, 10) and saliency.to_map(a_flow, "flow").shape == (B, 3, 12, 10)
    assert np.all(np.asarray(frames)[:, [0, 1, 3]] == 0)
    assert np.all(np.asarray(frames)[:, 2].max(axis=(1, 2)) > 0) and np.abs(a_flow).max() > 0


def test_smoothgrad_of_one_noiseless_sample_is_the_vanilla_gradient():
  model, variables, clip, flow = _two_stream(rgb_input="mean")
  score = hooks.objective(model, variables, index=4)
  vanilla = jax.jit(functools.partial(saliency.vanilla_gradient, score))(clip, flow)
  smooth = jax.jit(functools.partial(saliency.smoothgrad, score, rng=jax.random.key(0), samples=1, noise=0.0))(
      clip, flow)
  for v, s in zip(vanilla, smooth):
    np.testing.assert_allclose(s, v, rtol=1e-5, atol=1e-6 * np.abs(v).max())  # float32 rounding (scan vs eager)
    assert np.abs(v).max() > 0


def test_smoothgrad_noise_is_a_fraction_of_each_inputs_own_range():
  """score = sum x^2 (two inputs): its gradient at x + e is 2x + 2e, so SmoothGrad-Squared is 4x^2 + 4 sigma^2 on
  average, with sigma = noise * (max - min) of each example of each input. 400 samples x 60-70 pixels: the mean
  over pixels of (result - 4x^2) / 4 is within 5% of sigma^2."""
  scales = jnp.array([1.0, 3.0, 0.2])[:, None, None, None]
  a = jax.random.uniform(jax.random.key(1), (B, 4, 5, 3)) * scales  # range ~ scale per example
  b = jax.random.normal(jax.random.key(2), (B, 7, 10)) * 5.0
  score = lambda a, b: (a ** 2).sum(axis=(1, 2, 3)) + (b ** 2).sum(axis=(1, 2))
  plain = saliency.smoothgrad(score, a, b, rng=jax.random.key(3), samples=400, noise=0.2)
  squared = saliency.smoothgrad(score, a, b, rng=jax.random.key(3), samples=400, noise=0.2, squared=True)
  for x, p, s in zip((a, b), plain, squared):
    axes = tuple(range(1, x.ndim))
    sigma = 0.2 * (x.max(axis=axes) - x.min(axis=axes))  # [B]
    np.testing.assert_allclose(p.mean(axis=axes), (2 * x).mean(axis=axes), atol=0.1 * float(sigma.max()))
    np.testing.assert_allclose(((s - 4 * x ** 2) / 4).mean(axis=axes), sigma ** 2, rtol=0.05)


# ---------------------------------------------------------------------------------------------------- Grad-CAM


@pytest.mark.parametrize("kind", ["image", "clip", "per_frame"])
def test_grad_cam_is_cam_for_a_pooled_linear_head_and_zero_where_the_input_is(kind):
  """With global average pooling and a linear head the gradient weights are W_ck / cells, so Grad-CAM =
  relu(sum_c W_ck A_c) / cells: a 2D map [B,h,w], a 3D CNN's [B,t,h,w] and a per-frame tower's [B,T,h,w] (its
  [B*T] batch unfolded b-major). Bias-free convs see zero where the input is zero (the first 3 rows of frame 1,
  or of the image), so their cells get exactly zero Grad-CAM (the 3D convs, of temporal extent 2 without
  padding, mix frame 1 with its neighbours: 5 frames -> 3 maps)."""
  model = _GapCNN(per_frame=kind == "per_frame")
  shape = (B, 12, 10, 2) if kind == "image" else (B, 5, 12, 10, 2)
  x = jax.random.normal(jax.random.key(1), shape)
  x = x.at[:, :3].set(0) if kind == "image" else x.at[:, 1, :3].set(0)
  variables = model.init(jax.random.key(0), x, train=False)
  assert saliency.cam_layer(model, variables, x) == "features"
  cam = saliency.grad_cam(model, variables, x, index=2)
  _, act = hooks.apply_with_layer(model, variables, x, layer="features")
  grid = {"image": (B, 12, 10), "clip": (B, 3, 12, 10), "per_frame": (B, 5, 12, 10)}[kind]
  act = act.reshape(*grid, 6)  # [B,(t,)h,w,D], per-frame: [(B T),h,w,D] -> [B,T,h,w,D]
  reference = jax.nn.relu(act @ variables["params"]["head"]["kernel"][:, 2]) / np.prod(grid[1:])
  assert cam.shape == grid and cam.dtype == jnp.float32
  np.testing.assert_allclose(cam, reference, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(cam) >= 0) and np.asarray(cam).max() > 0
  if kind == "image":
    assert np.all(np.asarray(cam)[:, :1] == 0)  # rows 0..2 zero in, two 3x3 convs: row 0 sees rows 0..2 only
  elif kind == "per_frame":
    assert np.all(np.asarray(cam)[:, 1, :1] == 0)


def test_grad_cam_on_the_two_stream_streams():
  model, variables, clip, flow = _two_stream()
  assert saliency.cam_layer(model, variables, clip, flow) == "flow_stream/tower"
  for layer in (None, "rgb_stream/tower"):
    cam = saliency.grad_cam(model, variables, clip, flow, index=3, layer=layer)
    assert cam.shape == (B, 3, 2) and np.all(np.asarray(cam) >= 0)  # 12x10 -> two 2x2 pools -> 3x2


# ---------------------------------------------------------------------------------------------------- maps


def test_to_map_reads_each_input_kind():
  image = jnp.arange(B * 4 * 6 * 5, dtype=jnp.float32).reshape(B, 4, 6, 5) - 100
  np.testing.assert_allclose(saliency.to_map(image, "image"), jnp.abs(image).sum(-1))
  video = jnp.ones((B, 3, 4, 6, 5)).at[:, 1].set(-2)
  np.testing.assert_allclose(saliency.to_map(video, "video")[0, :, 0, 0], [5, 10, 5])
  flow = jnp.zeros((B, 4, 6, 2 * 3)).at[..., 3].set(-1.0)  # channel 3: the y component of field 1
  fields = saliency.to_map(flow, "flow")
  assert fields.shape == (B, 3, 4, 6)
  np.testing.assert_array_equal(fields.sum(axis=(0, 2, 3)), [0, B * 4 * 6, 0])


def test_share_on_is_the_fraction_of_the_maps_mass_under_the_mask():
  heat = jax.random.uniform(jax.random.key(0), (B, 4, 6, 5))
  mask = jax.random.bernoulli(jax.random.key(1), 0.3, heat.shape)
  share = saliency.share_on(heat, mask)
  assert share.shape == (B,)
  np.testing.assert_allclose(share + saliency.share_on(heat, ~mask), 1, rtol=1e-6)
  np.testing.assert_allclose(share, (heat * mask).sum(axis=(1, 2, 3)) / heat.sum(axis=(1, 2, 3)), rtol=1e-6)
  frame_mask = jnp.zeros((B, 1, 6, 5)).at[:, :, :3].set(1)  # one [H,W] mask for every frame
  np.testing.assert_allclose(saliency.share_on(heat, frame_mask),
                             heat[:, :, :3].sum(axis=(1, 2, 3)) / heat.sum(axis=(1, 2, 3)), rtol=1e-6)
  cam = jnp.ones((B, 3, 2))  # a Grad-CAM grid; the mask at input size 12x10 covers the top half
  np.testing.assert_allclose(saliency.share_on(cam, jnp.zeros((B, 12, 10)).at[:, :6].set(1)), 0.5, rtol=1e-6)
  assert np.isnan(saliency.share_on(jnp.zeros((B, 3)), jnp.ones((B, 3)))).all()


def test_bad_inputs_are_refused_by_name():
  model, variables, clip, flow = _two_stream()
  score = hooks.objective(model, variables, index=0)
  with pytest.raises(ValueError, match="no inputs"):
    saliency.vanilla_gradient(score)
  with pytest.raises(ValueError, match="input 1 has dtype int32"):
    saliency.vanilla_gradient(score, clip, flow.astype(jnp.int32))
  with pytest.raises(ValueError, match="input 1 has batch 2, input 0 has 3"):
    saliency.integrated_gradients(score, clip, flow[:2])
  with pytest.raises(ValueError, match=r"score returns shape \(3, 5\)"):
    saliency.vanilla_gradient(lambda *x: model.apply(variables, *x, train=False), clip, flow)
  with pytest.raises(ValueError, match="samples must be an int >= 1"):
    saliency.smoothgrad(score, clip, flow, rng=jax.random.key(0), samples=0)
  with pytest.raises(ValueError, match="noise must be a fraction >= 0"):
    saliency.smoothgrad(score, clip, flow, rng=jax.random.key(0), noise=-0.1)
  with pytest.raises(ValueError, match="rng is None"):
    saliency.smoothgrad(score, clip, flow, rng=None)
  with pytest.raises(ValueError, match="steps must be an int >= 1"):
    saliency.integrated_gradients(score, clip, flow, steps=0)
  with pytest.raises(ValueError, match="1 baselines for 2 inputs"):
    saliency.integrated_gradients(score, clip, flow, baselines=[clip])
  with pytest.raises(ValueError, match="baseline 1 has shape"):
    saliency.integrated_gradients(score, clip, flow, baselines=[clip, flow[..., :2]])
  with pytest.raises(ValueError, match="class index 5 out of range"):
    saliency.grad_cam(model, variables, clip, flow, index=5)
  with pytest.raises(ValueError, match=r"layer 'rgb_stream/fc0' returns shape \(3, 8\), not a map"):
    saliency.grad_cam(model, variables, clip, flow, index=0, layer="rgb_stream/fc0")
  with pytest.raises(ValueError, match="does not run"):
    saliency.grad_cam(model, variables, clip, flow, index=0, layer="nowhere")
  vit, vit_variables, image = _vit()
  with pytest.raises(ValueError, match="ViT has no convolutional map.*first token sequence \\('cls'\\)"):
    saliency.cam_layer(vit, vit_variables, image)
  with pytest.raises(ValueError, match="kind 'clip' is not one of"):
    saliency.to_map(clip, "clip")
  with pytest.raises(ValueError, match="video attribution has shape .* not 5 dims"):
    saliency.to_map(flow, "video")
  with pytest.raises(ValueError, match="flow attribution has 5 channels"):
    saliency.to_map(flow[..., :5], "flow")
  with pytest.raises(ValueError, match="mask of shape .* does not fit"):
    saliency.share_on(jnp.ones((B, 4, 6)), jnp.ones((2, 4, 6)))


# ---------------------------------------------------------------------------------------------------- every family


# The default Grad-CAM layer and map of each CNN family at tests/visualize/tiny.py's sizes (batch 2; cam_layer's
# rule); the transformer families have none. I3D's and LRCN's last stage is 1x1 here, so the stage before it.
CAM_LAYERS = {
    "resnet18": ("layer2", (2, 3, 4)), "bit_r50x1": ("stage1", (2, 3, 4)),
    "convnext_b": ("stage_1", (2, 2, 3)), "c3d": ("conv5b", (2, 2, 7, 7)), "i3d_r50": ("layer3", (2, 1, 2, 2)),
    "lrcn": ("cnn/layer3", (2, 3, 2, 2)), "vtn_r50": ("backbone/layer2", (2, 3, 3, 4)),
    "single_frame": ("tower", (2, 3, 7, 7)), "late_fusion_fc": ("tower", (2, 2, 7, 7)),
    "early_fusion": ("tower", (2, 1, 7, 7)), "slow_fusion": ("tower", (2, 1, 7, 7)),
    "two_stream": ("flow_stream/tower", (2, 7, 7)),
}


@pytest.mark.parametrize("name", sorted(tiny.FAMILIES))
def test_every_method_runs_on_every_family(name):
  """Traced with jax.eval_shape (nothing compiled): the gradient methods on every family give one attribution
  per input, its shape; Grad-CAM gives the CNNs' map at their default layer and refuses the transformers."""
  model, inputs = tiny.tiny(name)
  variables = tiny.abstract_variables(model, inputs)
  shapes = [x.shape for x in inputs]
  methods = {
      "vanilla": saliency.vanilla_gradient,
      "smoothgrad": lambda s, *x: saliency.smoothgrad(s, *x, rng=jax.random.key(0), samples=2),
      "integrated": lambda s, *x: saliency.integrated_gradients(s, *x, steps=2)}
  for method_name, method in methods.items():
    out = jax.eval_shape(lambda v, *x: method(hooks.objective(model, v, index=1), *x), variables, *inputs)
    assert [a.shape for a in out] == shapes, method_name
  if name in CAM_LAYERS:
    layer, grid = CAM_LAYERS[name]
    assert saliency.cam_layer(model, variables, *inputs) == layer
    cam = jax.eval_shape(lambda v, *x: saliency.grad_cam(model, v, *x, index=1), variables, *inputs)
    assert cam.shape == grid and cam.dtype == jnp.float32
  else:
    with pytest.raises(ValueError, match="no convolutional map for Grad-CAM"):
      saliency.grad_cam(model, variables, *inputs, index=1)
