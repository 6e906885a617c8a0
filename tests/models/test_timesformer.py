"""TimeSformer (vit_video.models.timesformer): information flow of the four attention schemes, the forward pass against
a numpy re-statement of the official code's, the time embedding's resampling, parameter counts against the paper's
Table 1, bad input. (Initialisation from a ViT: tests/checkpoints/test_inflate_vit.py.)

Tiny sizes, all different where it matters: B=2 clips of T=3 frames, 8x16 pixels, C=5 channels, patch 4, so the
patch grid is T=3 x H'=2 x W'=4 (S=8 patches per frame), width 16, 2 heads, MLP 24, K=7 classes.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.models.helpers import forward_with_intermediates, noise, random_variables
from vit_video.models import count_params, timesformer

B, T, H, W, C, K = 2, 3, 8, 16, 5, 7
P, D, HEADS = 4, 16, 2
NH, NW = H // P, W // P
S = NH * NW
TINY = dict(num_classes=K, patch_size=P, width=D, depth=2, mlp_dim=24, num_heads=HEADS, num_frames=T,
            in_channels=C)


X = noise((B, T, H, W, C))


def model_and_variables(attention, **overrides):
  model = timesformer.TimeSformer(**{**TINY, **overrides}, attention=attention)
  return model, random_variables(model, X)


def perturb_patch(x, t, i, j):
  """x with the pixels of patch (i, j) of frame t of example 0 changed: only that patch's embedding moves."""
  return x.at[0, t, i * P:(i + 1) * P, j * P:(j + 1) * P].add(1.0)


def replaced(variables, **values):
  """variables with the params at the given '/'-paths (keyword '__' for '/') replaced: zeros, or a function."""
  flat = traverse_util.flatten_dict(variables, sep="/")
  for path, value in values.items():
    key = "params/" + path.replace("__", "/")
    flat[key] = value(flat[key]) if callable(value) else jnp.zeros_like(flat[key])
  return traverse_util.unflatten_dict(flat, sep="/")


def silence(variables, *steps, block=0):
  """The output layers of the given steps ("time", "width") of one block zeroed: those steps become identities."""
  prefix = f"Transformer__encoderblock_{block}__Dense_"
  return replaced(variables, **{f"{prefix}{s}__{n}": 0 for s in steps for n in ("kernel", "bias")})


def moved(a, b):
  """Per-token size of the change between two `[..., D]` token arrays."""
  return np.abs(np.asarray(a) - np.asarray(b)).max(axis=-1)


def assert_moves_exactly(change, expected):
  """Tokens in `expected` moved (clearly), all others not at all (to float rounding)."""
  assert change.shape == expected.shape
  assert np.all(change[expected] > 1e-4), change
  assert np.all(change[~expected] < 1e-7), change


def block_inter(inter, name, block=0):
  """The first output of a module of block `block` (or of the block itself for name None)."""
  inter = inter["Transformer"][f"encoderblock_{block}"]
  return (inter if name is None else inter[name])["__call__"][0]


# ------------------------------------------------------------------------------------------------ layout


def test_parameter_layout_of_the_four_schemes():
  shapes = {a: traverse_util.flatten_dict(model_and_variables(a)[1]["params"], sep="/")
            for a in timesformer.ATTENTIONS}
  vit_block = {"LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3"}

  def steps(*axes):
    return {f"{n}_{a}" for a in axes for n in ("LayerNorm", "MultiHeadDotProductAttention", "Dense")}

  blocks = {"space": vit_block, "joint": vit_block, "divided": vit_block | steps("time"),
            "axial": vit_block | steps("time", "width")}
  for attention, flat in shapes.items():
    assert flat["embedding/kernel"].shape == (P, P, C, D)  # one 2D patch embedding for every frame
    assert flat["cls/token"].shape == (1, 1, D)
    assert flat["Transformer/posembed_input/pos_embedding"].shape == (1, 1 + S, D)  # one frame's grid + class row
    assert ("Transformer/posembed_time/pos_embedding" in flat) == (attention != "space")
    assert {k.split("/")[2] for k in flat if k.startswith("Transformer/encoderblock_1/")} == blocks[attention]
  assert shapes["joint"]["Transformer/posembed_time/pos_embedding"].shape == (1, T, D)
  assert shapes["divided"]["Transformer/encoderblock_0/Dense_time/kernel"].shape == (D, D)  # official temporal_fc


