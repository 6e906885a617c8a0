"""scikit-image's bundled photographs as [H,W,3] float32 images in [0, 1], and the pixel split of coordinate MLPs.

    image = photographs.load("astronaut", size=64)       # () -> [64,64,3], the centre square resized
    split = photographs.split(image)                      # train: every other pixel of every other row

The photographs ship inside the scikit-image wheel (skimage/data/*.png, *.jpg): nothing is downloaded. Grey ones
(camera) are repeated over the three channels. `load` takes the centre square (side = the shorter side) and
resizes it with anti-aliasing (skimage.transform.resize), as Tancik et al. (2020) centre-crop their natural images
to 512 x 512.

The split is the paper's: the MLP is trained on the pixels at even rows and even columns (a quarter, a regular
grid of half the resolution) and tested on the other three quarters. Pixel (row r, column c) of an [H,W] image
has coordinates v = (c / W, r / H) in [0, 1)^2: x first, then y, as the paper's demo builds them.
"""
import numpy as np

# skimage.data functions whose photographs are in the wheel (no download); the first four are the study's.
NAMES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def load(name: str, size: int) -> np.ndarray:
  """The photograph `name`'s centre square resized to size x size: () -> [size,size,3] float32 in [0, 1]."""
  import skimage.data  # noqa: PLC0415  (scikit-image loads only when a photograph is asked for)
  import skimage.transform  # noqa: PLC0415
  if name not in NAMES:
    raise ValueError(f"unknown photograph {name!r}; valid: {', '.join(NAMES)}")
  image = np.asarray(getattr(skimage.data, name)())
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)  # [H,W] grey -> [H,W,3]
  image = image[..., :3].astype(np.float32) / 255.0  # uint8 [H,W,3 or 4] -> float [H,W,3] in [0, 1]
  h, w = image.shape[:2]
  side = min(h, w)
  if not 1 <= size <= side:
    raise ValueError(f"size={size} must be in [1, {side}] (the shorter side of {name!r}, {h}x{w}): photographs "
                     f"are only ever downscaled")
  top, left = (h - side) // 2, (w - side) // 2
  square = image[top:top + side, left:left + side]  # [side,side,3], the centre square
  if side == size:
    return square
  resized = skimage.transform.resize(square, (size, size), order=1, anti_aliasing=True)  # [size,size,3]
  return np.clip(resized, 0.0, 1.0).astype(np.float32)


def coordinates(h: int, w: int) -> np.ndarray:
  """Pixel coordinates: () -> [H,W,2] float32, [r, c] = (c / W, r / H) in [0, 1)."""
  if h < 1 or w < 1:
    raise ValueError(f"image size {h}x{w} must be at least 1x1")
  x = np.arange(w, dtype=np.float32) / w  # [W]
  y = np.arange(h, dtype=np.float32) / h  # [H]
  return np.stack(np.meshgrid(x, y), axis=-1)  # [H,W,2], meshgrid's "xy" indexing: x along columns


def train_mask(h: int, w: int) -> np.ndarray:
  """True on the training pixels, those at even rows and even columns: () -> [H,W] bool."""
  rows = np.arange(h) % 2 == 0  # [H]
  cols = np.arange(w) % 2 == 0  # [W]
  return rows[:, None] & cols[None, :]


def split(image: np.ndarray) -> dict[str, np.ndarray]:
  """[H,W,C] image -> {"train_coords" [N,2], "train_pixels" [N,C], "test_coords" [M,2], "test_pixels" [M,C],
  "coords" [H,W,2]} with N = ceil(H/2) * ceil(W/2) and N + M = H * W; pixels in row-major order."""
  if image.ndim != 3:
    raise ValueError(f"image must be [H,W,C]; got shape {image.shape}")
  h, w = image.shape[:2]
  coords = coordinates(h, w)
  mask = train_mask(h, w)
  return {"train_coords": coords[mask], "train_pixels": image[mask],
          "test_coords": coords[~mask], "test_pixels": image[~mask], "coords": coords}
