"""Seeing what the models learned: saliency, attention maps and activation maximisation (issue 17).

  hooks.py           read or nudge any layer of any model by its module path (flax method interception)
  runs.py            a trained run folder read back: config, eval model, variables
Command line: `python -m vit_video.visualize --workdir=RUN --method=... --out=DIR` (__main__.py).
"""
