"""Fourier features (Tancik et al. 2020): coordinate MLPs regressing photographs with each input mapping.

    python -m vit_video.study --config=experiments/fourier_features.py:cpu --workdir=workdirs/fourier_features_cpu
    python -m vit_video.study --config=experiments/fourier_features.py:paper --workdir=workdirs/fourier_features

The paper's setting (Section 6 and its demo notebook): natural images centre-cropped to 512 x 512, a 4 x 256 ReLU
MLP with a sigmoid output, 256 frequencies, full-batch Adam at 1e-3 for 2,000 steps on every other pixel (the
256 x 256 grid of even rows and columns), PSNR on the other pixels; its Table 1 natural-image row is 19.32 /
21.71 / 24.95 / 25.57 dB for no mapping / basic / positional encoding / Gaussian at sigma 10. Members here: those
four, the Gaussian at sigma 1 and 100 (the paper's Figure 3 scales: too smooth, and overfitting) and at 30 (a
downscaled photograph holds more detail per pixel than a 512 px crop, so its best scale may be higher). Positional
encoding: 128 log-linear frequencies per coordinate from 1 to sigma = 2^6 = 64 cycles per image (256 in all, as
many as the Gaussian's). The paper tunes this scale per task; 2^6 is the `posenc_scale = 6` of a public port of its
experiment code (its own table of scales could not be read offline here), so this value is our choice.

Scales (sigmas are given at 512 px and the study scales them to the image size: study vit_video/studies/
fourier_features.py):
  paper  the setting above on 4 scikit-image photographs at 512 px (for an accelerator; not run here).
  cpu    the same 4 photographs at 64 x 64 (trained on the 32 x 32 grid, tested on the other 3,072 pixels),
         everything else as the paper's: 28 fits of 2,000 steps on the 2-core CPU (committed results in
         experiments/results/fourier_features_cpu/).
  tiny   12 x 12 images, a 2 x 16 MLP with 8 frequencies, 6 steps (tests).
"""
import ml_collections

from vit_video import configs

SCALES = ("cpu", "paper", "tiny")
IMAGES = ("astronaut", "camera", "coffee", "chelsea")
MEMBERS = {  # name -> mapping and sigma at 512 px, in table order
    "none": dict(mapping="none", sigma=1.0),
    "basic": dict(mapping="basic", sigma=1.0),
    "positional": dict(mapping="positional", sigma=64.0),
    "gaussian_1": dict(mapping="gaussian", sigma=1.0),
    "gaussian_10": dict(mapping="gaussian", sigma=10.0),
    "gaussian_30": dict(mapping="gaussian", sigma=30.0),
    "gaussian_100": dict(mapping="gaussian", sigma=100.0),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  scale = configs.pick_scale(arg, SCALES, default="cpu")
  tiny = scale == "tiny"
  c = ml_collections.ConfigDict()
  c.study = "fourier_features"  # The study that runs this config (vit_video/studies/fourier_features.py).
  c.name = f"fourier_features/{scale}"
  c.images = IMAGES[:2] if tiny else IMAGES  # scikit-image photographs (vit_video/data/photographs.py)
  c.image_size = {"paper": 512, "cpu": 64, "tiny": 12}[scale]  # the centre square resized to this side
  c.paper_size = 512  # the members' sigmas are given at this size and scaled by image_size / paper_size
  c.members = ml_collections.ConfigDict(MEMBERS)  # name -> mapping, sigma (at paper_size)
  c.order = tuple(MEMBERS)  # table and figure order (a ConfigDict's keys come back sorted)
  c.model = ml_collections.ConfigDict(dict(  # CoordinateMLP attributes shared by every member
      depth=2 if tiny else 4,  # Dense layers, the output one included
      width=16 if tiny else 256,
      num_features=8 if tiny else 256,  # frequencies of the positional and Gaussian mappings
  ))
  c.steps = 6 if tiny else 2000  # full-batch Adam steps
  c.learning_rate = 1e-3
  c.eval_every = 3 if tiny else 250  # PSNR curve points (and the length of one jitted chunk of steps)
  c.seed = 0  # initialisation (and the Gaussian B), the same for every image and member
  return c.lock()