def test_fresh_model_starts_with_neutral_temporal_steps():
  """As in the official code, `temporal_fc` (ours `Dense_time`, `Dense_width`) and the time embedding start at
  zero."""
  model = timesformer.TimeSformer(**{**TINY, "depth": 1}, attention="axial")
  key = jax.random.key(0, impl="rbg")  # compiles in half the time of threefry here
  params = jax.jit(functools.partial(model.init, train=False))(key, X[:1])["params"]
  block = params["Transformer"]["encoderblock_0"]
  for leaf in jax.tree.leaves((block["Dense_time"], block["Dense_width"], params["Transformer"]["posembed_time"])):
    assert not np.any(leaf)
  assert np.any(block["MultiHeadDotProductAttention_time"]["query"]["kernel"])


# ------------------------------------------------------------------------------------- information flow


def test_space_attention_never_mixes_frames():
  """Two blocks deep, a patch of frame t0 has reached every patch and the class token of frame t0 and nothing else;
  the frames meet only in the final average of their class tokens."""
  model, v = model_and_variables("space")
  t0 = 1
  (_, base), (_, pert) = forward_with_intermediates(model, v, X), forward_with_intermediates(model, v, perturb_patch(X, t0, 1, 2))
  cls = lambda inter: block_inter(inter, None, block=1)[0]  # [B,T,D]: a class token per frame  # noqa: E731
  patches = lambda inter: block_inter(inter, None, block=1)[1]  # [B,T,H',W',D]  # noqa: E731
  expected = np.zeros((B, T), bool)
  expected[0, t0] = True
  assert_moves_exactly(moved(cls(pert), cls(base)), expected)
  assert_moves_exactly(moved(patches(pert), patches(base)), np.broadcast_to(expected[:, :, None, None], (B, T, NH, NW)))


def test_joint_attention_moves_everything():
  model, v = model_and_variables("joint")
  (_, base), (_, pert) = forward_with_intermediates(model, v, X), forward_with_intermediates(model, v, perturb_patch(X, 2, 0, 3))
  cls, patches = (moved(a, b) for a, b in zip(block_inter(pert, None), block_inter(base, None)))  # block 0
  assert_moves_exactly(cls, np.array([[True], [False]]))
  assert_moves_exactly(patches, np.arange(B)[:, None, None, None] == np.zeros((B, T, NH, NW), int))


def test_divided_time_step_keeps_to_its_position_and_space_step_to_its_frame():
  model, v = model_and_variables("divided")
  t0, i0, j0 = 2, 1, 3
  x2 = perturb_patch(X, t0, i0, j0)
  # Time step: groups (b h w) of T patches, no class token.
  (_, base), (_, pert) = forward_with_intermediates(model, v, X), forward_with_intermediates(model, v, x2)
  time = lambda inter: block_inter(inter, "MultiHeadDotProductAttention_time").reshape(B, NH, NW, T, D)  # noqa: E731
  expected = np.zeros((B, NH, NW, T), bool)
  expected[0, i0, j0] = True
  assert_moves_exactly(moved(time(pert), time(base)), expected)
  # One whole block (time, then space) reaches every patch and the class token of the clip.
  cls, patches = (moved(a, b) for a, b in zip(block_inter(pert, None), block_inter(base, None)))
  assert_moves_exactly(cls, np.array([[True], [False]]))
  assert_moves_exactly(patches, np.arange(B)[:, None, None, None] == np.zeros((B, T, NH, NW), int))
  # With the time step silenced, the space step sees frame t0 alone: its S patches and its class-token copy.
  v0 = silence(v, "time")
  (_, base), (_, pert) = forward_with_intermediates(model, v0, X), forward_with_intermediates(model, v0, x2)
  space = lambda inter: block_inter(inter, "MultiHeadDotProductAttention_1").reshape(B, T, 1 + S, D)  # noqa: E731
  expected = np.zeros((B, T, 1 + S), bool)
  expected[0, t0] = True
  assert_moves_exactly(moved(space(pert), space(base)), expected)


@pytest.mark.parametrize("attention", ["divided", "axial"])
def test_class_token_joins_only_the_last_step(attention):
  """Changing the class token moves nothing in block 0's time (and width) attention, everything in its last one:
  the official divided block keeps the class token out of the temporal attention."""
  model, v = model_and_variables(attention)
  # A random change: adding a constant to every channel would vanish in the LayerNorms.
  (_, base), (_, pert) = forward_with_intermediates(model, v, X), forward_with_intermediates(model, replaced(v, cls__token=lambda a: a + noise(a.shape, 3)), X)
  for step in ("time",) + (("width",) if attention == "axial" else ()):
    name = f"MultiHeadDotProductAttention_{step}"
    np.testing.assert_array_equal(block_inter(pert, name), block_inter(base, name))
  assert np.all(moved(block_inter(pert, "MultiHeadDotProductAttention_1"),
                      block_inter(base, "MultiHeadDotProductAttention_1")) > 1e-4)


