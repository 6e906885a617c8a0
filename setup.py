"""vit_video: attention-based vision and video models in JAX/Flax.

Install for development with the pinned versions CI tested (CPU):
  pip install -r requirements.lock && pip install --no-deps -e .
and for accelerators add jax's own plugin on top of the same lock (README, "Pods"):
  pip install -e ".[tpu]"      # TPU VMs: libtpu
  pip install -e ".[cuda]"     # NVIDIA GPUs, CUDA 13 (the wheels bring CUDA and cuDNN); ".[cuda12]" for CUDA 12
"""
import setuptools

setuptools.setup(
    name="vit_video",
    version="0.1.0",
    description="JAX/Flax attention-based vision and video models, experiments and training.",
    url="https://github.com/vit-video/vit_video",  # the one place the GitHub location is declared (Colab links)
    packages=setuptools.find_packages(include=["vit_video", "vit_video.*"]),
    python_requires=">=3.11,<3.13",
    install_requires=[
        "jax>=0.10,<0.11",
        "jaxlib>=0.10,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "ml_collections>=1.1,<2",
        "numpy>=2.0,<3",
        "einops>=0.8,<0.9",
        "absl-py>=2.0",
        "tqdm>=4.66",
    ],
    extras_require={
        # Input pipelines (tfds + tf.data) and metric writers; training needs these.
        "data": [
            "tensorflow-cpu>=2.21,<2.22",
            "tensorflow-datasets>=4.9.10,<4.10",
            "importlib_resources>=6",
            "clu>=0.0.12",
            "tensorboard>=2.21,<2.22",
            "matplotlib>=3.10",
            "scikit-learn>=1.5",  # the sklearn_digits transfer set (load_digits is bundled with it)
            "opencv-python-headless>=5.0,<6",  # moving_fmnist_actions rendering, optical flow (DIS, Farneback)
            "imageio-ffmpeg>=0.8,<1",  # an ffmpeg binary for decoding video files (no system install needed)
            "pycocotools>=2.0.10,<2.1",  # COCO box AP of detections (vit_video.data.coco_eval)
            "scipy>=1.10",  # DETR's Hungarian matching (vit_video.train.detr_loss)
            "pycocoevalcap>=1.2,<1.3",  # BLEU and CIDEr of generated captions (the COCO caption evaluation)
            "easy-vqa>=1.0,<1.1",  # the easy_vqa dataset's images and questions (bundled in the wheel)
            "scikit-image>=0.26,<0.27",  # the natural photographs the Fourier-feature study regresses
        ],
        # Accelerators: jax's extras at the locked jax version (jaxlib is the same wheel; the plugin adds the device).
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        "cuda": ["jax[cuda13]>=0.10,<0.11"],
        "cuda12": ["jax[cuda12]>=0.10,<0.11"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "saliency>=0.2.1,<0.3",  # PAIR's saliency methods: the reference for vit_video.visualize.saliency's tests
        ],
    },
)
