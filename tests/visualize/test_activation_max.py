"""activation_max: the optimum beats random clips, slow moves less than fast, appearance not at all, a single-frame
model's optimum has no motion; every video family traced (jax.eval_shape, nothing compiled); bad input raises.

Real optimisations run on a few tiny models (B=2, T=5, H=12, W=16, C=3, random weights); each optimisation on one
score compiles once for slow, fast and none (activation_max caches it) and once more for appearance.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.visualize import tiny
from vit_video import models
from vit_video.visualize import activation_max as am
from vit_video.visualize import hooks

B, T, H, W, C = 2, 5, 12, 16, 3
STEPS = 40
TOWER = dict(widths=(4, 6), kernel_sizes=(3, 3), strides=(1, 1), pools=(True, True), fc_widths=(7,), image_size=(H, W))


def _model(name, **overrides):
  model = models.create_model(name, num_classes=4, **overrides)
  shapes = [(B, T, H, W, C)] + ([(B, H, W, 2 * (T - 1))] if "flow" in type(model).inputs else [])
  return model, _init(model, [jnp.zeros(s) for s in shapes]), shapes


def _init(model, inputs):
  return jax.jit(lambda *x: model.init(jax.random.key(0), *x, train=False))(*inputs)  # compiled: faster than eager


def _scores(score, shapes, *candidates, n=16):
  """(the score of each candidate (a tuple of inputs) [B], the best score of n uniform random inputs in [-1, 1] [B]),
  from one compiled call on all of them stacked along the batch (eager transformer calls are slow)."""
  randoms = [jax.random.uniform(jax.random.key(7 + i), (n * s[0], *s[1:]), minval=-1, maxval=1)
             for i, s in enumerate(shapes)]
  stacked = [jnp.concatenate([*(c[i] for c in candidates), randoms[i]]) for i in range(len(shapes))]
  out = np.asarray(jax.jit(score)(*stacked)).reshape(len(candidates) + n, shapes[0][0])
  return list(out[:len(candidates)]), out[len(candidates):].max(axis=0) if n else None


@pytest.fixture(scope="module")
def early_fusion():
  """Early fusion (its first conv spans all T frames: it can see motion), class 1, under every regulariser."""
  model, variables, shapes = _model("early_fusion", **TOWER, num_frames=T)
  score = hooks.objective(model, variables, index=1)
  results = {r: am.maximise(score, shapes, rng=jax.random.key(1), regulariser=r, steps=STEPS) for r in am.REGULARISERS}
  return score, shapes, results


def test_the_optimum_beats_random_clips_by_a_margin(early_fusion):
  score, shapes, results = early_fusion
  optima, best_random = _scores(score, shapes, *(r.inputs for r in results.values()))
  for (regulariser, result), optimum in zip(results.items(), optima):
    assert result.inputs[0].shape == shapes[0] and result.scores.shape == (STEPS, B)
    assert float(jnp.abs(result.inputs[0]).max()) <= 1.0, regulariser  # kept in the data's range
    # Margin: at least 1 logit above the best of 16 random clips (measured: 1.7 to 17 above), each example.
    assert np.all(optimum > best_random + 1.0), (regulariser, optimum, best_random)
    assert np.all(result.scores[-1] > result.scores[0]), regulariser


def test_slow_moves_less_than_fast_and_appearance_not_at_all(early_fusion):
  _, _, results = early_fusion
  change = {r: np.asarray(am.temporal_change(result.inputs[0])) for r, result in results.items()}
  np.testing.assert_array_equal(change["appearance"], 0.0)  # one frame repeated
  assert np.all(change["slow"] < 0.5 * change["fast"]), change  # measured: 0.035 vs 0.65
  assert np.all(change["fast"] <= change["none"] + 1e-6), change
  assert np.all(change["fast"] > 0.05), change  # the model put motion there (the start is static)


def test_a_single_frame_model_optimum_has_no_motion_it_could_use(early_fusion):
  """The start is one frame repeated; a model that scores each frame alone gives every frame the same gradient, so
  even the weakest temporal penalty leaves a static clip, where early fusion (same sizes, same start) makes motion.
  Reversing the optimum's frames leaves the single-frame score unchanged and moves early fusion's."""
  ef_score, _, ef_results = early_fusion
  model, variables, shapes = _model("single_frame", **TOWER)
  score = hooks.objective(model, variables, index=1)
  result = am.maximise(score, shapes, rng=jax.random.key(1), regulariser="none", steps=STEPS)
  np.testing.assert_array_equal(am.temporal_change(result.inputs[0]), 0.0)
  assert np.all(am.temporal_change(ef_results["none"].inputs[0]) > 0.05)
  clip = result.inputs[0]
  (optimum, reversed_), best_random = _scores(score, shapes, (clip,), (clip[:, ::-1],))
  np.testing.assert_allclose(reversed_, optimum, rtol=1e-5)
  assert np.all(optimum > best_random + 1.0)
  ef_clip = ef_results["none"].inputs[0]
  (ef_optimum, ef_reversed), _ = _scores(ef_score, shapes, (ef_clip,), (ef_clip[:, ::-1],), n=0)
  assert np.all(np.abs(ef_reversed - ef_optimum) > 0.1)


def test_two_streams_slow_and_fast_act_on_the_flow_fields_too():
  model, variables, shapes = _model("two_stream", **TOWER, num_frames=T)
  score = hooks.objective(model, variables, index=2)
  slow, fast = (am.maximise(score, shapes, rng=jax.random.key(3), regulariser=r, steps=STEPS) for r in ("slow", "fast"))
  assert [x.shape for x in fast.inputs] == shapes
  optima, best_random = _scores(score, shapes, slow.inputs, fast.inputs)
  for optimum in optima:  # "average" fusion's output is log((p_rgb + p_flow) / 2) <= 0: a log-probability
    assert np.all(optimum > best_random + 0.2)  # measured: -0.5 vs -0.81
  flow_slow, flow_fast = (np.asarray(am.temporal_change(r.inputs[1], "flow")) for r in (slow, fast))
  assert np.all(flow_slow < 0.5 * flow_fast), (flow_slow, flow_fast)


def test_a_channel_of_a_transformer_layer_is_maximised():
  model, inputs = tiny.tiny("timesformer_b16_divided", depth=1, width=8, num_heads=2, mlp_dim=12, patch_size=4)
  shapes = [s.shape for s in inputs]  # (2, 3, 8, 12, 3)
  variables = _init(model, tiny.zeros(inputs))
  layer = [p for p in hooks.layer_paths(model, variables, *tiny.zeros(inputs)) if "MlpBlock" in p][0]
  score = hooks.objective(model, variables, layer=layer, index=5)
  result = am.maximise(score, shapes, rng=jax.random.key(4), regulariser="fast", steps=STEPS)
  (optimum,), best_random = _scores(score, shapes, result.inputs)
  assert np.all(optimum > best_random)
  assert np.all(result.scores[-1] > result.scores[0] + 0.1), result.scores[[0, -1]]


def test_the_blur_smooths_a_checkerboard_optimum():
  """A linear score that likes a one-pixel checkerboard: blurring every step leaves far less of it (spatial TV)."""
  checker = (-1.0) ** (jnp.arange(H)[:, None] + jnp.arange(W)[None, :])  # [H,W]
  score = lambda x: (x * checker[None, None, :, :, None]).reshape(x.shape[0], -1).mean(axis=1)  # noqa: E731
  tv = lambda x: np.asarray(jnp.abs(jnp.diff(x, axis=3)).mean())  # noqa: E731
  sharp, smooth = (am.maximise(score, [(B, T, H, W, C)], rng=jax.random.key(0), regulariser="appearance", steps=20,
                               jitter=0, tv_weight=0.0, blur_every=every).inputs[0] for every in (0, 1))
  assert tv(smooth) < 0.5 * tv(sharp), (tv(smooth), tv(sharp))  # measured: 0.06 vs 1.92


def test_temporal_change_is_the_mean_absolute_frame_difference():
  clip = jnp.arange(2 * 3 * 2 * 4 * 1, dtype=jnp.float32).reshape(2, 3, 2, 4, 1) ** 2
  expected = np.abs(np.diff(np.asarray(clip), axis=1)).reshape(2, -1).mean(axis=1)
  np.testing.assert_allclose(am.temporal_change(clip), expected, rtol=1e-6)
  flow = jnp.stack([clip[:, t, ..., 0] for t in range(3)], axis=-1)  # [2,2,4,3]: channel 2t x, 2t+1 y
  flow = jnp.concatenate([flow[..., :2], flow[..., 1:]], axis=-1)  # fields (f0, f1), (f1, f2): [2,2,4,4]
  fields = np.stack([np.asarray(flow)[..., 0:2], np.asarray(flow)[..., 2:4]], axis=1)
  np.testing.assert_allclose(am.temporal_change(flow, "flow"),
                             np.abs(fields[:, 1] - fields[:, 0]).reshape(2, -1).mean(axis=1), rtol=1e-6)


VIDEO_FAMILIES = [name for name, cls in tiny.FAMILIES.items() if "video" in cls.inputs]
STREAMS = [("two_stream", dict(streams=s)) for s in ("rgb", "flow")]  # each stream alone; "both" is the family's


@pytest.mark.parametrize("name,overrides", [(n, {}) for n in VIDEO_FAMILIES] + STREAMS,
                         ids=VIDEO_FAMILIES + [f"two_stream_{o['streams']}" for _, o in STREAMS])
def test_every_video_family_traces(name, overrides):
  """Through the model contract: the class-logit optimum has the inputs' shapes, the scores one per step and example."""
  model, inputs = tiny.tiny(name, **overrides)
  variables = tiny.abstract_variables(model, inputs)
  shapes = [s.shape for s in inputs]

  def run(variables, rng):
    result = am.maximise(hooks.objective(model, variables, index=1), shapes, rng=rng, regulariser="fast", steps=2,
                         kinds=type(model).inputs)
    return result.inputs, result.scores

  optimum, scores = jax.eval_shape(run, variables, jax.random.key(0))
  assert [x.shape for x in optimum] == shapes and scores.shape == (2, shapes[0][0])


