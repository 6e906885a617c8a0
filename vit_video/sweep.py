"""The study command's former name, kept so that the commands recorded with committed results still run:
`python -m vit_video.sweep ARGS` is `python -m vit_video.study ARGS`."""
from absl import app

from vit_video.study import main

if __name__ == "__main__":
  app.run(main)
