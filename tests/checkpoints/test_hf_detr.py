"""import_hf_detr: a tiny Hugging Face DetrForObjectDetection with random weights (every parameter and frozen
BatchNorm buffer) gives the same logits, boxes and auxiliary outputs in our DETR, on padded images; plus head
replacement and the errors for a wrong shape, a missing key, an unknown key and an unknown attribute."""
import logging

import jax
import numpy as np
import pytest

from tests.checkpoints import hf_reference
from tests.checkpoints.hf_reference import TINY, K
from vit_video.checkpoints.hf_detr import import_hf_detr
from vit_video.models.detr import DETR

B, H, W = 2, 32, 48  # stride 8: a 4 x 6 token grid


@pytest.fixture(scope="module")
def reference():
  """(HF model, its state dict as numpy)."""
  model = hf_reference.tiny_detr(hf_reference.import_transformers())
  return model, hf_reference.state_dict(model)


def hf_outputs(model, images, mask):
  """HF's logits and boxes, and the aux outputs of the official DETR: the heads on decoder_norm(layer i's output).

  HF computes aux outputs only with `auxiliary_loss=True`, and then feeds the *normalised* output of each decoder
  layer to the next (and normalises the last twice), unlike the official code; the plain model's decoder hidden
  states are the official layers' outputs, so the aux outputs are rebuilt from them.
  """
  import torch
  with torch.no_grad():
    out = model(torch.from_numpy(images).permute(0, 3, 1, 2), pixel_mask=torch.from_numpy(mask.astype(np.int64)),
                output_hidden_states=True)
    aux = []
    for hidden in out.decoder_hidden_states[1:-1]:  # [0] is the zero input, [-1] the final normalised output
      y = model.model.decoder.layernorm(hidden)
      aux.append({"logits": model.class_labels_classifier(y).numpy(),
                  "boxes": model.bbox_predictor(y).sigmoid().numpy()})
  return {"logits": out.logits.numpy(), "boxes": out.pred_boxes.numpy(), "aux": aux}


def max_rel_err(ours, ref) -> float:
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def test_outputs_match_hugging_face_on_padded_images(reference):
  model, sd = reference
  images = np.random.default_rng(0).normal(size=(B, H, W, 3)).astype(np.float32)
  mask = np.ones((B, H, W), bool)
  mask[1, 20:], mask[1, :, 30:] = False, False  # image 1 is 20 x 30 real pixels: 3 x 4 of the 4 x 6 tokens
  ref = hf_outputs(model, images, mask)
  variables = import_hf_detr(sd, **TINY)
  assert set(variables) == {"params", "constants"}
  ours = jax.jit(lambda v, x, m: DETR(num_classes=K, **TINY).apply(v, x, train=False, mask=m))(variables, images, mask)
  assert ours["logits"].shape == (B, TINY["num_queries"], K + 1) and len(ours["aux"]) == 1 == len(ref["aux"])
  assert np.std(ref["logits"]) > 0.3 and np.std(ref["boxes"]) > 0.05  # random weights move the outputs
  errors = {"logits": max_rel_err(ours["logits"], ref["logits"]), "boxes": max_rel_err(ours["boxes"], ref["boxes"])}
  for i, (a, r) in enumerate(zip(ours["aux"], ref["aux"])):
    errors.update({f"aux{i} logits": max_rel_err(a["logits"], r["logits"]),
                   f"aux{i} boxes": max_rel_err(a["boxes"], r["boxes"])})
  print("max rel err", {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) < 1e-5, errors


def test_other_num_classes_drops_the_class_head(reference, caplog):
  _, sd = reference
  with caplog.at_level(logging.INFO, logger="vit_video.checkpoints"):
    variables = import_hf_detr(sd, num_classes=3, **TINY)
  assert "class_embed" not in variables["params"] and "bbox_embed0" in variables["params"]
  assert "class_labels_classifier.weight" in caplog.text
  assert import_hf_detr(sd, num_classes=K, **TINY)["params"]["class_embed"]["kernel"].shape == (16, K + 1)


def test_wrong_shape_names_the_key_and_both_shapes(reference):
  _, sd = reference
  with pytest.raises(ValueError, match=r"detr: checkpoint array 'model\.encoder\.layers\.0\.fc1\.weight' has shape "
                                       r"\(32, 16\) \(converted to \(16, 32\)\) but the model's "
                                       r"'params/encoder0/linear1/kernel' has shape \(16, 24\)"):
    import_hf_detr(sd, **dict(TINY, ffn_dim=24))


def test_missing_and_unknown_keys_are_listed(reference):
  _, sd = reference
  missing = dict(sd)
  del missing["model.backbone.conv_encoder.model.layer2.0.downsample.1.running_var"]
  with pytest.raises(ValueError, match=r"missing from the checkpoint: "
                                       r"constants/backbone/layer2/block0/downsample_bn/var"):
    import_hf_detr(missing, **TINY)
  with pytest.raises(ValueError, match=r"26 checkpoint array\(s\) have no place in the model: "
                                       r"'model\.decoder\.layers\.1\.encoder_attn\.k_proj\.bias' \(as "
                                       r"'params/decoder1/cross_attn/key/bias'\)"):
    import_hf_detr(sd, **dict(TINY, num_decoder_layers=1))
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['depth'\]"):
    import_hf_detr(sd, depth=2)
