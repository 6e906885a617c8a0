"""Rematerialisation (gradient checkpointing) of blocks, with a policy for what the forward pass keeps.

`nn.remat(Block)` recomputes a block's activations in the backward pass instead of keeping them from the forward
pass. The policy says which intermediate values are kept anyway (`jax.checkpoint_policies`):
  "nothing_saveable"                   keep only the block's input; recompute everything (least memory, one more
                                       forward pass of FLOPs).
  "dots_saveable"                      keep every matrix product's output; recompute the elementwise work
                                       (LayerNorm, GELU, softmax, dropout).
  "dots_with_no_batch_dims_saveable"   keep the products of activations with weights (the Q/K/V/out projections
                                       and the MLP) but recompute the attention products Q K^T and weights x V
                                       (batched over heads): the N^2 terms go, the D^2 ones stay.
"""
from typing import Literal

import flax.linen as nn
import jax

RematPolicy = Literal["nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable"]
REMAT_POLICIES = {
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def maybe_remat(block: type[nn.Module], remat: bool, policy: RematPolicy,
                static_argnums: tuple[int, ...] = (), prevent_cse: bool = True) -> type[nn.Module]:
  """`block` itself when `remat` is False, else `nn.remat(block)` under the named policy.

  static_argnums: positions of `block.__call__`'s Python-valued arguments (self is 0), e.g. a block's
  stochastic-depth rate, which must stay a Python float so that a rate of 0 draws no random numbers.
  prevent_cse: False inside `nn.scan`, whose loop already keeps XLA from merging the recomputation away.
  """
  if policy not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {policy!r}; expected one of {tuple(REMAT_POLICIES)}")
  if not remat:
    return block
  return nn.remat(block, policy=REMAT_POLICIES[policy], static_argnums=static_argnums, prevent_cse=prevent_cse)
