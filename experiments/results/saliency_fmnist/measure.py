"""Saliency on the trained Fashion-MNIST runs of vit_vs_resnet: completeness of integrated gradients and the share
of each method's map on the garment (pixels brighter than the black background), on the first 256 test images.

Run from the repository root after `make run` (which trains workdirs/vit_vs_resnet/*, the quick sweep):
    python experiments/results/saliency_fmnist/measure.py bit_r8x1 vit_xs r_vit_xs bit_r14x2 vit_s r_vit_t
writes experiments/results/saliency_fmnist/measure.json (the numbers the README quotes; about 20 minutes on the
2-core CPU under load).
"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from vit_video.visualize import runs, saliency

N = 256
out = {}
for member in sys.argv[1:]:
  run = runs.load_run(f"workdirs/vit_vs_resnet/{member}")
  inputs, labels = runs.read_examples(run.config, N, "test")  # [N,28,28,1] in [-1, 1], black = -1
  images = inputs["image"]
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  model = run.model
  mask = images[..., 0] > -1 + 0.1 * 2  # garment: brighter than 10% grey

  def make_score(v):
    return lambda x: jnp.take_along_axis(model.apply(v, x, train=False), labels[:, None], axis=1)[:, 0]

  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(run.variables, images)
  row = {"accuracy": float((logits.argmax(-1) == labels).mean()), "garment_area": float(mask.mean())}
  methods = {
      "vanilla": lambda v, x: saliency.vanilla_gradient(make_score(v), x)[0],
      "smoothgrad": lambda v, x: saliency.smoothgrad(make_score(v), x, rng=jax.random.key(0))[0],
      "ig_zero": lambda v, x: saliency.integrated_gradients(make_score(v), x, steps=32)[0],
      "ig_black": lambda v, x: saliency.integrated_gradients(make_score(v), x, baselines=[-jnp.ones_like(x)],
                                                             steps=32)[0],
  }
  g_img = jax.jit(methods["vanilla"])(run.variables, images)
  g_zero = jax.jit(methods["vanilla"])(run.variables, jnp.zeros_like(images))
  row["grad_zero_over_images"] = float(jnp.abs(g_zero).mean() / jnp.abs(g_img).mean())
  for name, method in methods.items():
    t = time.time()
    a = jax.jit(method)(run.variables, images)
    a.block_until_ready()
    row[f"{name}_seconds"] = round(time.time() - t, 1)
    row[f"{name}_share"] = float(jnp.mean(saliency.share_on(saliency.to_map(a, "image"), mask)))
    if name.startswith("ig"):
      base = jnp.zeros_like(images) if name == "ig_zero" else -jnp.ones_like(images)
      diff = make_score(run.variables)(images) - make_score(run.variables)(base)
      err = jnp.abs(a.reshape(N, -1).sum(1) - diff)
      row[f"{name}_completeness_rel"] = float(err.mean() / jnp.abs(diff).mean())
      row[f"{name}_completeness_max"] = float(err.max())
  try:
    layer = saliency.cam_layer(model, run.variables, images)
    cams = [jax.jit(lambda v, x, k=k: saliency.grad_cam(model, v, x, index=k, layer=layer))(run.variables, images)
            for k in range(10)]
    cam = jnp.stack(cams)[labels, jnp.arange(N)]  # each image's own class
    row["gradcam_layer"], row["gradcam_grid"] = layer, list(cam.shape[1:])
    row["gradcam_share"] = float(jnp.nanmean(saliency.share_on(cam, mask.astype(jnp.float32))))
    row["gradcam_zero_maps"] = int((cam.reshape(N, -1).sum(1) == 0).sum())
  except ValueError as e:
    row["gradcam"] = str(e)[:80]
  out[member] = row
  print(member, json.dumps(row), flush=True)
json.dump(out, open("experiments/results/saliency_fmnist/measure.json", "w"), indent=1)
