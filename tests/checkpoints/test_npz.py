"""import_vit_npz: published `.npz` layouts, read by timm's own loaders and by ours, give the same outputs.

Each checkpoint is written here from random arrays under the published key names (vit_jax, big_vision
scanned and not, the R+ViT hybrid, big_transfer BiT); timm reads it with its `_load_weights`, we with
`import_vit_npz`, and the eval-mode outputs on 32x48 images must agree to 1e-4 of the logit scale. Then:
position-embedding resampling (checked against timm's), head dropping, and the errors: arrays that do not fit the
model (all listed, with the sizes that differ), files that are no whole .npz (truncated, damaged, a text page, a
pickle), non-finite weights.
"""
import logging
import pathlib
import pickle
import re

import jax
import numpy as np
import pytest

from tests.checkpoints.timm_reference import (import_timm, require_torch, run, tiny_bit, tiny_hybrid, tiny_vit,
                                              use_vit_jax_numerics_)
from vit_video.checkpoints import import_vit_npz
from vit_video.checkpoints.npz import ModelMismatchError
from vit_video.models import create_model

B, H, W, C, K = 2, 32, 48, 3, 5
D, HEADS, MLP, DEPTH, P = 24, 2, 48, 2, 4  # Width, heads, MLP width, blocks, patch.
TINY_VIT = dict(patch_size=P, width=D, depth=DEPTH, num_heads=HEADS, mlp_dim=MLP)
TINY_HYBRID = dict(TINY_VIT, patch_size=1, stem_stage_sizes=(1, 1), stem_width_factor=0.5)
TINY_BIT = dict(stage_sizes=(1, 1), width=32)
GRID = (H // P, W // P)  # 8 x 12 tokens.


@pytest.fixture(scope="module")
def timm():
  require_torch("timm (the reference implementation) needs torch")
  return import_timm()


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).normal(size=(B, H, W, C)).astype(np.float32)


class Arrays:
  """Random float32 arrays: kernels N(0, 1/fan_in) (fan_in = all axes but the last), norm scales U(0.5, 1.5),
  biases and shifts N(0, 0.3^2), embeddings N(0, 0.5^2)."""

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)

  def kernel(self, *shape, fan_in=None):
    return (self.rng.normal(size=shape) / np.sqrt(fan_in or np.prod(shape[:-1]))).astype(np.float32)

  def scale(self, n):
    return self.rng.uniform(0.5, 1.5, n).astype(np.float32)

  def bias(self, *shape):
    return (0.3 * self.rng.normal(size=shape)).astype(np.float32)

  def embed(self, *shape):
    return (0.5 * self.rng.normal(size=shape)).astype(np.float32)


