"""vit_video: attention-based vision and video models in JAX/Flax.

Importing the package pulls in JAX and Flax only: TensorFlow is imported by `vit_video.data` alone.
"""
__version__ = "0.1.0"