def test_an_image_model_traces_with_appearance():
  model, inputs = tiny.tiny("resnet18")
  variables = tiny.abstract_variables(model, inputs)

  def run(variables, rng):
    return am.maximise(hooks.objective(model, variables, index=0), [inputs[0].shape], rng=rng,
                       regulariser="appearance", steps=2).inputs

  (image,) = jax.eval_shape(run, variables, jax.random.key(0))
  assert image.shape == inputs[0].shape


def test_bad_input_is_refused_by_name():
  score = lambda x: x.reshape(x.shape[0], -1).mean(axis=1)  # noqa: E731
  shape = (B, T, H, W, C)
  key = jax.random.key(0)
  cases = [
      (dict(shapes=[shape], regulariser="medium"), "unknown regulariser 'medium'"),
      (dict(shapes=[(B, H, W)]), "rank 3"),
      (dict(shapes=[shape, (B, H, W, 7)]), "must be even"),
      (dict(shapes=[shape, (B + 1, H, W, 8)]), "batch sizes differ"),
      (dict(shapes=[shape], kinds=("clip",)), "unknown input kind 'clip'"),
      (dict(shapes=[shape], steps=0), "steps = 0"),
      (dict(shapes=[shape], learning_rate=0.0), "learning_rate"),
      (dict(shapes=[shape], value_range=(1.0, -1.0)), "value_range"),
      (dict(shapes=[shape], regulariser="appearance", temporal_weight=1.0), "appearance ties"),
      (dict(shapes=[]), "shapes is empty"),
  ]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      am.maximise(score, rng=key, **kwargs)
  with pytest.raises(ValueError, match=r"score returns \(2, 5\)"):
    am.maximise(lambda x: x[:, 0, 0, 0, :].repeat(2, axis=-1)[:, :5], [shape], rng=key)
  with pytest.raises(ValueError, match="an image has no time"):
    am.temporal_change(jnp.zeros((B, H, W, C)), "image")
  with pytest.raises(ValueError, match="at least 2 frames"):
    am.temporal_change(jnp.zeros((B, 1, H, W, C)))
