"""Input data: tfds builders and tf.data pipelines (this package, unlike the rest of vit_video, uses TensorFlow).

Import the submodules you need; this file imports nothing so that `import vit_video.data` stays cheap:
  fashion_mnist_local  the offline Fashion-MNIST tfds builder and an idx-file reader/writer.
  prepare              `python -m vit_video.data.prepare NAME`: builds a dataset into a tfds data_dir.
  pipeline             tf.data train/eval iterators yielding numpy batches.
  augment              stateless (seeded) image and batch augmentations used by the pipeline.
"""
