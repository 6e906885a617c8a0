"""Seeing what the models learned: saliency, attention maps and activation maximisation, for every model of the
package through its contract (models/__init__.py).

  hooks.py           read or nudge any layer of any model by its module path (flax method interception)
  runs.py            a trained run folder read back: config, eval model, variables
  saliency.py        vanilla gradient, SmoothGrad, integrated gradients (any inputs), Grad-CAM (2D/3D CNNs),
                     to_map, share_on
  attention_maps.py  any transformer's sown attention weights by layer path, rollout, mean attention distance,
                     position-embedding similarity, patch-filter PCs, Swin windows and MViT key maps laid out
  figure7.py         the ViT paper's Figure 7 panels, per-head attention and rollout over images and clips;
                     `python -m vit_video.visualize.figure7 --workdir=RUN --out=DIR`
  activation_max.py  the input a class logit or a layer's channel likes best, under the appearance / slow / fast
                     temporal regularisers (Feichtenhofer et al.); clips, flow and images, one jitted lax.scan
  draw.py            matplotlib figures without pyplot: saliency over images and clip frames, optimised clips, GIFs
  __main__.py        `python -m vit_video.visualize --workdir=RUN --method=... --out=DIR`: any method on a trained
                     run's own eval examples -> PNG (and GIF for clips)
"""