def test_axial_steps_keep_to_their_axes():
  """Time: the T patches at (i0, j0); then width: the W' patches of row i0 of frame t0; then height: the H' patches of
  column j0 of frame t0 and the class-token copy; each step seen alone by silencing the ones before it."""
  model, v = model_and_variables("axial")
  t0, i0, j0 = 1, 1, 2
  x2 = perturb_patch(X, t0, i0, j0)

  def change(variables, name, shape):
    (_, base), (_, pert) = forward_with_intermediates(model, variables, X), forward_with_intermediates(model, variables, x2)
    return moved(block_inter(pert, name).reshape(shape), block_inter(base, name).reshape(shape))

  expected = np.zeros((B, NH, NW, T), bool)  # groups (b h w), tokens t
  expected[0, i0, j0] = True
  assert_moves_exactly(change(v, "MultiHeadDotProductAttention_time", (B, NH, NW, T, D)), expected)
  expected = np.zeros((B, T, NH, NW), bool)  # groups (b t h), tokens w
  expected[0, t0, i0] = True
  assert_moves_exactly(change(silence(v, "time"), "MultiHeadDotProductAttention_width", (B, T, NH, NW, D)), expected)
  expected = np.zeros((B, T, NW, 1 + NH), bool)  # groups (b t w), tokens: class-token copy, then h
  expected[0, t0, j0] = True
  assert_moves_exactly(change(silence(v, "time", "width"), "MultiHeadDotProductAttention_1", (B, T, NW, 1 + NH, D)),
                       expected)


# ------------------------------------------------------------------- the official forward pass, in numpy


def _ln(x, p):
  x = np.asarray(x, np.float64)
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _dense(x, p):
  return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def _attn(x, p):
  """The official Attention on [G,N,D] (fused qkv Linear, softmax(q k^T scale), proj), from our weight layout."""
  g, n, d = x.shape
  heads = lambda name: (np.einsum("gnd,dhk->ghnk", x, np.asarray(p[name]["kernel"]))  # noqa: E731
                        + np.asarray(p[name]["bias"])[None, :, None])
  q, k, v = heads("query"), heads("key"), heads("value")  # [G,h,N,hd]
  logits = q @ k.transpose(0, 1, 3, 2) * q.shape[-1] ** -0.5
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a = a / a.sum(-1, keepdims=True)
  out = (a @ v).transpose(0, 2, 1, 3).reshape(g, n, d)  # heads concatenated
  return out @ np.asarray(p["out"]["kernel"]).reshape(d, d) + np.asarray(p["out"]["bias"])


def _mlp(x, p):
  h = _dense(x, p["Dense_0"])
  return _dense(np.asarray(jax.nn.gelu(h, approximate=False)), p["Dense_1"])