def vit_jax_arrays(seed=0, *, tokens=1 + GRID[0] * GRID[1], cls=True, patch=P, in_dim=C, pre_logits=False):
  """A ViT in google-research/vision_transformer's layout (flax names of models_vit.py)."""
  r = Arrays(seed)
  a = {"embedding/kernel": r.kernel(patch, patch, in_dim, D), "embedding/bias": r.bias(D),
       "Transformer/posembed_input/pos_embedding": r.embed(1, tokens, D),
       "Transformer/encoder_norm/scale": r.scale(D), "Transformer/encoder_norm/bias": r.bias(D),
       "head/kernel": r.kernel(D, K), "head/bias": r.bias(K)}
  if cls:
    a["cls"] = r.embed(1, 1, D)
  if pre_logits:
    a["pre_logits/kernel"], a["pre_logits/bias"] = r.kernel(D, D), r.bias(D)
  for i in range(DEPTH):
    b = f"Transformer/encoderblock_{i}/"
    for norm in ("LayerNorm_0", "LayerNorm_2"):
      a[f"{b}{norm}/scale"], a[f"{b}{norm}/bias"] = r.scale(D), r.bias(D)
    for proj in ("query", "key", "value"):
      a[f"{b}MultiHeadDotProductAttention_1/{proj}/kernel"] = r.kernel(D, HEADS, D // HEADS, fan_in=D)
      a[f"{b}MultiHeadDotProductAttention_1/{proj}/bias"] = r.bias(HEADS, D // HEADS)
    a[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = r.kernel(HEADS, D // HEADS, D)
    a[f"{b}MultiHeadDotProductAttention_1/out/bias"] = r.bias(D)
    a[f"{b}MlpBlock_3/Dense_0/kernel"], a[f"{b}MlpBlock_3/Dense_0/bias"] = r.kernel(D, MLP), r.bias(MLP)
    a[f"{b}MlpBlock_3/Dense_1/kernel"], a[f"{b}MlpBlock_3/Dense_1/bias"] = r.kernel(MLP, D), r.bias(D)
  return a


def hybrid_trunk_arrays(seed=1, width=32, stages=(1, 1)):
  """vit_jax's ResNet trunk (models_resnet.py): conv_root, gn_root, block{s}/unit{u}/{conv,gn}{1,2,3,_proj}."""
  r = Arrays(seed)
  a = {"conv_root/kernel": r.kernel(7, 7, C, width), "gn_root/scale": r.scale(width), "gn_root/bias": r.bias(width)}
  cin = width
  for s, units in enumerate(stages, start=1):
    mid = width * 2 ** (s - 1)
    for u in range(1, units + 1):
      b = f"block{s}/unit{u}/"
      shapes = {"conv1": (1, 1, cin, mid), "conv2": (3, 3, mid, mid), "conv3": (1, 1, mid, 4 * mid)}
      if u == 1:
        shapes["conv_proj"] = (1, 1, cin, 4 * mid)
      for conv, shape in shapes.items():
        gn = conv.replace("conv", "gn")
        a[f"{b}{conv}/kernel"] = r.kernel(*shape)
        a[f"{b}{gn}/scale"], a[f"{b}{gn}/bias"] = r.scale(shape[-1]), r.bias(shape[-1])
      cin = 4 * mid
  return a


def to_big_vision(a, *, prefix, scanned):
  """vit_jax names -> big_vision's (vit.py): pos_embedding at the top, blocks MultiHeadDotProductAttention_0,
  LayerNorm_0/1, MlpBlock_0, optionally scanned into Transformer/encoderblock/ with a leading layer axis."""
  renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0", "LayerNorm_2": "LayerNorm_1",
             "MlpBlock_3": "MlpBlock_0", "Transformer/posembed_input/pos_embedding": "pos_embedding"}
  out = {}
  for k, v in a.items():
    for old, new in renames.items():
      k = k.replace(old, new)
    out[k] = v
  if scanned:
    for k in [k for k in out if k.startswith("Transformer/encoderblock_0/")]:
      rest = k[len("Transformer/encoderblock_0/"):]
      out[f"Transformer/encoderblock/{rest}"] = np.stack([out.pop(f"Transformer/encoderblock_{i}/{rest}")
                                                          for i in range(DEPTH)])
  return {prefix + k: v for k, v in out.items()}


def bit_arrays(seed=2, width=32, stages=(1, 1)):
  """big_transfer's BiT layout (bit_jax): resnet/root_block, block{s}/unit{uu:02d}/{a,b,c}, a/proj, head/conv2d."""
  r = Arrays(seed)
  a = {"resnet/root_block/standardized_conv2d/kernel": r.kernel(7, 7, C, width)}
  cin = width
  for s, units in enumerate(stages, start=1):
    mid = width * 2 ** (s - 1)
    for u in range(1, units + 1):
      b = f"resnet/block{s}/unit{u:02d}/"
      convs = {"a": (1, 1, cin, mid), "b": (3, 3, mid, mid), "c": (1, 1, mid, 4 * mid)}
      for name, shape in convs.items():  # Pre-activation: each norm acts on its conv's input.
        a[f"{b}{name}/standardized_conv2d/kernel"] = r.kernel(*shape)
        a[f"{b}{name}/group_norm/gamma"], a[f"{b}{name}/group_norm/beta"] = r.scale(shape[2]), r.bias(shape[2])
      if u == 1:
        a[f"{b}a/proj/standardized_conv2d/kernel"] = r.kernel(1, 1, cin, 4 * mid)
      cin = 4 * mid
  a["resnet/group_norm/gamma"], a["resnet/group_norm/beta"] = r.scale(cin), r.bias(cin)
  a["resnet/head/conv2d/kernel"], a["resnet/head/conv2d/bias"] = r.kernel(1, 1, cin, K), r.bias(K)
  return a


def save(tmp_path, arrays, name="ckpt.npz"):
  path = tmp_path / name
  np.savez(path, **arrays)
  return path


def max_rel_err(ours, ref) -> float:
  """max |ours - ref| / max |ref|: the error relative to the logit scale."""
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def ours(name, variables, images, num_classes=K, **overrides):
  return np.asarray(create_model(name, num_classes=num_classes, **overrides).apply(variables, images, train=False))


def test_vit_jax_layout_matches_timm(timm, images, tmp_path, caplog):
  """A non-square 8x12 grid, read without image_size; the in21k-style pre_logits is dropped by both."""
  from timm.models.vision_transformer import _load_weights
  path = save(tmp_path, vit_jax_arrays(pre_logits=True))
  ref_model = tiny_vit(timm)
  _load_weights(ref_model, str(path))
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_vit_npz("vit_ti16", path, **TINY_VIT)
  assert "pre_logits/kernel" in caplog.text and "pre_logits" not in variables["params"]
  ref = run(ref_model, images)
  err = max_rel_err(ours("vit_ti16", variables, images, **TINY_VIT), ref)
  print(f"vit_jax npz: max rel err {err:.2e}")
  assert np.std(ref) > 0.1 and err < 1e-4


@pytest.mark.parametrize("prefix, scanned, cls, scan", [
    ("params/", True, False, False), ("params/", True, False, True), ("opt/target/", False, True, False),
    ("params/img/", False, True, False)])
def test_big_vision_layout_matches_timm(timm, images, tmp_path, prefix, scanned, cls, scan):
  from timm.models.vision_transformer import _load_weights
  arrays = to_big_vision(vit_jax_arrays(cls=cls, tokens=int(cls) + GRID[0] * GRID[1]), prefix=prefix,
                         scanned=scanned)
  # Outside the prefix, ignored: a LiT text tower, optimizer state.
  arrays["params/txt/embedding" if prefix == "params/img/" else "opt/state/step"] = np.ones(3, np.float32)
  path = save(tmp_path, arrays)
  # Without a class token: mean of the normed tokens (big_vision 'gap'), so timm's fc_norm is off.
  ref_model = tiny_vit(timm, **({} if cls else dict(class_token=False, global_pool="avg", fc_norm=False)))
  _load_weights(ref_model, str(path))
  overrides = dict(TINY_VIT, pool="token" if cls else "gap")
  variables = import_vit_npz("vit_ti16", path, image_size=(H, W), scan=scan, **overrides)
  err = max_rel_err(ours("vit_ti16", variables, images, scan=scan, **overrides), run(ref_model, images))
  print(f"big_vision npz ({prefix}, scanned {scanned}, cls {cls}) into scan={scan}: max rel err {err:.2e}")
  assert err < 1e-4


def test_hybrid_vit_jax_layout_matches_timm(timm, images, tmp_path):
  """timm's trunk runs at vit_jax's numerics here (those of the checkpoint's source and of our ResNetStem)."""
  from timm.models.vision_transformer import _load_weights
  arrays = {**vit_jax_arrays(tokens=1 + (H // 8) * (W // 8), patch=1, in_dim=256), **hybrid_trunk_arrays()}
  path = save(tmp_path, arrays)
  ref_model = use_vit_jax_numerics_(tiny_hybrid(timm))
  _load_weights(ref_model, str(path))
  variables = import_vit_npz("r50_vit_b16", path, image_size=(H, W), **TINY_HYBRID)
  assert set(variables["params"]["stem"]) == {"conv_root", "gn_root", "block1", "block2"}
  err = max_rel_err(ours("r50_vit_b16", variables, images, **TINY_HYBRID), run(ref_model, images))
  print(f"hybrid vit_jax npz: max rel err {err:.2e}")
  assert err < 1e-4


def test_bit_layout_matches_timm(timm, images, tmp_path):
  from timm.models.resnetv2 import _load_weights
  path = save(tmp_path, bit_arrays())
  ref_model = tiny_bit(timm)
  _load_weights(ref_model, str(path))
  variables = import_vit_npz("bit_r50x1", path, **TINY_BIT)
  err = max_rel_err(ours("bit_r50x1", variables, images, **TINY_BIT), run(ref_model, images))
  print(f"BiT npz: max rel err {err:.2e}")
  assert err < 1e-4


def test_position_embedding_is_resampled_like_timm(timm, images, tmp_path, caplog):
  """A 3x3 checkpoint grid fine-tuned at 32x48 (8x12 tokens): bilinear upsampling, class token row kept; timm
  (bilinear, antialias off) resamples the same way. Resampling to the checkpoint's own grid changes nothing."""
  from timm.models.vision_transformer import _load_weights
  arrays = vit_jax_arrays(tokens=1 + 3 * 3)
  path = save(tmp_path, arrays)
  ref_model = tiny_vit(timm)
  _load_weights(ref_model, str(path))
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_vit_npz("vit_ti16", path, image_size=(H, W), **TINY_VIT)
  assert "resampled" in caplog.text
  pos = np.asarray(variables["params"]["Transformer"]["posembed_input"]["pos_embedding"])
  ckpt = arrays["Transformer/posembed_input/pos_embedding"]
  assert pos.shape == (1, 1 + GRID[0] * GRID[1], D)
  np.testing.assert_array_equal(pos[:, 0], ckpt[:, 0])
  np.testing.assert_allclose(pos, ref_model.pos_embed.detach().numpy(), rtol=0, atol=1e-6)
  assert max_rel_err(ours("vit_ti16", variables, images, **TINY_VIT), run(ref_model, images)) < 1e-4
  same = import_vit_npz("vit_ti16", path, image_size=3 * P, **TINY_VIT)
  np.testing.assert_array_equal(same["params"]["Transformer"]["posembed_input"]["pos_embedding"], ckpt)


def test_other_num_classes_drops_the_head(tmp_path, caplog, images):
  path = save(tmp_path, vit_jax_arrays())
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_vit_npz("vit_ti16", path, num_classes=7, **TINY_VIT)
  assert "head" not in variables["params"] and "dropped head/bias, head/kernel" in caplog.text
  model = create_model("vit_ti16", num_classes=7, **TINY_VIT)
  fresh = model.init(jax.random.key(0), images, train=False)
  # A fresh head is zero; random values show it is the one used, on top of the checkpoint's features.
  head = {"kernel": jax.random.normal(jax.random.key(1), (D, 7)), "bias": jax.random.normal(jax.random.key(2), (7,))}
  fresh["params"]["head"] = head
  merged = {"params": {**fresh["params"], **variables["params"]}}
  features = import_vit_npz("vit_ti16", path, num_classes=0, **TINY_VIT)
  expected = ours("vit_ti16", features, images, num_classes=0, **TINY_VIT) @ head["kernel"] + head["bias"]
  np.testing.assert_allclose(model.apply(merged, images, train=False), expected, rtol=1e-5, atol=1e-5)
  kept = import_vit_npz("bit_r50x1", save(tmp_path, bit_arrays(), "bit.npz"), num_classes=K, **TINY_BIT)
  assert kept["params"]["head"]["kernel"].shape == (4 * 64, K)


def test_wrong_family_is_refused(tmp_path):
  vit_path, bit_path = save(tmp_path, vit_jax_arrays(), "vit.npz"), save(tmp_path, bit_arrays(), "bit.npz")
  with pytest.raises(ValueError, match=r"vit_ti16: .*bit\.npz is not a ViT checkpoint.*'resnet/block1"):
    import_vit_npz("vit_ti16", bit_path, **TINY_VIT)
  with pytest.raises(ValueError, match=r"bit_r50x1: .*vit\.npz is not a BiT checkpoint"):
    import_vit_npz("bit_r50x1", vit_path, **TINY_BIT)
  with pytest.raises(ValueError, match=r"resnet50: no published \.npz layout for ResNet"):
    import_vit_npz("resnet50", vit_path)


def test_wrong_shape_lists_the_arrays_both_shapes_and_the_sizes_that_differ(tmp_path):
  path = save(tmp_path, vit_jax_arrays())
  with pytest.raises(ModelMismatchError, match=(
      rf"vit_ti16: {re.escape(str(path))} does not fit the model: sizes that differ \(checkpoint vs model\): mlp_dim "
      r"48 vs 40; 6 checkpoint array\(s\) differ in shape \(checkpoint vs model\): 'Transformer/encoderblock_0/"
      r"MlpBlock_3/Dense_0/bias' \(48,\) vs \(40,\), 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel' "
      r"\(24, 48\) vs \(24, 40\), .* and 1 more$")):
    import_vit_npz("vit_ti16", path, **dict(TINY_VIT, mlp_dim=40))
  with pytest.raises(ValueError, match=r"in_channels 3 vs 5; 1 checkpoint array\(s\) .*: 'embedding/kernel' "
                                       r"\(4, 4, 3, 24\) vs \(4, 4, 5, 24\)$"):
    import_vit_npz("vit_ti16", path, **dict(TINY_VIT, in_channels=5))
  with pytest.raises(ValueError, match=r"patch_size 4 vs 8, width 24 vs 32, depth 2 vs 1; 22 checkpoint array"):
    import_vit_npz("vit_ti16", path, **dict(TINY_VIT, patch_size=8, width=32, depth=1))
  with pytest.raises(ValueError, match=r"not divisible by patch size"):
    import_vit_npz("vit_ti16", path, image_size=(30, 48), **TINY_VIT)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
  arrays = bit_arrays()
  del arrays["resnet/block2/unit01/b/group_norm/beta"]
  with pytest.raises(ModelMismatchError, match=r"bit_r50x1: .* does not fit the model: 1 model variable\(s\) are "
                                               r"missing from the checkpoint: params/stage1/block0/norm2/bias$"):
    import_vit_npz("bit_r50x1", save(tmp_path, arrays), **TINY_BIT)
  arrays = vit_jax_arrays()
  arrays["Transformer/encoderblock_2/LayerNorm_0/scale"] = np.ones(D, np.float32)
  with pytest.raises(ModelMismatchError, match=r"sizes that differ \(checkpoint vs model\): depth 3 vs 2; 1 "
                                               r"checkpoint array\(s\) have no place in the model: "
                                               r"'Transformer/encoderblock_2/LayerNorm_0/scale'$"):
    import_vit_npz("vit_ti16", save(tmp_path, arrays, "extra.npz"), **TINY_VIT)


def test_a_truncated_or_damaged_archive_is_named_with_the_fix(tmp_path):
  """The first half of a real .npz (a download cut short: no zip index), and one with bytes overwritten inside an
  array (its CRC fails when read)."""
  data = save(tmp_path, vit_jax_arrays()).read_bytes()
  half = tmp_path / "half.npz"
  half.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=rf"^{re.escape(str(half))} is not a complete \.npz archive \(BadZipFile: .*\): "
                                       r"a truncated or damaged download\? Download it again$"):
    import_vit_npz("vit_ti16", half, **TINY_VIT)
  damaged = tmp_path / "damaged.npz"
  damaged.write_bytes(data[:len(data) // 2] + b"\xff" * 64 + data[len(data) // 2 + 64:])
  with pytest.raises(ValueError, match=rf"^{re.escape(str(damaged))}: array '.*' cannot be read \(BadZipFile: Bad "
                                       r"CRC-32 .*\): the \.npz archive is damaged .* Download it again$"):
    import_vit_npz("vit_ti16", damaged, **TINY_VIT)


def test_a_file_that_is_no_npz_is_named_with_its_first_bytes(tmp_path):
  """A saved HTML error page (what a failed download often leaves) is a text file, not "pickled data"."""
  page = tmp_path / "ViT-B_16.npz"
  page.write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n")
  with pytest.raises(ValueError) as e:
    import_vit_npz("vit_ti16", page, **TINY_VIT)
  assert str(e.value) == (f"{page} is not an .npz archive (a zip of .npy arrays): its first bytes are "
                          r"b'<!DOCTYPE html>\n<html><body>404 '")
  single = tmp_path / "single.npz"
  with single.open("wb") as f:
    np.save(f, np.ones(3, np.float32))
  with pytest.raises(ValueError, match=rf"^{re.escape(str(single))} is not an .* a single \.npy array \(np\.save\)"):
    import_vit_npz("vit_ti16", single, **TINY_VIT)
  empty = tmp_path / "empty.npz"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match=rf"^{re.escape(str(empty))} is not an \.npz archive .*: the file is empty$"):
    import_vit_npz("vit_ti16", empty, **TINY_VIT)


def test_non_finite_weights_are_refused_naming_the_keys(tmp_path):
  arrays = vit_jax_arrays()
  arrays["head/kernel"][0, :3] = np.nan
  arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"][5] = -np.inf
  path = save(tmp_path, arrays)
  with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: 2 array\(s\) hold NaN or infinity: "
                                       r"'Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias' \(1 of 48 values\), "
                                       r"'head/kernel' \(3 of 120 values\); weights must be finite"):
    import_vit_npz("vit_ti16", path, **TINY_VIT)
  scanned = to_big_vision(vit_jax_arrays(), prefix="params/", scanned=True)  # a stacked array: its layer is named
  scanned["params/Transformer/encoderblock/LayerNorm_0/scale"][1, 0] = np.inf
  with pytest.raises(ValueError, match=r"1 array\(s\) hold NaN or infinity: "
                                       r"'params/Transformer/encoderblock/LayerNorm_0/scale\[1\]' \(1 of 24 values\)"):
    import_vit_npz("vit_ti16", save(tmp_path, scanned, "scanned.npz"), **TINY_VIT)


class _Payload:
  """Unpickling this would create the file `marker`."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_pickled_content_is_refused_and_never_run(tmp_path):
  marker = tmp_path / "unpickled"
  arrays = dict(vit_jax_arrays(), extra=np.array([_Payload(str(marker))], dtype=object))
  with pytest.raises(ValueError, match=r"array 'extra' cannot be read without pickle"):
    import_vit_npz("vit_ti16", save(tmp_path, arrays), **TINY_VIT)
  plain_pickle = tmp_path / "ckpt.pkl"
  plain_pickle.write_bytes(pickle.dumps({"embedding/kernel": _Payload(str(marker))}))
  with pytest.raises(ValueError, match=r"ckpt\.pkl is not an \.npz archive .*: it is a Python pickle, which is "
                                       r"never loaded"):
    import_vit_npz("vit_ti16", plain_pickle, **TINY_VIT)
  assert not marker.exists()
