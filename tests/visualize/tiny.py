"""One tiny model of every family in models.MODELS, for the visualisation methods' smoke tests.

The attribute overrides and input sizes are the contract test's (tests/models/test_contract.py FRAMES): small,
all different, and valid for each family. `FAMILIES` maps a representative name (the family's shortest registered
name, e.g. vit_b8 rather than a hybrid) to its family; `tiny(name)` builds it with K=5 classes and gives its input shapes with B=2.
"""
import jax
import jax.numpy as jnp

from tests.models import test_contract
from vit_video import models

B, K = 2, 5
FAMILIES = {}
for _name in sorted(models.MODELS, key=lambda n: (len(n), n)):
  FAMILIES.setdefault(models.model_class(_name), _name)
FAMILIES = {name: cls for cls, name in FAMILIES.items()}


def tiny(name: str, **overrides):
  """(model, [ShapeDtypeStruct per positional input]) for the named model at the contract test's sizes."""
  cls = models.model_class(name)
  model = models.create_model(name, num_classes=K, **{**test_contract.FRAMES[cls][0], **overrides})
  return model, test_contract._inputs(cls, model)  # pylint: disable=protected-access


def abstract_variables(model, inputs):
  """The variables' shapes (`jax.eval_shape` of init): enough for smoke tests traced with `jax.eval_shape`."""
  return jax.eval_shape(lambda *x: model.init(jax.random.key(0), *x, train=False), *inputs)


def zeros(inputs):
  return [jnp.zeros(s.shape, s.dtype) for s in inputs]