def official_forward(params, x, attention):
  """The official VisionTransformer.forward (timesformer/models/vit.py, eval mode) restated with numpy, in its own
  token order: patches flattened as (h w) per frame, and as (h w t) — time fastest — across the clip."""
  b, t, hh, ww, c = x.shape
  n = (hh // P) * (ww // P)
  tr = params["Transformer"]
  frames = np.asarray(x, np.float64).reshape(b * t, hh // P, P, ww // P, P, c).transpose(0, 1, 3, 2, 4, 5)
  z = _dense(frames.reshape(b * t, n, P * P * c), {"kernel": np.asarray(params["embedding"]["kernel"]).reshape(-1, D),
                                                  "bias": params["embedding"]["bias"]})  # [(b t), n, D]
  cls = np.broadcast_to(np.asarray(params["cls"]["token"]), (b * t, 1, D))
  z = np.concatenate([cls, z], 1) + np.asarray(tr["posembed_input"]["pos_embedding"])  # [(b t), 1+n, D]
  if attention != "space":
    cls = z[:b, :1]  # as the official code: all rows hold the same class token
    z = z[:, 1:].reshape(b, t, n, D).transpose(0, 2, 1, 3) + np.asarray(tr["posembed_time"]["pos_embedding"])[0]
    z = np.concatenate([cls, z.reshape(b, n * t, D)], 1)  # [b, 1 + (n t), D]
  for i in range(TINY["depth"]):
    p = tr[f"encoderblock_{i}"]
    if attention in ("space", "joint"):
      z = z + _attn(_ln(z, p["LayerNorm_0"]), p["MultiHeadDotProductAttention_1"])
    else:  # divided
      xt = z[:, 1:].reshape(b * n, t, D)  # 'b (h w t) m -> (b h w) t m'
      res = _attn(_ln(xt, p["LayerNorm_time"]), p["MultiHeadDotProductAttention_time"]).reshape(b, n * t, D)
      xt = z[:, 1:] + _dense(res, p["Dense_time"])  # temporal_fc
      init_cls = z[:, :1]
      xs = xt.reshape(b, n, t, D).transpose(0, 2, 1, 3).reshape(b * t, n, D)  # '-> (b t) (h w) m'
      xs = np.concatenate([np.repeat(init_cls, t, axis=0).reshape(b * t, 1, D), xs], 1)
      res = _attn(_ln(xs, p["LayerNorm_0"]), p["MultiHeadDotProductAttention_1"])
      cls_res = res[:, 0].reshape(b, t, D).mean(1, keepdims=True)
      res = res[:, 1:].reshape(b, t, n, D).transpose(0, 2, 1, 3).reshape(b, n * t, D)  # '-> b (h w t) m'
      z = np.concatenate([init_cls, xt], 1) + np.concatenate([cls_res, res], 1)
    z = z + _mlp(_ln(z, p["LayerNorm_2"]), p["MlpBlock_3"])
  if attention == "space":
    z = z.reshape(b, t, 1 + n, D).mean(1)  # averaging over frames
  return _dense(_ln(z, tr["encoder_norm"])[:, 0], params["head"])


@pytest.mark.parametrize("attention", ["space", "joint", "divided"])
def test_logits_equal_the_official_forward_pass(attention):
  """Same weights, a clip of distinct frames: ours equals the official forward pass (restated in numpy in its own
  token order), for the three schemes that the official code has."""
  model, v = model_and_variables(attention)
  logits, _ = forward_with_intermediates(model, v, X)
  expected = official_forward(v["params"], X, attention)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  assert np.abs(expected).max() > 0.1 and not np.allclose(expected[0], expected[1], atol=1e-3)


# ------------------------------------------------------------------------------------------ time embedding


@pytest.mark.parametrize("frames, rows", [(3, [0, 1, 2]), (6, [0, 0, 1, 1, 2, 2]), (4, [0, 0, 1, 2]), (2, [0, 1]),
                                          (1, [0])])
def test_time_embedding_resampled_as_torch_nearest(frames, rows):
  """A 3-row embedding on a clip of `frames` frames: row floor(t * 3 / frames) for frame t, which is what
  `torch.nn.functional.interpolate(mode='nearest')` (the official resize) picks (checked against torch 2.13)."""
  emb = noise((1, 3, D), seed=1)
  x = noise((B, frames, NH, NW, D), seed=2)
  out = timesformer.TimeEmbedding(num_frames=3).apply({"params": {"pos_embedding": emb}}, x)
  np.testing.assert_allclose(out, x + emb[0, rows][None, :, None, None], rtol=1e-6)


# --------------------------------------------------------------------------------------- parameter counts

CLIP = (1, 8, 224, 224, 3)  # the paper's 8 frames at 224 x 224
# Exact counts at K = 400 (eval_shape). ViT-B/16 with a 400-class head: patch embedding 16*16*3*768 + 768 =
# 590,592, class token 768, positions 197*768 = 151,296, 12 blocks of 7,087,872 = 85,054,464, final norm 1,536,
# head 768*400 + 400 = 307,600: 86,106,256 ("space"). "joint" adds the time embedding 8*768 = 6,144; "divided" adds
# per block a temporal attention (4*768^2 + 4*768 = 2,362,368), its LayerNorm (1,536) and temporal_fc (768^2 + 768
# = 590,592): 12 * 2,954,496 = 35,453,952; "axial" adds that twice (time and width).
COUNTS = {
    "timesformer_b16_space": 86_106_256,
    "timesformer_b16_joint": 86_112_400,
    "timesformer_b16_divided": 121_566_352,
    "timesformer_b16_axial": 157_020_304,
}
K1000 = 600 * 769  # a 1000-class head: 600 more rows of 768 weights + 1 bias
# Table 1 of Bertasius et al. 2021 (ViT-B/16, 8x224x224), in M, as printed in the paper (ICML 2021 / arXiv 2102.05095).
PAPER_TABLE_1 = {"space": 85.9, "joint": 85.9, "divided": 121.4, "axial": 156.8}


def test_every_timesformer_variant_is_pinned():
  assert set(timesformer.MODELS) == set(COUNTS)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts(name):
  assert count_params(timesformer.MODELS[name](num_classes=400), CLIP) == COUNTS[name]
  if name.endswith("divided"):  # the head is the only K-dependent part
    assert count_params(timesformer.MODELS[name](num_classes=1000), CLIP) == COUNTS[name] + K1000


@pytest.mark.parametrize("attention", sorted(PAPER_TABLE_1))
def test_counts_match_the_paper_to_its_rounding_with_an_ssv2_head(attention):
  """Table 1 gives one count per scheme beside its K400 and SSv2 accuracies. With a 174-class (SSv2) head ours round
  to it exactly (85.93, 85.94, 121.39, 156.85M); with the 400-class head each is 0.17M higher (86.11, 86.11, 121.57,
  157.02M). All four round to the table for heads of 119 to 178 classes only, so (our inference; the paper does not
  say) the table counts the SSv2 models. The per-scheme differences (divided +35.45M, axial +70.91M over joint, the
  temporal_fc layers included) match it whatever the head."""
  ssv2 = COUNTS[f"timesformer_b16_{attention}"] - (400 - 174) * 769
  assert round(ssv2 / 1e6, 1) == PAPER_TABLE_1[attention]


# --------------------------------------------------------------------------------- dtype, training, input


def test_bf16_compute_runs_in_bf16_and_logits_are_float32():
  model = timesformer.TimeSformer(**TINY, attention="divided", dtype=jnp.bfloat16)
  v = random_variables(model, X)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
  logits, inter = forward_with_intermediates(model, v, X)
  assert logits.dtype == jnp.float32
  assert inter["embedding"]["__call__"][0].dtype == jnp.bfloat16
  for name in ("MultiHeadDotProductAttention_time", "Dense_time", "MultiHeadDotProductAttention_1"):
    assert block_inter(inter, name, block=1).dtype == jnp.bfloat16


def test_sown_attention_weights_have_each_steps_groups():
  """Divided attention sows temporal weights over the T frames of each of the B S positions and spatial weights over
  each frame's S patches plus the class token's copy; every row is a distribution."""
  model = timesformer.TimeSformer(**TINY, attention="divided", sow_attention_weights=True)
  _, state = model.apply(random_variables(model, X), X, train=False, mutable=["intermediates"])
  block = state["intermediates"]["Transformer"]["encoderblock_1"]
  want = {"MultiHeadDotProductAttention_time": (B * S, HEADS, T, T),
          "MultiHeadDotProductAttention_1": (B * T, HEADS, 1 + S, 1 + S)}
  assert set(block) == set(want)
  for module, shape in want.items():
    weights = block[module]["attention_weights"][0]
    assert weights.shape == shape, module
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)


def test_stochastic_depth_acts_only_in_training():
  """Stochastic depth only: each dropout site costs seconds of compile time here (the dropout layers are flax's and
  take the same `deterministic` flag)."""
  model = timesformer.TimeSformer(**{**TINY, "num_classes": 0}, attention="divided", stochastic_depth_rate=0.5)
  v = random_variables(model, X)
  apply = jax.jit(lambda v, x, rng, train: model.apply(v, x, train=train, rngs={"dropout": rng}), static_argnums=3)
  a, b = (apply(v, X, jax.random.key(s), False) for s in (1, 2))
  np.testing.assert_array_equal(a, b)
  c, d = (apply(v, X, jax.random.key(s), True) for s in (1, 2))
  assert not np.allclose(c, d) and not np.allclose(a, c)


@pytest.mark.parametrize("shape, overrides, message", [
    ((B, T, 10, W, C), {}, r"frame size \(10, 16\) is not divisible by patch size 4"),
    ((B, T, H, W, 3), {}, r"expects 5 input channels; got shape \(2, 3, 8, 16, 3\)"),
    ((B, H, W, C), {}, r"videos \[B,T,H,W,C\]; got shape \(2, 8, 16, 5\)"),
    ((B, 0, H, W, C), {}, "at least one frame"),
    ((B, T, H, W, C), dict(attention="sparse"), "attention must be one of"),
    ((B, T, H, W, C), dict(num_heads=3), "width 16 is not divisible by num_heads 3"),
])
def test_bad_input_raises_value_error(shape, overrides, message):
  model = timesformer.TimeSformer(**{**TINY, **overrides})
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("attention", ["joint", "divided"])
def test_chunked_attention_and_remat_keep_the_logits(attention):
  """The same logits; under remat, training without a dropout rng works (drop-path rates of 0 stay Python floats)."""
  model, v = model_and_variables(attention)
  long = timesformer.TimeSformer(**TINY, attention=attention, attention_implementation="chunked", remat=True)
  np.testing.assert_allclose(long.apply(v, X, train=True), model.apply(v, X, train=True), rtol=1e-5, atol=1e-5)
