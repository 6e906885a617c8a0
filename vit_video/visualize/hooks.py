"""Reading and nudging one layer of any model of the package, through flax's method interception.

    paths = layer_paths(model, variables, clip)                  # e.g. ["tower/conv0", ..., "head"]
    logits, act = apply_with_layer(model, variables, clip, layer="tower/conv1")
    score = objective(model, variables, layer="tower/conv1", index=3)   # f(*inputs) -> [B]

A layer is named by its module path, the "/"-joined names under the top-level module ("" is the model itself).
Every submodule's `__call__` that returns one array counts as a layer; `apply_with_layer` adds `delta` to that
output, so the gradient with respect to `delta` at zero is the gradient with respect to the layer's activation
(Grad-CAM, activation maximisation of a channel), with no change to the models. A module called more than once
in one forward pass (a tower shared by two inputs) is refused with the number of calls, and so is a layer inside
`nn.scan` or `nn.remat` (build the model with scan=False and remat off to read it).
"""
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _path(module: nn.Module) -> str:
  return "/".join(module.path)


def layer_shapes(model: nn.Module, variables: dict, *inputs: jax.Array) -> dict[str, tuple[tuple[int, ...], int]]:
  """Path -> (output shape of its first call, number of calls) for every submodule whose `__call__` returns one
  array, in the order they first run (traced with `jax.eval_shape`: nothing is computed)."""
  runs: dict[str, tuple[tuple[int, ...], int]] = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(out, jax.Array) and context.module.path:
      shape, calls = runs.get(_path(context.module), (out.shape, 0))
      runs[_path(context.module)] = (shape, calls + 1)
    return out

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda v, *x: model.apply(v, *x, train=False), variables, *inputs)
  return runs


def layer_paths(model: nn.Module, variables: dict, *inputs: jax.Array) -> list[str]:
  """Paths of the submodules whose `__call__` returns one array, in the order they first run."""
  return list(layer_shapes(model, variables, *inputs))


def apply_with_layer(model: nn.Module, variables: dict, *inputs: jax.Array, layer: str,
                     delta: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The eval model's output and the activation of `layer` (plus `delta`, same shape, when given).

  Raises ValueError naming the valid layers when `layer` never runs, or the number of calls when it runs twice.
  """
  captured = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name != "__call__" or _path(context.module) != layer or not context.module.path:
      return out
    if _root(context.module) is not type(model):
      raise ValueError(f"layer {layer!r} runs inside nn.scan or nn.remat; build the model with scan=False and "
                       f"remat off to read it")
    if not isinstance(out, jax.Array):
      raise ValueError(f"layer {layer!r} returns {type(out).__name__}, not one array")
    if delta is not None:
      if delta.shape != out.shape:
        raise ValueError(f"delta has shape {delta.shape}, layer {layer!r} returns {out.shape}")
      out = out + delta.astype(out.dtype)
    captured.append(out)
    return out

  with nn.intercept_methods(interceptor):
    output = model.apply(variables, *inputs, train=False)
  if len(captured) != 1:
    if not captured:
      raise ValueError(f"layer {layer!r} does not run in {type(model).__name__}; its layers are: "
                       f"{', '.join(layer_paths(model, variables, *inputs))}")
    raise ValueError(f"layer {layer!r} runs {len(captured)} times in one forward pass (a shared module); "
                     f"name a layer that runs once")
  return output, captured[0]


def _root(module: nn.Module) -> type:
  """The class at the top of a module's parent chain: the model's own class, or, inside a lifted transform
  (nn.scan, nn.remat), the lifted block's, whose parent is no longer a module."""
  while isinstance(module.parent, nn.Module):
    module = module.parent
  return type(module)


def objective(model: nn.Module, variables: dict, *, index: int, layer: str | None = None
              ) -> Callable[..., jax.Array]:
  """A score per example to explain or maximise: `f(*inputs) -> [B]` float32.

  `layer` None: the logit of class `index`. Otherwise channel `index` (the last axis) of `layer`'s activation,
  averaged over every other axis but the batch (a channel's mean over space and time).
  """
  def score(*inputs: jax.Array) -> jax.Array:
    if layer is None:
      logits = model.apply(variables, *inputs, train=False)
      if not 0 <= index < logits.shape[-1]:
        raise ValueError(f"class index {index} out of range for {logits.shape[-1]} classes")
      return logits[:, index].astype(jnp.float32)
    _, act = apply_with_layer(model, variables, *inputs, layer=layer)
    if not 0 <= index < act.shape[-1]:
      raise ValueError(f"channel {index} out of range: layer {layer!r} has {act.shape[-1]} channels")
    return act[..., index].astype(jnp.float32).reshape(act.shape[0], -1).mean(axis=1)  # [B]
  return score


def class_objective(model: nn.Module, variables: dict, labels) -> Callable[..., jax.Array]:
  """f(*inputs) -> [B]: each example's logit of its own class in `labels` [B]."""
  labels = jnp.asarray(labels)

  def score(*inputs):
    logits = model.apply(variables, *inputs, train=False).astype(jnp.float32)  # [B,K]
    return jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  return score
