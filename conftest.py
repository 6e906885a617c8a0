"""Test set-up: 8 forced CPU devices so that sharding code is exercised.

The flag must be set before jax is first imported, hence here and not in a fixture.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
